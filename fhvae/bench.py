"""Benchmarks (not tests): step time vs K, memory vs M, throughput, loader, export/fbank speed.

Each ``bench_*`` returns a JSON-able dict and the CLI (``fhvae-bench``) prints it as a table.
Timings are medians over repeated, interleaved measurements in one process, so ratios between
configurations measured in the same run are meaningful on a shared, noisy machine.
"""
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from fhvae.cpu.malloc import keep_freed_memory
from fhvae.cpu import kernels as cpu_kernels
from fhvae.models import losses
from fhvae.models.fhvae import FHVAE, ModelConfig
from fhvae.train.trainer import adam


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb():
    """Peak resident set size of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Step:
    """One optimization step of the paper model: forward, loss, backward, Adam on model and cache."""

    def __init__(self, cfg, k, batch, device, plain=False, amp=False, dense=False, fused=True, fused_adam=True):
        self.device, self.amp, self.dense, self.fused = device, amp, dense, fused
        self.model = FHVAE(cfg, plain=plain).to(device)
        t = SimpleNamespace(lr=1e-3, beta1=0.95, beta2=0.999)
        opt = adam if fused_adam else lambda p, t, _: torch.optim.Adam(p, lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt = opt(self.model.parameters(), t, device)   # fhvae-train's, or Adam's per-parameter loop
        self.cache = torch.nn.Parameter(torch.randn(k, cfg.z2_dim, device=device))
        self.copt = opt([self.cache], t, device)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, cfg.seg_len, cfg.feat_dim, generator=g).to(device)
        self.idx = torch.randint(0, k, (batch,), generator=g).to(device)
        self.n = torch.full((batch,), 30.0, device=device)
        self.prior_var = cfg.z2_prior_var

    def __call__(self):
        with cpu_kernels.use(self.fused):
            self._step()

    def _step(self):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(self.x)
        if self.dense:   # the 2017 code's formulation: a dense (B, K, D) difference tensor
            loss, _ = losses.fhvae_loss(out, self.x, self.cache, self.idx, self.n, 0.0, self.prior_var)
            d = ((out["z2_mu"][:, None, :].float() - self.cache[None]) ** 2).sum(-1)
            logits = -d / (2 * self.prior_var)
            loss = loss - 10.0 * (logits.gather(1, self.idx[:, None])[:, 0]
                                  - torch.logsumexp(logits, 1)).mean()
        else:
            loss, _ = losses.fhvae_loss(out, self.x, self.cache, self.idx, self.n, 10.0, self.prior_var)
        self.opt.zero_grad(set_to_none=True)
        self.copt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.copt.step()


def _time_interleaved(fns, iters, warmup, device):
    """Median seconds per call of each fn, calls interleaved round-robin."""
    for f in fns:
        for _ in range(warmup):
            f()
    _sync(device)
    times = [[] for _ in fns]
    for _ in range(iters):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_step_vs_k(ks=(10, 100, 1000, 2000, 5000, 10000, 20000), batch=256, iters=5, warmup=2,
                    device="cpu", dense=False, cfg=None):
    """Paper Table 2: optimization-step time (ms) vs sequence batch size K (cache rows).

    With ``dense`` the original (B, K, D) discriminative formulation is timed alongside.
    """
    device = torch.device(device)
    cfg = cfg or ModelConfig()
    steps = [_Step(cfg, k, batch, device) for k in ks]
    res = {"k": list(ks), "batch": batch, "device": _device_name(device)}
    if dense:
        steps += [_Step(cfg, k, batch, device, dense=True) for k in ks]
    t = _time_interleaved(steps, iters, warmup, device)
    res["step_ms"] = [round(1000 * x, 2) for x in t[:len(ks)]]
    if dense:
        res["dense_step_ms"] = [round(1000 * x, 2) for x in t[len(ks):]]
    res["ratio_kmax_kmin"] = round(t[len(ks) - 1] / t[0], 3)
    return res


def lstm_flops(cfg, batch):
    """Multiply-add FLOPs (x2) of one forward+backward step of the paper model (backward = 2x forward)."""
    T, F = cfg.seg_len, cfg.feat_dim

    def lstm(inp, h):
        return sum(2 * 4 * h * ((inp if layer == 0 else h) + h) for layer in range(cfg.num_layers)) * T

    fwd = (lstm(F, cfg.z2_hidden) + lstm(F + cfg.z2_dim, cfg.z1_hidden) + lstm(cfg.z1_dim + cfg.z2_dim, cfg.dec_hidden)
           + 2 * 2 * cfg.dec_hidden * F * T)
    return 3 * fwd * batch


def sgemm_gflops(n=2048, iters=5, device="cpu"):
    """Measured float32 matrix-product rate (GFLOP/s), median over ``iters``."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = _time_interleaved([lambda: a @ b], iters, 2, device)[0]
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
    step = _Step(cfg, 2000, batch, device, fused=False)
    step()
    groups = {}
    for func, operands in record_gemms(step):
        groups.setdefault(" @ ".join("x".join(map(str, op[0])) for op in operands[-2:]), []).append(
            (func, operands))
    replays = [gemm_replay(calls, device) for calls in groups.values()]
    t = _time_interleaved([r for r, _ in replays], iters, warmup, device)
    total = sum(t)
    order = sorted(range(len(t)), key=lambda i: -t[i])
    names = list(groups)
    return {"device": _device_name(device), "batch": batch, "threads": torch.get_num_threads(),
            "hidden": (cfg.z2_hidden, cfg.z1_hidden, cfg.dec_hidden),
            "shapes": [names[i] for i in order], "calls": [len(groups[names[i]]) for i in order],
            "ms": [round(1000 * t[i], 2) for i in order],
            "gflops": [round(replays[i][1] / t[i] / 1e9, 1) for i in order],
            "share": [round(t[i] / total, 3) for i in order],
            "total_ms": round(1000 * total, 2),
            "total_gflops": round(sum(f for _, f in replays) / total / 1e9, 1),
            "sgemm_gflops": round(sgemm_gflops(device=device), 1)}


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
    steps = [_Step(cfg, 2000, batch, device, amp=amp), _Step(cfg, 2000, batch, device, amp=amp, fused=False),
             _Step(cfg, 2000, batch, device, plain=True, amp=amp)]
    steps[1]()
    replay, gemm_flops = gemm_replay(record_gemms(steps[1]), device)
    t_fast, t_unfused, t_plain, t_gemm = _time_interleaved(steps + [replay], iters, warmup, device)
    flops = lstm_flops(cfg, batch)
    g = sgemm_gflops(device=device)
    fused = device.type == "cpu" and cpu_kernels.kernels() is not None
    return {"device": _device_name(device), "batch": batch, "threads": torch.get_num_threads(),
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
    from fhvae.models import fhvae as fm
    g = torch.Generator().manual_seed(0)
    gx = torch.randn(4 * hidden, seg_len, batch, generator=g)
    w = 0.1 * torch.randn(4 * hidden, hidden, generator=g)
    dh = torch.randn(hidden, seg_len, batch, generator=g)
    res = {"hidden": hidden, "batch": batch, "seg_len": seg_len, "threads": torch.get_num_threads(),
           "fused_kernels": cpu_kernels.kernels() is not None}
    for name, fused, chunks in (("split", True, 0), ("one_chunk", True, 1), ("pytorch_ops", False, 0)):
        with cpu_kernels.use(fused), cpu_kernels.split(chunks):
            _, saved = fm._lstm_layer_forward(gx, w, seg_len, save=True)
            fwd, bwd = _time_interleaved([lambda: fm._lstm_layer_forward(gx, w, seg_len, save=True),
                                          lambda: fm._lstm_layer_backward(w, *saved, dh)], iters, warmup,
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
    steps = {"fused": _Step(cfg, 200, batch, dev), "loop": _Step(cfg, 200, batch, dev, fused_adam=False)}
    whole = _time_interleaved(list(steps.values()), iters, warmup, dev)
    for s in steps.values():   # gradients in place for the update-only timing
        s()
        for p in s.model.parameters():
            p.grad = torch.randn_like(p)
    update = _time_interleaved([s.opt.step for s in steps.values()], 5 * iters, warmup, dev)
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
    step = _Step(cfg, 2000, batch, torch.device("cpu"))
    step.model = torch.nn.parallel.DistributedDataParallel(step.model)  # same parameters, averaged gradients
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
        t_one = _time_interleaved([_Step(cfg, 2000, batch, torch.device("cpu"))], iters, warmup,
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
    step = _Step(cfg, rows, batch, torch.device("cpu"))
    for _ in range(steps):
        step()
    return {"rss_mb": _rss_mb(), "cache_rows": rows}


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
                out = subprocess.run([sys.executable, "-m", "fhvae.bench", "_memory", str(m), sampling, str(k),
                                      str(steps), str(batch)], capture_output=True, text=True, check=True)
                samples[key][i].append(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])
    res = {"m": list(ms), "k": k, "repeats": repeats}
    for _, key in keys:
        res[key] = [round(float(np.median(v)), 1) for v in samples[key]]
        res[key.replace("_rss_mb", "_min_mb")] = [round(min(v), 1) for v in samples[key]]
        res[key.replace("_rss_mb", "_max_mb")] = [round(max(v), 1) for v in samples[key]]
    h = res["hierarchical_rss_mb"]
    res["hierarchical_growth"] = round(h[-1] / h[0] - 1, 4)
    res["flat_growth"] = round(res["flat_rss_mb"][-1] / res["flat_rss_mb"][0] - 1, 4)
    return res


def make_corpus(path, size_gb, dim=80, mean_frames=400, seed=0):
    """Synthetic on-disk corpus: data dir with feats.scp / utt2num_frames / utt2spk and stats.npz."""
    from fhvae.io.ark import ArkScpWriter
    from fhvae.io.datadir import utt2spk_to_spk2utt, write_kv
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    n2f, utt2spk, total, i = {}, {}, 0, 0
    block = rng.normal(size=(4 * mean_frames, dim)).astype(np.float32)
    arks_dir = os.path.join(path, "arks")
    os.makedirs(arks_dir, exist_ok=True)
    target = size_gb * 1e9
    ark_no = 0
    while total < target:
        ark_no += 1
        with ArkScpWriter(f"{arks_dir}/feats.{ark_no}.ark", f"{arks_dir}/feats.{ark_no}.scp") as w:
            for _ in range(5000):
                T = int(rng.integers(mean_frames // 2, 3 * mean_frames // 2))
                s = int(rng.integers(0, len(block) - T))
                utt = f"spk{i // 50:06d}-u{i:09d}"
                w.write(utt, block[s:s + T] + np.float32(i % 7))
                n2f[utt], utt2spk[utt] = str(T), utt.split("-")[0]
                total += T * dim * 4 + 15
                i += 1
                if total >= target:
                    break
    with open(os.path.join(path, "feats.scp"), "w") as out:
        for j in range(1, ark_no + 1):
            with open(f"{arks_dir}/feats.{j}.scp") as f:
                out.write(f.read())
    write_kv(os.path.join(path, "utt2num_frames"), n2f)
    write_kv(os.path.join(path, "utt2spk"), utt2spk)
    write_kv(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    np.savez(os.path.join(path, "stats.npz"), mean=np.full(dim, 3.0), var=np.full(dim, 5.0),
             count=1, dim=dim)
    return {"utts": i, "bytes": total}


def bench_loader(size_gb=0.5, k=2000, blocks=3, corpus_dir=None, train_steps=20, batch=256):
    """Block loader throughput on an on-disk feats.scp vs the trainer's consumption, and RSS.

    Loader: frames/s reading blocks of K random utterances (cold, then the trainer's view with
    prefetch). Trainer: segments/s of the paper model on this machine; one segment needs
    ``seg_shift`` (8) new frames on average, so the loader keeps up when
    loader_frames_per_s / 8 > trainer segments/s.
    """
    from fhvae.data.index import UttIndex
    from fhvae.data.loader import BlockLoader, UttReader
    from fhvae.data.sampler import HierarchicalSampler
    from fhvae.features.stats import load_stats
    tmp = None
    if corpus_dir is None:
        tmp = tempfile.mkdtemp(prefix="fhvae-bench-")
        corpus_dir = tmp
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(corpus_dir, "feats.scp")):
        make_corpus(corpus_dir, size_gb)
    make_s = time.perf_counter() - t0
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index = UttIndex.from_data_dir(corpus_dir)
    index_s = time.perf_counter() - t0
    disk = sum(os.path.getsize(p) for p in index.ark_paths)
    stats = load_stats(os.path.join(corpus_dir, "stats.npz"))
    sampler = HierarchicalSampler(index.nframes, k, 20, 8, seed=0)
    utts = UttReader(index, stats, 80)
    loader = BlockLoader(utts, sampler, prefetch=False)
    frames, t0 = 0, time.perf_counter()
    for b in range(blocks):
        data = loader.get(b)
        frames += sum(len(f) for f in data.feats)
        del data
        gc.collect()
    load_s = time.perf_counter() - t0
    loader.close()
    # training on the corpus with prefetch: loader wait time vs compute time
    step = _Step(ModelConfig(), k, batch, torch.device("cpu"))
    loader = BlockLoader(utts, sampler, prefetch=True)
    wait, compute, done = 0.0, 0.0, 0
    b = blocks
    while done < train_steps:
        t0 = time.perf_counter()
        data = loader.get(b)
        wait += time.perf_counter() - t0
        for j in range(min(data.block.batches(batch), train_steps - done)):
            t0 = time.perf_counter()
            step.x = data.batch(j, batch, 20)[0]
            step.idx = torch.from_numpy(data.block.batch(j, batch)[0])
            step.n = torch.full((len(step.idx),), 30.0)
            step()
            compute += time.perf_counter() - t0
            done += 1
        b += 1
    loader.close()
    utts.close()
    seg_per_s = done * batch / compute
    res = {"corpus_gb": round(disk / 1e9, 2), "utts": len(index), "make_s": round(make_s, 1),
           "index_s": round(index_s, 2), "k": k, "blocks": blocks,
           "loader_frames_per_s": round(frames / load_s), "loader_segments_per_s": round(frames / load_s / 8),
           "trainer_segments_per_s": round(seg_per_s, 1),
           "loader_over_trainer": round(frames / load_s / 8 / seg_per_s, 2),
           "prefetch_wait_s": round(wait, 2), "train_compute_s": round(compute, 2),
           "rss_before_index_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1)}
    if tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _index_worker(path):
    """In a fresh process: time and RSS growth of indexing ``path`` (a data dir)."""
    from fhvae.data.index import UttIndex
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index = UttIndex.from_data_dir(path)
    return {"utts": len(index), "index_s": round(time.perf_counter() - t0, 1),
            "rss_growth_mb": round(_rss_mb() - rss0, 1),
            "index_arrays_mb": round((len(index._blob) + index._name_off.nbytes + index.nframes.nbytes
                                      + index.ark_id.nbytes + index.offset.nbytes) / 2**20, 1)}


def bench_index(n=10_000_000):
    """Memory of the compact utterance index for ``n`` utterances (synthetic feats.scp, no arks)."""
    tmp = tempfile.mkdtemp(prefix="fhvae-index-")
    with open(os.path.join(tmp, "feats.scp"), "w") as scp, open(os.path.join(tmp, "utt2num_frames"), "w") as nf:
        for i in range(n):
            utt = f"spk{i // 100:07d}-utt{i:09d}"
            scp.write(f"{utt} /data/fbank/raw_fbank_train.{i % 64 + 1}.ark:{(i // 64) * 128015 + 24}\n")
            nf.write(f"{utt} {300 + i % 500}\n")
    out = subprocess.run([sys.executable, "-m", "fhvae.bench", "_index", tmp], capture_output=True, text=True,
                         check=True)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _malloc_worker(hidden, batch, iters, threads):
    """Run in a fresh process (FHVAE_MALLOC_TUNE in its environment says whether malloc is tuned):
    training-step time and page faults, and segments/s of the export's encoders."""
    from fhvae.models.fhvae import inference_batch
    tuned = keep_freed_memory()
    torch.set_num_threads(threads)
    cfg = ModelConfig(z1_hidden=hidden, z2_hidden=hidden, dec_hidden=hidden)
    step = _Step(cfg, 200, batch, torch.device("cpu"))
    for _ in range(3):
        step()
    r0, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    model, x = step.model.eval(), torch.randn(4096, cfg.seg_len, cfg.feat_dim)
    b = inference_batch("cpu")

    def encode():
        for i in range(0, len(x), b):
            model.encode_z1(x[i:i + b], model.encode_z2(x[i:i + b])[0])
    with torch.inference_mode():
        t_enc = _time_interleaved([encode], 3, 1, torch.device("cpu"))[0]
    return {"tuned": tuned, "step_ms": 1000 * statistics.median(times),
            "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / iters,
            "sys_ms_per_step": 1000 * (r1.ru_stime - r0.ru_stime) / iters, "encode_segments_per_s": len(x) / t_enc}


def bench_malloc(hidden=128, batch=128, iters=15, reps=3, threads=2):
    """fhvae/cpu/malloc.py on against off: ``reps`` pairs of fresh processes (off, on, off, on, ...); medians
    over the pairs of each one's median step time, page faults and system time per step, and the
    segments/s of the export's z2 + z1 encoders (batches of inference_batch)."""
    runs = {"0": [], "1": []}
    for _ in range(reps):
        for tune in runs:
            out = subprocess.run([sys.executable, "-m", "fhvae.bench", "_malloc", str(hidden), str(batch), str(iters),
                                  str(threads)], capture_output=True, text=True, check=True,
                                 env={**os.environ, "FHVAE_MALLOC_TUNE": tune})
            runs[tune].append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = {"hidden": hidden, "batch": batch, "threads": threads, "pairs": reps,
           "tuned": [all(r["tuned"] for r in runs[t]) for t in runs]}   # [off, on]: [False, True] on glibc
    for tune, name in (("0", "off"), ("1", "on")):
        for k in ("step_ms", "faults_per_step", "sys_ms_per_step", "encode_segments_per_s"):
            res[f"{name}_{k}"] = round(statistics.median(r[k] for r in runs[tune]), 1)
    res["step_speedup"] = round(res["off_step_ms"] / res["on_step_ms"], 3)
    res["encode_speedup"] = round(res["on_encode_segments_per_s"] / res["off_encode_segments_per_s"], 3)
    return res


def bench_vml(procs=200, threads=2):
    """MKL VML's first-call race (fhvae/cpu/mkl.py): ``procs`` pairs of fresh processes, one without and one
    with ``warm_up_vml()``, each pair started together (two compete for the cores, which is when the race
    shows). Each process makes the first and second call of exp, log and sqrt on a (4096,) float32
    tensor with ``threads`` threads; a first call that differs from the second is a wrong one.
    Returns, per arm and op, the number of wrong first calls and the largest error (float32 ulps)."""
    res = {"pairs": procs, "threads": threads}
    counts = {arm: {} for arm in ("cold", "warm")}
    for _ in tqdm(range(procs), desc="vml pairs", unit="pair"):
        run = {arm: subprocess.Popen([sys.executable, "-m", "fhvae.cpu.mkl", "_first_calls", str(threads), flag],
                                     stdout=subprocess.PIPE, text=True)
               for arm, flag in (("cold", "0"), ("warm", "1"))}
        for arm, proc in run.items():
            out, _ = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"fhvae.mkl _first_calls exited with status {proc.returncode}")
            for op, ulp in json.loads(out.strip().splitlines()[-1]).items():
                n, worst = counts[arm].get(op, (0, 0))
                counts[arm][op] = (n + (ulp > 0), max(worst, ulp))
    for arm, ops in counts.items():
        for op, (n, worst) in ops.items():
            res[f"{arm}_{op}_wrong"] = n
            res[f"{arm}_{op}_max_ulp"] = worst
    return res


def bench_export(utts=20, frames=500, device="cpu", batch_windows=None, fbank_seconds=60.0):
    """Export speed (frames/s and real-time factor at 10 ms frames) and fbank real-time factor."""
    from fhvae.config import Config
    from fhvae.export import Exporter
    from fhvae.features.fbank import FbankConfig, compute_fbank
    device = torch.device(device)
    cfg = Config()
    model = FHVAE(cfg.model).to(device).eval()
    ex = Exporter(model, cfg, device, batch_windows)
    xs = [torch.randn(frames, cfg.model.feat_dim) for _ in range(utts)]
    t = _time_interleaved([lambda: ex.encode(xs)], 3, 1, device)[0]
    n = utts * frames
    audio = (np.random.default_rng(0).normal(size=int(16000 * fbank_seconds)) * 0.1).astype(np.float32)
    tf = _time_interleaved([lambda: compute_fbank(audio, FbankConfig())], 3, 1, torch.device("cpu"))[0]
    return {"device": _device_name(device), "export_frames_per_s": round(n / t, 1),
            "export_rtf": round(t / (n * 0.01), 5), "fbank_rtf": round(tf / fbank_seconds, 5)}


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_memory":
    m, sampling, k, steps, batch = sys.argv[2:7]
    keep_freed_memory()   # peak RSS as fhvae-train has it
    print(json.dumps(_memory_worker(int(m), sampling, int(k), int(steps), int(batch))))
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_malloc":
    print(json.dumps(_malloc_worker(*map(int, sys.argv[2:6]))))
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_index":
    print(json.dumps(_index_worker(sys.argv[2])))
