"""Block loader: reads only a block's K utterances (random access through feats.scp), normalizes
them, cuts segments for batches, and prefetches the next block in a background thread.

Memory is bounded by two blocks (K utterances each), never by the corpus: sequences of the last
loaded block are reused, not read again (flat sampling reads each utterance once). Broken
utterances (unreadable, NaN/inf, wrong dimension) are dropped from the block with a logged warning
and counted; when the fraction of broken utterances seen exceeds ``max_bad`` the loader raises
DataError. A frame count that disagrees with utt2num_frames is an inconsistent data dir: DataError.
"""
import concurrent.futures
import logging

import numpy as np
import torch

from fhvae.data.sampler import Block
from fhvae.errors import DataError
from fhvae.io.ark import MatrixReader

log = logging.getLogger(__name__)


class BlockData:
    """A loaded block: normalized features of its sequences and the segment order.

    feats: list of K float32 arrays (L_k, D); block: the (compacted) Block.
    """

    def __init__(self, block, feats):
        self.block = block
        self.feats = feats

    def segments(self, local_seq, starts, seg_len):
        """Stack segments -> float32 tensor (B, seg_len, D)."""
        return torch.from_numpy(np.stack([self.feats[k][s:s + seg_len] for k, s in zip(local_seq, starts)]))

    def batch(self, j, batch_size, seg_len):
        """Batch j -> (x (B, seg_len, D) float32 tensor, local sequence indices (B,) int64 tensor)."""
        local_seq, starts = self.block.batch(j, batch_size)
        return self.segments(local_seq, starts, seg_len), torch.from_numpy(local_seq)


class UttReader:
    """Reads utterance i of ``index`` (UttIndex), checks it and normalizes it with ``stats``.

    Broken utterances (unreadable, wrong dim, NaN/inf) give None and a logged warning, once; they are
    recorded in ``bad`` (index -> reason). ``check_bad()`` raises DataError when more than ``max_bad``
    (a fraction) of the utterances read so far are broken.
    """

    def __init__(self, index, stats, feat_dim, max_bad=0.05):
        self.index, self.stats, self.feat_dim, self.max_bad = index, stats, feat_dim, max_bad
        self.reader = MatrixReader()
        self.bad = {}
        self.seen = set()

    def load(self, i):
        """Normalized (L, D) float32 features of utterance i, or None if it is broken."""
        if i in self.bad:
            return None
        ark, off, rows = self.index.entry(i)
        name = self.index.name(i)
        try:
            x = self.reader.read(ark, off, f"{self.index.source}/feats.scp (utt {name})", rows)
            if x.ndim != 2 or x.shape[1] != self.feat_dim:
                raise DataError(f"utterance '{name}' has shape {x.shape}, expected (T, {self.feat_dim}) "
                                f"({ark}:{off})")
            if not np.isfinite(x).all():
                raise DataError(f"utterance '{name}' has NaN/inf values ({ark}:{off})")
        except DataError as e:
            self.bad[i] = str(e)
            log.warning("skipping broken utterance: %s", e)
            return None
        if len(x) != self.index.nframes[i]:   # not a broken utterance: an inconsistent data dir
            src = self.index.source
            raise DataError(f"{self.index.num_frames_where(i)}: utterance '{name}' has {self.index.nframes[i]} "
                            f"frames there but {len(x)} in {src}/feats.scp; recompute it: "
                            f"feat-to-len scp:{src}/feats.scp ark,t:{src}/utt2num_frames")
        self.seen.add(i)
        return self.stats.normalize(x)

    def check_bad(self):
        n_bad, n_seen = len(self.bad), len(self.bad) + len(self.seen)
        if n_bad and n_bad > self.max_bad * max(n_seen, 1):
            first = next(iter(self.bad.values()))
            raise DataError(f"{n_bad} of {n_seen} utterances read so far are broken (more than "
                            f"data.max_bad_utts={self.max_bad}); first: {first}")

    def close(self):
        self.reader.close()


class BlockLoader:
    """Loads the blocks of ``sampler`` (hierarchical or flat) through ``utts`` (UttReader).

    ``get(b)`` returns BlockData of block b; with ``prefetch`` it starts loading block b+1 in a
    background thread as soon as block b is returned, so a block change costs (almost) nothing.
    Sequences of the previously loaded block are reused, not read again: with the flat sampler
    (every block holds all M sequences) nothing is read after the first block. Memory: at most
    two blocks (the one in use and the one loading).
    """

    def __init__(self, utts, sampler, prefetch=True):
        self.utts, self.sampler = utts, sampler
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
        self._pending = {}
        self._last = {}   # global sequence index -> normalized features, of the last loaded block

    def _load(self, b):
        block = self.sampler.block(b)
        last = self._last
        feats = [last[i] if i in last else self.utts.load(i) for i in block.seqs.tolist()]
        self.utts.check_bad()
        ok = np.array([f is not None for f in feats])
        if not ok.any():
            raise DataError(f"block {b}: every sampled utterance is broken")
        if not ok.all():
            block = drop_sequences(block, ok)
            feats = [f for f in feats if f is not None]
        self._last = dict(zip(block.seqs.tolist(), feats))
        return BlockData(block, feats)

    def get(self, b):
        """BlockData of block b (waits for the prefetch if one is running)."""
        fut = self._pending.pop(b, None)
        stale = list(self._pending.values())   # e.g. after a resume: drop, and wait so that only
        self._pending.clear()                  # one thread ever reads through self.utts
        for f in stale:
            f.cancel()
        concurrent.futures.wait(stale)
        data = fut.result() if fut is not None else self._load(b)
        if self._pool is not None:
            self._pending[b + 1] = self._pool.submit(self._load, b + 1)
        return data

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._last = {}


def drop_sequences(block, keep):
    """Block without the sequences where ``keep`` (K,) is False; local indices renumbered."""
    new_id = np.cumsum(keep) - 1
    seg_keep = keep[block.seg_seq]
    return Block(block.number, block.seqs[keep], new_id[block.seg_seq[seg_keep]],
                 block.seg_start[seg_keep], block.n_segs[keep])
