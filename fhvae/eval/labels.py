"""Labels of segments for the disentanglement checks (t-SNE, probes).

Factors and where they come from (files of a Kaldi data dir):

    speaker       utt2spk                     sequence level
    condition     utt2cond (clean/noise/...)  sequence level
    gender        utt2gender or spk2gender    sequence level
    phone         phones.ctm                  segment level (frame-aligned phones)
    phone_class   phones.ctm + a phone-class file (``<phone> <class>``, e.g. SON/OBS/SIL)

A factor whose file is missing is skipped with a log line. Segments are ``seg_len``-frame windows;
a segment starting at frame ``s`` is labelled at its centre frame ``s + seg_len // 2 - 1``, the frame
whose export window (9 frames left, 10 right for 20-frame segments) is exactly that segment.

Phones are aligned to frames by their centre: frame t spans [t * shift, t * shift + win) seconds
(shift 10 ms, win 25 ms), so its centre is t * shift + win / 2; it takes the phone whose CTM
interval [start, start + dur) contains that centre (None if no phone does).
"""
import logging
import math
import os

import numpy as np

from fhvae.datadir import load_data_dir
from fhvae.errors import DataError
from fhvae.io.tables import read_table

log = logging.getLogger(__name__)

FACTORS = ("speaker", "condition", "gender", "phone_class", "phone")
FRAME_WIN = 0.025  # seconds covered by one frame (25 ms window)


def read_phone_classes(path):
    """``<phone> <class>`` lines (any order) -> {phone: class}; DataError naming file:line if bad."""
    return {p: c[0] for p, c in read_table(path, min_fields=2, max_fields=2, check_sorted=False).items()}


def read_ctm(path):
    """Kaldi CTM ``<utt> <channel> <start_s> <dur_s> <phone> [<conf>]`` (any order) ->
    {utt: [(start_s, end_s, phone), ...] sorted by start}. DataError naming file:line if bad."""
    out = {}
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (5, 6):
                raise DataError(f"{path}:{lineno}: expected '<utt> <channel> <start> <dur> <phone> [<conf>]', "
                                f"got {line.strip()!r}")
            try:
                start, dur = float(fields[2]), float(fields[3])
            except ValueError:
                raise DataError(f"{path}:{lineno}: start and duration must be numbers (seconds), "
                                f"got {fields[2]!r} {fields[3]!r}") from None
            if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
                raise DataError(f"{path}:{lineno}: need start >= 0 and duration >= 0, got {start} {dur}")
            out.setdefault(fields[0], []).append((start, start + dur, fields[4]))
    for v in out.values():
        v.sort()
    return out


def frame_labels(intervals, num_frames, shift=0.01, win=FRAME_WIN):
    """Phone of each frame: intervals [(start_s, end_s, phone)] -> object array (num_frames,),
    None where no interval contains the frame centre t * shift + win / 2."""
    labels = np.full(num_frames, None, dtype=object)
    eps = 1e-6  # times are printed with a few decimals: 0.0875 / 0.01 must not round down
    for start, end, phone in intervals:
        lo = max(0, math.ceil((start - win / 2) / shift - eps))
        hi = min(num_frames, math.ceil((end - win / 2) / shift - eps))
        if hi > lo:
            labels[lo:hi] = phone
    return labels


def centre_frame(start, seg_len):
    """The frame a segment starting at ``start`` (frames) is labelled and exported at."""
    return start + seg_len // 2 - 1


def sample_segments(utt2frames, seg_len, max_segments, seed=0):
    """Up to ``max_segments`` non-overlapping segments drawn uniformly without replacement from all
    utterances of at least ``seg_len`` frames (starts 0, seg_len, 2 * seg_len, ...).

    utt2frames: {utt: T}. Returns [(utt, start_frame)] in utterance (C) order, then start order.
    """
    utts = [u for u in sorted(utt2frames, key=lambda u: u.encode()) if utt2frames[u] >= seg_len]
    counts = np.array([(utt2frames[u] - seg_len) // seg_len + 1 for u in utts], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise DataError(f"no utterance has at least {seg_len} frames: nothing to sample segments from")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(max_segments, total), replace=False))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    which = np.searchsorted(first, pick, side="right") - 1
    return [(utts[i], int(k - first[i]) * seg_len) for i, k in zip(which, pick)]


class SetLabels:
    """The labels a data dir provides (see the module doc), ready to label segments.

    ``factors``: the available factor names (in FACTORS order); missing files are logged once.
    """

    def __init__(self, data_dir, phone_classes=None):
        dd = load_data_dir(data_dir)
        self.data_dir = data_dir
        self.frame_shift = dd.frame_shift or 0.01
        self.utt_labels = {"speaker": dd.utt2spk}
        f = lambda name: os.path.join(data_dir, name)  # noqa: E731
        if dd.utt2cond is not None:
            self.utt_labels["condition"] = dd.utt2cond
        else:
            log.info("%s not found: skipping the condition factor", f("utt2cond"))
        if dd.utt2gender is not None:
            self.utt_labels["gender"] = dd.utt2gender
        elif dd.spk2gender is not None:
            self.utt_labels["gender"] = {u: dd.spk2gender[s] for u, s in dd.utt2spk.items() if s in dd.spk2gender}
        else:
            log.info("%s and %s not found: skipping the gender factor", f("utt2gender"), f("spk2gender"))
        self.ctm, self.phone2class = None, None
        if os.path.isfile(f("phones.ctm")):
            self.ctm = read_ctm(f("phones.ctm"))
            if phone_classes is None:
                log.info("no phone-class file given: skipping the phone_class factor")
            elif not os.path.isfile(phone_classes):
                log.info("%s not found: skipping the phone_class factor", phone_classes)
            else:
                self.phone2class = read_phone_classes(phone_classes)
                unknown = sorted({p for v in self.ctm.values() for _, _, p in v} - set(self.phone2class))
                if unknown:
                    log.warning("%s: %d phone(s) of %s have no class (e.g. %r); their segments get no "
                                "phone_class label", phone_classes, len(unknown), f("phones.ctm"), unknown[0])
        else:
            log.info("%s not found: skipping the phone and phone_class factors", f("phones.ctm"))
        self.factors = [k for k in FACTORS if k in self.utt_labels
                        or (k == "phone" and self.ctm is not None)
                        or (k == "phone_class" and self.phone2class is not None)]

    def segment_labels(self, segments, seg_len):
        """segments [(utt, start_frame)] -> {factor: object array (N,)}, None where unlabelled."""
        out = {}
        for k, table in self.utt_labels.items():
            out[k] = np.array([table.get(u) for u, _ in segments], dtype=object)
        if self.ctm is not None:
            centres = np.array([centre_frame(s, seg_len) for _, s in segments], dtype=np.int64)
            need = {}
            for (u, _), t in zip(segments, centres):
                need[u] = max(need.get(u, 0), t + 1)
            frames = {u: frame_labels(self.ctm.get(u, ()), n, self.frame_shift) for u, n in need.items()}
            phones = np.array([frames[u][t] for (u, _), t in zip(segments, centres)], dtype=object)
            out["phone"] = phones
            if self.phone2class is not None:
                out["phone_class"] = np.array([self.phone2class.get(p) for p in phones], dtype=object)
        return {k: out[k] for k in self.factors}
