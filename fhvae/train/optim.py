"""Optimization helpers of fhvae-train: Adam, the learning-rate schedule, a moving average of the weights."""
import math

import torch
from torch.optim.swa_utils import AveragedModel


def lr_scale(t, step):
    """Learning-rate factor at 0-based ``step`` for TrainConfig t: linear warm-up over
    lr_warmup_steps, then cosine decay to lr_final over lr_decay_steps, then constant (1 throughout
    with both 0). A pure function of the step, so resumed runs follow the same schedule."""
    if step < t.lr_warmup_steps:
        return (step + 1) / t.lr_warmup_steps
    if t.lr_decay_steps == 0:
        return 1.0
    progress = min(1.0, (step - t.lr_warmup_steps) / t.lr_decay_steps)
    return t.lr_final + (1 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(opt, scale):
    """Every group's lr <- its base lr (the lr it was created with) * scale."""
    for g in opt.param_groups:
        g["lr"] = g.setdefault("base_lr", g["lr"]) * scale


def adam(params, t, device):
    """Adam with TrainConfig t's lr and betas, PyTorch's fused kernel on CPU and CUDA (one pass over
    all parameters: the mini model's update ~3x as fast as torch.optim.Adam's per-parameter loop on
    2 cores, ~2 ms less per step; BENCHMARKS.md 3g)."""
    return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2),
                            fused=torch.device(device).type in ("cpu", "cuda"))


def load_adam_state(opt, state):
    """``opt.load_state_dict(state)`` keeping opt's own ``fused`` setting, which load_state_dict would
    take from the saved groups (a state saved before fhvae-train used the fused Adam would switch it off)."""
    fused = [g["fused"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, f in zip(opt.param_groups, fused):
        g["fused"] = f


def ema_model(model, decay):
    """A copy of ``model`` whose weights follow an exponential moving average of ``model``'s
    (``update_parameters(model)`` after each step): decay min(decay, (1 + n) / (10 + n)) after n updates,
    so the first steps' weights fade out quickly. Buffers are averaged too (batch-norm statistics),
    integer ones (its batch counter) copied."""
    @torch.no_grad()
    def update(avg, cur, n):   # called per device and dtype
        if not avg[0].is_floating_point():
            torch._foreach_copy_(avg, cur)
            return
        n = float(n)
        torch._foreach_lerp_(avg, cur, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
