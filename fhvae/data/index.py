"""Compact per-utterance index of a feature set: numpy arrays, not a Python object per utterance.

For M utterances it holds: names as one bytes blob + int64 offsets, the ark file id (int32, into
a short list of ark paths), the byte offset of the matrix in its ark (int64, -1 for a whole-file
entry), the Kaldi row range of the entry (first row and row count, int32; count -1: all rows)
and the frame count (int32): about 40 bytes + the name per utterance, so 10 million utterances
index in a few hundred MB. feats.scp is parsed by ``fhvae.io.ark.scp_entries`` (the one scp
grammar, shared with FeatReader).
"""
import array
import logging
import os

import numpy as np

from fhvae.errors import DataError
from fhvae.io.ark import scp_entries

log = logging.getLogger(__name__)


class UttIndex:
    """Utterances of one data dir, in feats.scp order (sorted by key).

    Attributes: ``nframes`` (M,) int32, ``ark_id`` (M,) int32, ``offset`` (M,) int64 (-1: whole
    file), ``row_start``/``row_count`` (M,) int32 (count -1: all rows), ``ark_paths`` list[str];
    ``name(i)`` gives the key of utterance i, ``entry(i)`` its entry for MatrixReader.read.
    """

    def __init__(self, names_blob, name_offsets, nframes, ark_id, offset, row_start, row_count, ark_paths,
                 source=""):
        self._blob = names_blob
        self._name_off = name_offsets
        self.nframes = nframes
        self.ark_id = ark_id
        self.offset = offset
        self.row_start = row_start
        self.row_count = row_count
        self.ark_paths = ark_paths
        self.source = source

    def __len__(self):
        return len(self.nframes)

    def name(self, i):
        return self._blob[self._name_off[i]:self._name_off[i + 1]].decode("utf-8")

    def entry(self, i):
        """(path, byte offset or None, rows slice or None) of utterance i, as ``ark.parse_entry``."""
        off, first, count = int(self.offset[i]), int(self.row_start[i]), int(self.row_count[i])
        return (self.ark_paths[self.ark_id[i]], None if off < 0 else off,
                None if count < 0 else slice(first, first + count))

    def subset(self, keep):
        """A new index with the utterances where boolean mask/index array ``keep`` selects."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        names = [self._blob[self._name_off[i]:self._name_off[i + 1]] for i in idx]
        off = np.zeros(len(idx) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(n) for n in names])
        return UttIndex(b"".join(names), off, self.nframes[idx], self.ark_id[idx], self.offset[idx],
                        self.row_start[idx], self.row_count[idx], self.ark_paths, self.source)

    @classmethod
    def from_data_dir(cls, data_dir):
        """Read ``feats.scp`` and ``utt2num_frames`` of a Kaldi data dir, streaming line by line."""
        scp = os.path.join(data_dir, "feats.scp")
        n2f = os.path.join(data_dir, "utt2num_frames")
        if not os.path.isfile(scp):
            raise DataError(f"{scp}: not found (run the fbank stage, or point at a data dir with features)")
        if not os.path.isfile(n2f):
            raise DataError(f"{n2f}: not found (written by fhvae-compute-fbank; for Kaldi features run "
                            f"'feat-to-len scp:{scp} ark,t:{n2f}')")
        # array.array, not lists: 8 bytes per entry while parsing, not a Python int object each
        blob, name_off, arks = bytearray(), array.array("q", [0]), {}
        ark_ids, offsets, row_start, row_count = array.array("i"), array.array("q"), array.array("i"), array.array("i")
        for _, key, (path, off, rows) in scp_entries(scp):
            ark_ids.append(arks.setdefault(path, len(arks)))
            offsets.append(-1 if off is None else off)
            row_start.append(0 if rows is None else rows.start)
            row_count.append(-1 if rows is None else rows.stop - rows.start)
            blob += key.encode("utf-8")
            name_off.append(len(blob))
        if not ark_ids:
            raise DataError(f"{scp}: empty")
        # numpy views of the arrays' buffers: no copies (peak memory = the index itself)
        index = cls(blob, np.frombuffer(name_off, dtype=np.int64), np.zeros(len(ark_ids), np.int32),
                    np.frombuffer(ark_ids, dtype=np.int32), np.frombuffer(offsets, dtype=np.int64),
                    np.frombuffer(row_start, dtype=np.int32), np.frombuffer(row_count, dtype=np.int32),
                    list(arks), source=data_dir)
        index._read_num_frames(n2f)
        return index

    def num_frames_where(self, i):
        """``<source>/utt2num_frames:<line>`` of utterance i (scans the file: for error messages)."""
        path = os.path.join(self.source, "utt2num_frames")
        key = self._blob[self._name_off[i]:self._name_off[i + 1]]
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if raw.split(None, 1)[:1] == [key]:
                    return f"{path}:{lineno}"
        return path

    def _read_num_frames(self, path):
        seen = np.zeros(len(self), dtype=bool)
        i, m, blob, off = 0, len(self), self._blob, self._name_off
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                parts = raw.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    raise DataError(f"{path}:{lineno}: expected '<utt> <num-frames>'")
                key = parts[0]   # UTF-8 bytes: their order is the code point order of the keys
                # both files are sorted: walk forward to the matching utterance
                while i < m and blob[off[i]:off[i + 1]] < key:
                    i += 1
                if i >= m or blob[off[i]:off[i + 1]] != key:
                    continue  # an utterance without features (e.g. skipped as too short)
                self.nframes[i] = int(parts[1])
                seen[i] = True
        if not seen.all():
            first = self.name(int(np.flatnonzero(~seen)[0]))
            raise DataError(f"{path}: {int((~seen).sum())} utterances of feats.scp missing, e.g. '{first}'")
