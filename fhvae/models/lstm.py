"""The model's one LSTM seam: ``nn.LSTM`` (plain: GPUs, and CPUs with ``plain=True``) or the fast CPU
implementation of the same LSTMs (fhvae/cpu/lstm.py; the same parameters, outputs and gradients to
float32 rounding). Everything else in the model is plain PyTorch."""
import torch

from fhvae.cpu import lstm as cpu_lstm
from fhvae.cpu import mkl


def _fast(x, plain):
    if x.device.type != "cpu":
        return False
    mkl.warm_up_vml()   # before the first multi-threaded exp/log/sqrt (fhvae/cpu/mkl.py); once per process
    return not plain


def last_states(lstm, x, const=None, plain=False):
    """Last hidden states of every layer (B, L*H), layer 0 first, of ``lstm`` (nn.LSTM, batch_first)
    over x (B, T, F), with const (B, C) (or None) appended to every step's input."""
    if _fast(x, plain):
        return cpu_lstm.last_states(lstm, x, const)
    if const is not None:
        x = torch.cat([x, const[:, None].expand(-1, x.shape[1], -1)], dim=2)
    _, (h_n, _) = lstm(x)
    return h_n.transpose(0, 1).reshape(h_n.shape[1], -1)   # (L, B, H) -> (B, L*H)


def const_input(lstm, z, steps, heads, plain=False):
    """``lstm`` fed z (B, I) at each of ``steps`` steps: [head(h) (B, T, O) for head in heads] (affine
    heads on the last layer's outputs h) and h as (B, H, T)."""
    if _fast(z, plain):
        return cpu_lstm.const_input(lstm, z, steps, heads)
    out, _ = lstm(z[:, None].expand(-1, steps, -1))
    return [head(out) for head in heads], out.transpose(1, 2)
