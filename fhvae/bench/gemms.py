"""The matrix products of a training step: model FLOPs, the sgemm rate, and each product alone.

``record_gemms`` records a step's products at the torch dispatch level, ``gemm_replay`` runs them
again on random operands of the same shapes, strides and dtypes; ``fhvae-bench gemms`` groups them
by shape (BENCHMARKS.md, section 3f).
"""
import torch

from fhvae.bench.common import device_name, time_interleaved
from fhvae.bench.train_step import SEG_LEN, Step
from fhvae.config import ModelConfig


def lstm_flops(cfg, batch, T=SEG_LEN):
    """Multiply-add FLOPs (x2) of one forward+backward step of the paper model on T-frame segments
    (backward = 2x forward)."""
    F = cfg.feat_dim

    def lstm(inp, h):
        return sum(2 * 4 * h * ((inp if layer == 0 else h) + h) for layer in range(cfg.num_layers)) * T

    fwd = (lstm(F, cfg.z2_hidden) + lstm(F + cfg.z2_dim, cfg.z1_hidden) + lstm(cfg.z1_dim + cfg.z2_dim, cfg.dec_hidden)
           + 2 * 2 * cfg.dec_hidden * F * T)
    return 3 * fwd * batch


def sgemm_gflops(n=2048, iters=5, device="cpu"):
    """Measured float32 matrix-product rate (GFLOP/s), median over ``iters``."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = time_interleaved([lambda: a @ b], iters, 2, device)[0]
    return 2 * n ** 3 / t / 1e9


def _gemm_flops(func, shapes):
    """Multiply-add FLOPs (x2) of one aten mm / addmm / bmm / baddbmm call, from its operand shapes."""
    name = func.__name__.split(".")[0]
    if name in ("mm", "addmm", "addmm_"):
        (m, k), (_, n) = shapes[-2], shapes[-1]
        return 2 * m * k * n
    (b, m, k), (_, _, n) = shapes[-2], shapes[-1]
    return 2 * b * m * k * n


def record_gemms(step):
    """The matrix products of one call of ``step`` (torch dispatch level: aten mm, addmm, bmm,
    baddbmm), as [(aten op, [(shape, stride, dtype) of each tensor operand])]. Products inside the C
    kernels (the per-step recurrent sgemm) are not seen: record a step with fused=False for all."""
    from torch.utils._python_dispatch import TorchDispatchMode
    names = ("mm", "addmm", "addmm_", "bmm", "baddbmm")

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] in names:
                self.calls.append((func, [(tuple(a.shape), a.stride(), a.dtype) for a in args
                                          if isinstance(a, torch.Tensor)]))
            return func(*args, **(kwargs or {}))

    rec = Recorder()
    with rec:
        step()
    return rec.calls


def gemm_replay(calls, device):
    """(function running every recorded product again, on random operands of the same shapes,
    strides and dtypes, without out= buffers; their FLOPs)."""
    ops = []
    for func, operands in calls:
        ts = [torch.empty_strided(shape, stride, dtype=dtype, device=device).normal_()
              for shape, stride, dtype in operands]
        op = getattr(torch, func.__name__.split(".")[0].rstrip("_"))
        ops.append((op, ts))
    flops = sum(_gemm_flops(func, [op[0] for op in operands]) for func, operands in calls)

    def replay():
        for op, ts in ops:
            op(*ts)
    return replay, flops


def bench_gemms(batch=256, iters=9, warmup=2, device="cpu", cfg=None):
    """The matrix products of one training step (PyTorch ops path), grouped by operand shapes
    (``a_shape @ b_shape``), each group replayed alone: calls, ms per step, GFLOP/s, share of the
    products' time; and the 2048^3 sgemm rate measured in the same run."""
    device = torch.device(device)
    cfg = cfg or ModelConfig()
    step = Step(cfg, 2000, batch, device, fused=False)
    step()
    groups = {}
    for func, operands in record_gemms(step):
        groups.setdefault(" @ ".join("x".join(map(str, op[0])) for op in operands[-2:]), []).append(
            (func, operands))
    replays = [gemm_replay(calls, device) for calls in groups.values()]
    t = time_interleaved([r for r, _ in replays], iters, warmup, device)
    total = sum(t)
    order = sorted(range(len(t)), key=lambda i: -t[i])
    names = list(groups)
    return {"device": device_name(device), "batch": batch, "threads": torch.get_num_threads(),
            "hidden": (cfg.z2_hidden, cfg.z1_hidden, cfg.dec_hidden),
            "shapes": [names[i] for i in order], "calls": [len(groups[names[i]]) for i in order],
            "ms": [round(1000 * t[i], 2) for i in order],
            "gflops": [round(replays[i][1] / t[i] / 1e9, 1) for i in order],
            "share": [round(t[i] / total, 3) for i in order],
            "total_ms": round(1000 * total, 2),
            "total_gflops": round(sum(f for _, f in replays) / total / 1e9, 1),
            "sgemm_gflops": round(sgemm_gflops(device=device), 1)}
