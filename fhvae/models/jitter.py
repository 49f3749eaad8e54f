"""Time jitter (Chorowski et al. 2019) for the segment latent: ``train.z1_jitter = p``.

During training the z1 encoder reads, with probability p, a neighbouring segment (``train.z1_jitter_shift``
frames left or right, clipped to the utterance) instead of the segment itself; z2 and the decoder's
target stay on the segment. A training-only variant: the model and its export are unchanged.
"""
import numpy as np

from fhvae.models.variant import Variant


class TimeJitter(Variant):
    name = "jitter"

    def __init__(self, p, shift):
        super().__init__()
        self.p, self.shift = p, shift

    @classmethod
    def enabled(cls, cfg):
        return cfg.z1_jitter > 0

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.z1_jitter, cfg.z1_jitter_shift)

    def z1_input(self, data, seq, start, seg_len, key):
        """The jittered segments (B, seg_len, F) of batch (seq, start) of BlockData ``data``, drawn
        from a generator seeded by key = (seed, rank, step)."""
        rng = np.random.default_rng((*key, 7))
        lengths = np.array([len(data.feats[k]) for k in seq])
        return data.segments(seq, jitter_starts(start, lengths, seg_len, self.p, self.shift, rng), seg_len)


def jitter_starts(starts, lengths, seg_len, p, shift, rng):
    """Each start (B,) moves to a neighbour, ``shift`` frames left or right (equally likely), with
    probability p, clipped to [0, L - seg_len] of its sequence (lengths (B,) frames). rng: numpy
    Generator. Returns new starts (B,) int64."""
    starts = np.asarray(starts, dtype=np.int64)
    move = rng.random(len(starts)) < p
    side = np.where(rng.random(len(starts)) < 0.5, -1, 1)
    return np.clip(starts + move * side * shift, 0, np.asarray(lengths) - seg_len)
