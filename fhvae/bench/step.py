"""Benchmarks of the training step: time vs K, throughput, one LSTM layer, Adam, DDP processes, memory.

Each ``bench_*`` returns a JSON-able dict (``fhvae-bench`` prints it as a table). ``bench_memory``
measures each point in a fresh process: ``python -m fhvae.bench.step _memory M SAMPLING K STEPS BATCH``.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from fhvae.bench.common import device_name, rss_mb, run_worker, time_interleaved
from fhvae.bench.gemms import gemm_replay, lstm_flops, record_gemms, sgemm_gflops
from fhvae.bench.train_step import Step
from fhvae.cpu import kernels as cpu_kernels
from fhvae.cpu import lstm as cpu_lstm
from fhvae.cpu.malloc import keep_freed_memory
from fhvae.config import ModelConfig


def bench_step_vs_k(ks=(10, 100, 1000, 2000, 5000, 10000, 20000), batch=256, iters=5, warmup=2,
                    device="cpu", dense=False, cfg=None):
    """Paper Table 2: optimization-step time (ms) vs sequence batch size K (cache rows).

    With ``dense`` the original (B, K, D) discriminative formulation is timed alongside.
    """
    device = torch.device(device)
    cfg = cfg or ModelConfig()
    steps = [Step(cfg, k, batch, device) for k in ks]
    res = {"k": list(ks), "batch": batch, "device": device_name(device)}
    if dense:
        steps += [Step(cfg, k, batch, device, dense=True) for k in ks]
    t = time_interleaved(steps, iters, warmup, device)
    res["step_ms"] = [round(1000 * x, 2) for x in t[:len(ks)]]
    if dense:
        res["dense_step_ms"] = [round(1000 * x, 2) for x in t[len(ks):]]
    res["ratio_kmax_kmin"] = round(t[len(ks) - 1] / t[0], 3)
    return res


def bench_throughput(batch=256, iters=5, warmup=2, device="cpu", amp=False, cfg=None):
    """Training segments/s of the model (default implementation, with the compiled step kernels on
    CPU) vs the same without them (PyTorch element-wise ops) and vs a plain nn.LSTM formulation;
    FLOPs per step against the measured sgemm rate (the bound).

    Also the step's own matrix products alone (``gemm_only``: every product of a step of the PyTorch
    ops path, recurrent ones included, replayed at its shapes and strides with nothing else between):
    their rate against the 2048^3 sgemm says how close any implementation doing these products can
    come to the sgemm bound, and ``share_of_gemm_bound`` = gemm-only time / step time is the share
    of the step that is matrix products at their own speed."""
    device = torch.device(device)
    cfg = cfg or ModelConfig()
    steps = [Step(cfg, 2000, batch, device, amp=amp), Step(cfg, 2000, batch, device, amp=amp, fused=False),
             Step(cfg, 2000, batch, device, plain=True, amp=amp)]
    steps[1]()
    replay, gemm_flops = gemm_replay(record_gemms(steps[1]), device)
    t_fast, t_unfused, t_plain, t_gemm = time_interleaved(steps + [replay], iters, warmup, device)
    flops = lstm_flops(cfg, batch)
    g = sgemm_gflops(device=device)
    fused = device.type == "cpu" and cpu_kernels.kernels() is not None
    return {"device": device_name(device), "batch": batch, "threads": torch.get_num_threads(),
            "hidden": (cfg.z2_hidden, cfg.z1_hidden, cfg.dec_hidden), "fused_kernels": fused,
            "step_ms": round(1000 * t_fast, 2), "unfused_step_ms": round(1000 * t_unfused, 2),
            "plain_step_ms": round(1000 * t_plain, 2),
            "segments_per_s": round(batch / t_fast, 1), "plain_segments_per_s": round(batch / t_plain, 1),
            "speedup": round(t_plain / t_fast, 3), "fused_speedup": round(t_unfused / t_fast, 3),
            "gflops_per_step": round(flops / 1e9, 2),
            "sgemm_gflops": round(g, 1), "achieved_gflops": round(flops / t_fast / 1e9, 1),
            "share_of_sgemm_bound": round(flops / t_fast / 1e9 / g, 3),
            "bound_segments_per_s": round(batch * g * 1e9 / flops, 1),
            "gemm_only_ms": round(1000 * t_gemm, 2), "gemm_only_gflop": round(gemm_flops / 1e9, 2),
            "gemm_only_gflops": round(gemm_flops / t_gemm / 1e9, 1),
            "gemm_only_share_of_sgemm": round(gemm_flops / t_gemm / 1e9 / g, 3),
            "share_of_gemm_bound": round(t_gemm / t_fast, 3)}


def bench_layer(hidden=128, batch=128, seg_len=20, iters=30, warmup=3):
    """One LSTM layer (gate pre-activations given), forward with the saved buffers and backward to
    the gate pre-activations, ms (medians): the C kernels with the batch split over the torch
    threads, the same in one chunk (its sgemm on all threads), and the PyTorch ops."""
    g = torch.Generator().manual_seed(0)
    gx = torch.randn(4 * hidden, seg_len, batch, generator=g)
    w = 0.1 * torch.randn(4 * hidden, hidden, generator=g)
    dh = torch.randn(hidden, seg_len, batch, generator=g)
    res = {"hidden": hidden, "batch": batch, "seg_len": seg_len, "threads": torch.get_num_threads(),
           "fused_kernels": cpu_kernels.kernels() is not None}
    for name, fused, chunks in (("split", True, 0), ("one_chunk", True, 1), ("pytorch_ops", False, 0)):
        with cpu_kernels.use(fused), cpu_kernels.split(chunks):
            _, saved = cpu_lstm.layer_forward(gx, w, seg_len, save=True)
            fwd, bwd = time_interleaved([lambda: cpu_lstm.layer_forward(gx, w, seg_len, save=True),
                                          lambda: cpu_lstm.layer_backward(w, *saved, dh)], iters, warmup,
                                         torch.device("cpu"))
        res[f"{name}_forward_ms"], res[f"{name}_backward_ms"] = round(1000 * fwd, 3), round(1000 * bwd, 3)
    res["split_over_one_chunk"] = round((res["one_chunk_forward_ms"] + res["one_chunk_backward_ms"])
                                        / (res["split_forward_ms"] + res["split_backward_ms"]), 3)
    res["split_over_pytorch_ops"] = round((res["pytorch_ops_forward_ms"] + res["pytorch_ops_backward_ms"])
                                          / (res["split_forward_ms"] + res["split_backward_ms"]), 3)
    return res


def bench_adam(batch=128, iters=15, warmup=3, cfg=None):
    """The optimizer's part of a training step: a whole step (forward, backward, Adam on the model and
    the cache) and Adam's update alone, with PyTorch's fused Adam (fhvae-train's) against its
    per-parameter loop (torch.optim.Adam's CPU default), timed interleaved; ms, medians."""
    cfg = cfg or ModelConfig()
    dev = torch.device("cpu")
    steps = {"fused": Step(cfg, 200, batch, dev), "loop": Step(cfg, 200, batch, dev, fused_adam=False)}
    whole = time_interleaved(list(steps.values()), iters, warmup, dev)
    for s in steps.values():   # gradients in place for the update-only timing
        s()
        for p in s.model.parameters():
            p.grad = torch.randn_like(p)
    update = time_interleaved([s.opt.step for s in steps.values()], 5 * iters, warmup, dev)
    res = {"hidden": (cfg.z2_hidden, cfg.z1_hidden, cfg.dec_hidden), "batch": batch,
           "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in steps["fused"].model.parameters())}
    for (name, s), w, u in zip(steps.items(), whole, update):
        res[f"{name}_step_ms"], res[f"{name}_update_ms"] = round(1000 * w, 2), round(1000 * u, 3)
    res["step_speedup"] = round(whole[1] / whole[0], 3)
    res["update_speedup"] = round(update[1] / update[0], 2)
    return res


def _procs_worker(rank, procs, port, cfg, batch, iters, warmup, out):
    """One rank of bench_procs: a 1-thread DDP step on batch segments; rank 0 writes the median (s)."""
    import torch.distributed as dist
    keep_freed_memory()   # as in fhvae-train (run_cli)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=procs)
    step = Step(cfg, 2000, batch, torch.device("cpu"))
    step.net = torch.nn.parallel.DistributedDataParallel(step.model)  # same parameters, averaged gradients
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    t = torch.tensor([statistics.median(times)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"step_s": float(t)}, f)
    dist.barrier()   # neither rank tears down the group (rank 0 hosts its store) while the other still uses it
    dist.destroy_process_group()


def bench_procs(batch=128, procs=2, iters=20, warmup=3, cfg=None):
    """CPU: one training step of ``batch`` segments in one process with ``procs`` threads against
    ``procs`` DDP processes (gloo) of one thread each, batch / procs segments per process (the same
    global batch, as ``train_nproc`` in the recipes). Also the share of the sgemm bound at ``procs``
    threads that each reaches."""
    import socket
    import torch.multiprocessing as mp
    cfg = cfg or ModelConfig()
    if batch % procs:
        raise ValueError(f"batch {batch} is not a multiple of procs {procs}")
    threads = torch.get_num_threads()
    torch.set_num_threads(procs)
    try:
        t_one = time_interleaved([Step(cfg, 2000, batch, torch.device("cpu"))], iters, warmup,
                                  torch.device("cpu"))[0]
        g = sgemm_gflops()
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as sock:   # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        mp.start_processes(_procs_worker, args=(procs, port, cfg, batch // procs, iters, warmup, out),
                           nprocs=procs, start_method="spawn")
        with open(out) as f:
            t_ddp = json.load(f)["step_s"]
    flops = lstm_flops(cfg, batch)
    return {"batch": batch, "procs": procs, "hidden": (cfg.z2_hidden, cfg.z1_hidden, cfg.dec_hidden),
            "one_process_step_ms": round(1000 * t_one, 2), "ddp_step_ms": round(1000 * t_ddp, 2),
            "one_process_segments_per_s": round(batch / t_one, 1), "ddp_segments_per_s": round(batch / t_ddp, 1),
            "ddp_speedup": round(t_one / t_ddp, 3), "sgemm_gflops": round(g, 1),
            "one_process_share_of_sgemm_bound": round(flops / t_one / 1e9 / g, 3),
            "ddp_share_of_sgemm_bound": round(flops / t_ddp / 1e9 / g, 3)}


def _memory_worker(m, sampling, k, steps, batch):
    """Run in a fresh process: peak RSS of ``steps`` training steps with an M- or K-row cache."""
    cfg = ModelConfig()
    rows = m if sampling == "flat" else min(k, m)
    step = Step(cfg, rows, batch, torch.device("cpu"))
    for _ in range(steps):
        step()
    return {"rss_mb": rss_mb(), "cache_rows": rows}


def bench_memory(ms=(1000, 10000, 100000, 1000000), k=2000, steps=3, batch=256, repeats=3):
    """Peak RSS (MB) of training steps, flat (cache of M rows) vs hierarchical (K rows), vs M.

    Each point runs in its own process, ``repeats`` times (rounds over all points, so the host's load
    drifts evenly); the median per point is reported, with its min and max: freed memory that the
    heap keeps (``fhvae/cpu/malloc.py``) moves one sample by up to ~100 MB. Features are excluded (see
    the loader benchmark): this measures model, cache, optimizer state, gradients and the
    (batch x rows) discriminative matrix.
    """
    keys = (("hierarchical", "hierarchical_rss_mb"), ("flat", "flat_rss_mb"))
    samples = {key: [[] for _ in ms] for _, key in keys}
    for _ in range(repeats):
        for i, m in enumerate(ms):
            for sampling, key in keys:
                r = run_worker("fhvae.bench.step", "_memory", m, sampling, k, steps, batch)
                samples[key][i].append(r["rss_mb"])
    res = {"m": list(ms), "k": k, "repeats": repeats}
    for _, key in keys:
        res[key] = [round(float(np.median(v)), 1) for v in samples[key]]
        res[key.replace("_rss_mb", "_min_mb")] = [round(min(v), 1) for v in samples[key]]
        res[key.replace("_rss_mb", "_max_mb")] = [round(max(v), 1) for v in samples[key]]
    h = res["hierarchical_rss_mb"]
    res["hierarchical_growth"] = round(h[-1] / h[0] - 1, 4)
    res["flat_growth"] = round(res["flat_rss_mb"][-1] / res["flat_rss_mb"][0] - 1, 4)
    return res


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_memory":
    m, sampling, k, steps, batch = sys.argv[2:7]
    keep_freed_memory()   # peak RSS as fhvae-train has it
    print(json.dumps(_memory_worker(int(m), sampling, int(k), int(steps), int(batch))))
