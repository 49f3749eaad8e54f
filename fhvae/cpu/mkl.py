"""Work-around for the MKL in PyTorch's x86 wheels: resolve its vector math (VML) kernels in one thread,
before any multi-threaded use.

PyTorch computes float unary ops (exp, log, sqrt, ...) of contiguous CPU tensors with MKL VML, one call
per intra-op thread on its chunk of 2048+ elements. oneMKL 2024.2 (torch 2.13's wheels) picks each VML
function's kernel lazily, on the function's first call; when that first call runs on several threads at
once, one thread can run a low-accuracy kernel for its whole chunk (errors of ~1000 ulp), once per
process (pytorch/pytorch#188792, open). Here it made ~1 in 10 mini-recipe trainings take a different
first step: one chunk of the first torch.exp of the z2 sample (EXPERIMENTS.md, "Training
repeatability"); ``fhvae-bench vml`` counts such first calls in fresh processes.

``warm_up_vml()`` calls every VML-backed op once on a one-element tensor of each precision (no
parallel split below 2048 elements), so the kernels are chosen before the first split call. Every
FHVAE and ASR model calls it when built; it runs once per process (~5 ms here).
"""
import sys

import torch

# torch ops that aten/src/ATen/cpu/vml.h sends to MKL VML (recent and older versions of the list)
VML_OPS = ("abs", "acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "expm1", "log", "log10",
           "log1p", "log2", "sin", "sqrt", "tan", "tanh", "trunc")
_warm = False


def warm_up_vml():
    """Call each VML op once, single-threaded, in float32 and float64 (first call in the process only)."""
    global _warm
    if _warm:
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype, device="cpu")   # inside every op's domain
        for name in VML_OPS:
            getattr(torch, name)(x)
    _warm = True


def first_calls(ops=("exp", "log", "sqrt"), threads=2, warm=False, size=4096):
    """In a fresh process: for each op, its first and second call on the same (size,) float32 input with
    ``threads`` intra-op threads. Returns {op: largest difference between the two calls, in float32
    ulps} (0: the first call was right)."""
    torch.set_num_threads(threads)
    if warm:
        warm_up_vml()
    x = torch.linspace(0.01, 4.0, size)
    out = {}
    for name in ops:
        f = getattr(torch, name)
        first, second = f(x), f(x)
        out[name] = int((first.view(torch.int32) - second.view(torch.int32)).abs().max())
    return out


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "_first_calls":   # fhvae-bench vml
    import json
    print(json.dumps(first_calls(threads=int(sys.argv[2]), warm=sys.argv[3] == "1")))
