"""Samplers: which sequences form a block and in which order their segments are visited.

Hierarchical sampling (Algorithm 1 of Hsu & Glass 2018): block b holds K sequences drawn without
replacement from the M training sequences; its segments (N_i = floor((L_i - seg_len) / shift) + 1
random-start segments per sequence) are visited in ``passes`` shuffled passes of batches.
Flat sampling (the 2017 algorithm) is the special case of one block holding all M sequences
forever, where each pass draws fresh random starts.

Every block and pass is a pure function of (seed, block number, pass number): resuming a run
needs only the block number and the batch position, never a saved random state.
"""
from dataclasses import dataclass

import numpy as np


def num_segments(lengths, seg_len, shift):
    """N_i = floor((L_i - seg_len) / shift) + 1 for L_i >= seg_len, else 0. lengths: (M,) frames."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.where(lengths >= seg_len, (lengths - seg_len) // shift + 1, 0)


@dataclass
class Block:
    """K sequences and a visiting order of their segments.

    seqs:   (K,) int64 indices into the training index (sorted ascending).
    seg_seq:   (S,) int64 local sequence index (0..K-1) of each segment, in visiting order.
    seg_start: (S,) int64 start frame of each segment.
    n_segs: (K,) int64 N_i of each sequence (used for log p(mu2) / N_i and the MAP cache reset).
    """
    number: int
    seqs: np.ndarray
    seg_seq: np.ndarray
    seg_start: np.ndarray
    n_segs: np.ndarray

    def batches(self, batch_size):
        """Number of batches in the block (the last one may be smaller)."""
        return -(-len(self.seg_seq) // batch_size)

    def batch(self, j, batch_size):
        """(local sequence indices, start frames) of batch j."""
        sl = slice(j * batch_size, (j + 1) * batch_size)
        return self.seg_seq[sl], self.seg_start[sl]


def _rng(seed, *keys):
    return np.random.default_rng([int(seed)] + [int(k) for k in keys])


def segment_order(lengths, seg_len, shift, passes, seed, block_number):
    """Random-start segments of sequences with ``lengths`` (K,), shuffled, for ``passes`` passes.

    Returns (seg_seq, seg_start, n_segs). Each pass draws new random starts in [0, L_i - seg_len].
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = num_segments(lengths, seg_len, shift)
    seg_seq, seg_start = [], []
    for p in range(passes):
        rng = _rng(seed, 2, block_number, p)
        seq = np.repeat(np.arange(len(lengths)), n)
        start = np.floor(rng.random(len(seq)) * (lengths[seq] - seg_len + 1)).astype(np.int64)
        perm = rng.permutation(len(seq))
        seg_seq.append(seq[perm])
        seg_start.append(start[perm])
    return np.concatenate(seg_seq), np.concatenate(seg_start), n


class HierarchicalSampler:
    """Block b = K sequences sampled without replacement (K capped at M), ``passes`` passes each."""

    def __init__(self, lengths, k, seg_len, shift, passes=1, seed=1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.k = min(int(k), len(self.lengths))
        self.seg_len, self.shift, self.passes, self.seed = seg_len, shift, passes, seed

    def block(self, b):
        seqs = np.sort(_rng(self.seed, 1, b).choice(len(self.lengths), self.k, replace=False))
        seg_seq, seg_start, n = segment_order(self.lengths[seqs], self.seg_len, self.shift,
                                              self.passes, self.seed, b)
        return Block(b, seqs, seg_seq, seg_start, n)


class FlatSampler:
    """The 2017 algorithm: every 'block' holds all M sequences; block b is pass b over all segments."""

    def __init__(self, lengths, seg_len, shift, passes=1, seed=1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.k = len(self.lengths)
        self.seg_len, self.shift, self.passes, self.seed = seg_len, shift, passes, seed

    def block(self, b):
        seqs = np.arange(len(self.lengths))
        seg_seq, seg_start, n = segment_order(self.lengths, self.seg_len, self.shift,
                                              self.passes, self.seed, b)
        return Block(b, seqs, seg_seq, seg_start, n)


def fixed_segments(length, seg_len, shift):
    """Start frames of the non-overlapping (shift = seg_len) or strided segments used for dev and
    s-vectors: 0, shift, 2*shift, ... with start + seg_len <= length; [0] if length < seg_len
    (the caller pads)."""
    if length < seg_len:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, length - seg_len + 1, shift, dtype=np.int64)
