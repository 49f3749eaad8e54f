"""The CTC model: conv subsampling, bidirectional GRUs over padded batches, a linear output.

Shapes: features (B, T, D) with lengths (B,) -> logits (B, T', C), T' = ceil(T / subsample),
C = CTC labels (blank included). Padding never reaches a sequence's frames (masked batch norm,
each GRU direction over the sequence alone), so a batch gives each utterance its own outputs.
"""
import math

import torch
import torch.nn as nn

from fhvae.cpu import mkl

def _frame_mask(h, lengths):
    """(B, 1, T) mask of h (B, D, T) in h's dtype: 1 at the frames t < lengths[b] of sequence b, else 0."""
    keep = torch.arange(h.shape[2], device=h.device)[None, :] < lengths.to(h.device)[:, None]
    return keep.to(h.dtype)[:, None, :]


def _zero_past(h, lengths):
    """h (B, D, T) with the frames t >= lengths[b] of each sequence b set to 0."""
    return h * _frame_mask(h, lengths)


def reverse_index(lengths, T):
    """(B, T) time index that reverses each sequence within its length (frames past it stay put):
    x.gather(1, idx) reverses a padded batch, and the same gather undoes it."""
    t = torch.arange(T, device=lengths.device)[None, :]
    n = lengths[:, None].to(t.dtype)
    return torch.where(t < n, n - 1 - t, t)


class BiGRU(nn.Module):
    """Bidirectional GRU layer over a padded batch: (B, T, D) with lengths (B,) -> (B, T, 2H).

    Each direction is a unidirectional ``nn.GRU`` over the padded tensor (training epochs 1.24-1.31x
    as fast on CPU as with one bidirectional GRU over a packed sequence: egs/mini/v1/EXPERIMENTS.md,
    "Downstream ASR"); the backward direction reads every sequence reversed within its own length,
    so padding only ever follows a sequence's frames and never reaches them (the outputs at its
    frames are those of the sequence alone). Outputs past a sequence's length are undefined."""

    def __init__(self, in_dim, hidden):
        super().__init__()
        self.fwd = nn.GRU(in_dim, hidden, batch_first=True)
        self.bwd = nn.GRU(in_dim, hidden, batch_first=True)

    def forward(self, x, rev):
        """x (B, T, D); rev (B, T, 1): reverse_index(lengths, T)[:, :, None]."""
        f, _ = self.fwd(x)
        r, _ = self.bwd(x.gather(1, rev.expand(-1, -1, x.shape[2])))
        return torch.cat([f, r.gather(1, rev.expand(-1, -1, r.shape[2]))], dim=2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, C, T) whose training statistics (batch mean and variance, and so the running
    estimates) come from each sequence's frames t < lengths[b] only, not from the batch's padding.
    Evaluation mode is nn.BatchNorm1d's (running estimates); the parameters and buffers are its too."""

    def forward(self, h, lengths):
        if not self.training:
            return super().forward(h)
        keep = _frame_mask(h, lengths)
        n = keep.sum()
        mean = (h * keep).sum((0, 2)) / n
        var = (((h - mean[None, :, None]) * keep) ** 2).sum((0, 2)) / n
        with torch.no_grad():   # unbiased variance in the running estimate, as nn.BatchNorm1d
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1).clamp(min=1), self.momentum)
        h = (h - mean[None, :, None]) * torch.rsqrt(var + self.eps)[None, :, None]
        return h * self.weight[None, :, None] + self.bias[None, :, None]


class CtcModel(nn.Module):
    """(B, T, D) features -> (B, T', C) CTC logits, T' = ceil(T / subsample), C = n_labels.

    ``log2(subsample)`` stride-2 convolutions (kernel 3, batch norm over the frames, ReLU; one stride-1
    convolution for subsample 1), ``layers`` bidirectional GRU layers of ``hidden`` units per
    direction (dropout between them), a linear output.
    """
    VERSION = "conv-bigru-3"   # in checkpoint fingerprints: a checkpoint of another CtcModel is not resumed

    def __init__(self, in_dim, n_labels, hidden=128, layers=2, subsample=4, dropout=0.2):
        super().__init__()
        mkl.warm_up_vml()   # before the first multi-threaded exp/log/sqrt (fhvae/cpu/mkl.py)
        self.config = dict(in_dim=in_dim, n_labels=n_labels, hidden=hidden, layers=layers,
                           subsample=subsample, dropout=dropout)
        self.n_strided = int(round(math.log2(subsample)))
        convs, d = [], in_dim
        for _ in range(max(1, self.n_strided)):
            convs.append(nn.Sequential(nn.Conv1d(d, hidden, 3, stride=2 if self.n_strided else 1, padding=1),
                                       MaskedBatchNorm1d(hidden), nn.ReLU()))
            d = hidden
        self.conv = nn.ModuleList(convs)
        self.rnn = nn.ModuleList(BiGRU(hidden if i == 0 else 2 * hidden, hidden) for i in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, n_labels)

    def out_lengths(self, lengths):
        """Output frames for input ``lengths`` (tensor of ints)."""
        for _ in range(self.n_strided):
            lengths = (lengths + 1) // 2
        return lengths

    def forward(self, x, lengths):
        """x (B, T, D), lengths (B,) -> logits (B, T', C), out lengths (B,)."""
        h, n = _zero_past(x.transpose(1, 2), lengths), lengths
        for conv, norm, relu in self.conv:   # frames past a sequence's end zeroed: the padding of a sequence alone
            n = (n + 1) // 2 if self.n_strided else n
            h = _zero_past(relu(norm(conv(h), n)), n)
        h, out_len = h.transpose(1, 2), n   # n: self.out_lengths(lengths)
        rev = reverse_index(out_len.to(h.device), h.shape[1])[:, :, None]
        for i, layer in enumerate(self.rnn):
            h = layer(self.drop(h) if i else h, rev)
        return self.out(self.drop(h)), out_len
