"""fhvae/cpu/mkl.py: MKL VML kernels are chosen in one thread before the models compute anything."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fhvae.cpu import mkl
from fhvae.asr.model import CtcModel
from fhvae.config import ModelConfig
from fhvae.models.fhvae import FHVAE


class _Record(TorchDispatchMode):
    """Records (aten op name, dtype, numel) of every op run inside the block."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.is_tensor(out):
            self.calls.append((func.overloadpacket.__name__, out.dtype, out.numel()))
        return out


def test_warm_up_calls_every_vml_op_once_per_precision_on_one_element(monkeypatch):
    monkeypatch.setattr(mkl, "_warm", False)
    with _Record() as rec:
        mkl.warm_up_vml()
    for dtype in (torch.float32, torch.float64):
        done = {name for name, dt, n in rec.calls if dt == dtype and n == 1}
        assert set(mkl.VML_OPS) <= done, set(mkl.VML_OPS) - done
    assert all(n == 1 for _, _, n in rec.calls)   # no call large enough to be split over threads
    with _Record() as again:
        mkl.warm_up_vml()
    assert again.calls == []                      # once per process


def test_models_warm_up_before_computing(monkeypatch):
    """The FHVAE's LSTM seam warms up on its first CPU call (before the first exp of the z2 sample);
    the ASR model when built."""
    fhvae = FHVAE(ModelConfig(feat_dim=8, z1_hidden=8, z2_hidden=8, dec_hidden=8))
    for build in (lambda: fhvae.encode_z2(torch.zeros(2, 5, 8)), lambda: CtcModel(8, 5, hidden=8, layers=1)):
        monkeypatch.setattr(mkl, "_warm", False)
        build()
        assert mkl._warm


def test_first_calls_measures_how_far_a_first_call_is_from_the_second(monkeypatch):
    assert mkl.first_calls(ops=("exp", "sqrt"), threads=1, warm=True) == {"exp": 0, "sqrt": 0}
    exp, calls = torch.exp, []

    def wrong_first(x):   # the first call 3 ulps off, like one thread's chunk in the race
        y = exp(x)
        calls.append(1)
        return (y.view(torch.int32) + 3).view(torch.float32) if len(calls) == 1 else y
    monkeypatch.setattr(torch, "exp", wrong_first)
    assert mkl.first_calls(ops=("exp",), threads=1) == {"exp": 3}
