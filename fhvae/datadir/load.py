"""Kaldi data directory layout and loading: which tables it holds, read into a DataDir.

Per-utterance tables (utt2spk, feats.scp, text, segments, ...) are keyed by utterance id,
spk2utt / spk2gender / cmvn.scp by speaker id, and wav.scp by recording id when a ``segments``
file exists (else by utterance id). The speaker id is a prefix of the utterance id, so sorting by
utterance also groups by speaker. Table format: :mod:`fhvae.io.tables`.
"""
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from fhvae.errors import DataError
from fhvae.io.tables import read_kv, read_table, scan_table, utt2spk_to_spk2utt

# Tables a data dir may hold, by what their keys are. fhvae.datadir.edit keeps them consistent.
UTT_FILES = ("utt2spk", "segments", "feats.scp", "text", "utt2num_frames", "utt2dur",
             "utt2cond", "utt2gender", "utt2lang", "utt2uniq", "vad.scp")
SPK_FILES = ("spk2utt", "spk2gender", "cmvn.scp")
RECO_FILES = ("wav.scp", "reco2file_and_channel", "reco2dur")
COPY_FILES = ("frame_shift",)
# (min_fields, max_fields) per table; others: at least 2 fields.
FIELDS = {
    "utt2spk": (2, 2), "segments": (4, 4), "text": (1, None), "utt2num_frames": (2, 2),
    "utt2dur": (2, 2), "utt2cond": (2, 2), "utt2gender": (2, 2), "utt2lang": (2, 2),
    "utt2uniq": (2, 2), "spk2gender": (2, 2), "reco2dur": (2, 2), "reco2file_and_channel": (3, 3),
}


def fields_of(name):
    """(min_fields, max_fields) of table ``name``; max None: no limit."""
    return FIELDS.get(name, (2, None))


@dataclass
class DataDir:
    """A loaded Kaldi data dir. Optional tables are None when their file is absent.

    segments: utt -> (recording, start_s, end_s), end_s -1 meaning the end of the recording (as
    in Kaldi); utt2num_frames: frames (int); utt2dur: seconds; frame_shift: seconds.
    """
    path: str
    utt2spk: Dict[str, str]
    spk2utt: Dict[str, List[str]]
    wav_scp: Optional[Dict[str, str]] = None
    segments: Optional[Dict[str, Tuple[str, float, float]]] = None
    feats_scp: Optional[Dict[str, str]] = None
    utt2num_frames: Optional[Dict[str, int]] = None
    utt2dur: Optional[Dict[str, float]] = None
    text: Optional[Dict[str, str]] = None
    utt2cond: Optional[Dict[str, str]] = None
    utt2gender: Optional[Dict[str, str]] = None
    spk2gender: Optional[Dict[str, str]] = None
    frame_shift: Optional[float] = None

    @property
    def utts(self) -> List[str]:
        """Utterance ids in C order."""
        return sorted(self.utt2spk)

    @property
    def spks(self) -> List[str]:
        """Speaker ids in C order."""
        return sorted(self.spk2utt)


def _typed(path, name, convert, what, problems=None):
    out = {}
    for lineno, fields, rest in scan_table(path, *fields_of(name), problems=problems):
        try:
            out[fields[0]] = convert(fields[1:])
        except ValueError:
            _report(problems, f"{path}:{lineno}: expected {what}, got {rest!r}")
    return out


def _report(problems, msg):
    """A problem found while reading: raised as DataError, or appended to ``problems`` (a list) when
    the caller collects every problem (validation)."""
    if problems is None:
        raise DataError(msg)
    problems.append(msg)


def _finite(s):
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(s)
    return v


def read_text(path):
    """The whole UTF-8 text of a small file (frame_shift, ...); DataError if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _read_frame_shift(path, problems=None):
    text = read_text(path).split()
    try:
        if len(text) != 1:
            raise ValueError
        return _finite(text[0])
    except ValueError:
        _report(problems, f"{path}:1: expected one number (seconds), got {' '.join(text)!r}")
        return None


def load_data_dir(path, problems=None) -> DataDir:
    """Load a data dir (format checks only; see validate_data_dir for consistency checks).

    spk2utt is generated from utt2spk when the file is absent. ``problems`` (a list): format
    errors are appended to it and the bad lines skipped, instead of raising at the first one
    (a missing or empty utt2spk still raises).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: data directory not found")
    p = lambda name: os.path.join(path, name)  # noqa: E731
    has = lambda name: os.path.exists(p(name))  # noqa: E731
    if not has("utt2spk"):
        raise DataError(f"{p('utt2spk')}: missing (every data dir needs utt2spk)")
    n_problems = len(problems or ())
    utt2spk = read_kv(p("utt2spk"), min_fields=2, max_fields=2, problems=problems)
    if not utt2spk:
        if problems is not None and len(problems) > n_problems:
            raise DataError("\n  ".join([f"{p('utt2spk')}: no usable line:"] + list(problems)[n_problems:]))
        raise DataError(f"{p('utt2spk')}: empty (no utterances)")
    spk2utt = (read_table(p("spk2utt"), min_fields=2, problems=problems) if has("spk2utt")
               else utt2spk_to_spk2utt(utt2spk))
    dd = DataDir(path=path, utt2spk=utt2spk, spk2utt=spk2utt)
    for name, attr in (("wav.scp", "wav_scp"), ("feats.scp", "feats_scp"), ("text", "text"),
                       ("utt2cond", "utt2cond"), ("utt2gender", "utt2gender"), ("spk2gender", "spk2gender")):
        if has(name):
            setattr(dd, attr, read_kv(p(name), min_fields=fields_of(name)[0], max_fields=fields_of(name)[1],
                                      problems=problems))
    if has("segments"):
        dd.segments = _typed(p("segments"), "segments", lambda f: (f[0], _finite(f[1]), _finite(f[2])),
                             "'<utt> <recording> <start-seconds> <end-seconds>'", problems)
    if has("utt2num_frames"):
        dd.utt2num_frames = _typed(p("utt2num_frames"), "utt2num_frames", lambda f: int(f[0]),
                                   "an integer frame count", problems)
    if has("utt2dur"):
        dd.utt2dur = _typed(p("utt2dur"), "utt2dur", lambda f: _finite(f[0]), "a duration in seconds",
                            problems)
    if has("frame_shift"):
        dd.frame_shift = _read_frame_shift(p("frame_shift"), problems)
    return dd
