"""Benchmarks of the CPU work-arounds (fhvae/cpu): malloc thresholds on/off, MKL VML first calls.

Both compare fresh processes: ``python -m fhvae.bench.cpu _malloc HIDDEN BATCH ITERS THREADS``
(FHVAE_MALLOC_TUNE in its environment), ``python -m fhvae.cpu.mkl _first_calls THREADS WARM``.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

from fhvae.bench.common import run_worker, time_interleaved
from fhvae.bench.train_step import Step
from fhvae.cpu.malloc import keep_freed_memory
from fhvae.infer import inference_batch
from fhvae.config import ModelConfig


def _malloc_worker(hidden, batch, iters, threads):
    """Run in a fresh process (FHVAE_MALLOC_TUNE in its environment says whether malloc is tuned):
    training-step time and page faults, and segments/s of the export's encoders."""
    tuned = keep_freed_memory()
    torch.set_num_threads(threads)
    cfg = ModelConfig(z1_hidden=hidden, z2_hidden=hidden, dec_hidden=hidden)
    step = Step(cfg, 200, batch, torch.device("cpu"))
    for _ in range(3):
        step()
    r0, times = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    model, x = step.model.eval(), torch.randn(4096, step.x.shape[1], cfg.feat_dim)
    b = inference_batch("cpu")

    def encode():
        for i in range(0, len(x), b):
            model.encode_z1(x[i:i + b], model.encode_z2(x[i:i + b])[0])
    with torch.inference_mode():
        t_enc = time_interleaved([encode], 3, 1, torch.device("cpu"))[0]
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
            runs[tune].append(run_worker("fhvae.bench.cpu", "_malloc", hidden, batch, iters, threads,
                                         env={**os.environ, "FHVAE_MALLOC_TUNE": tune}))
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
                raise RuntimeError(f"fhvae.cpu.mkl _first_calls exited with status {proc.returncode}")
            for op, ulp in json.loads(out.strip().splitlines()[-1]).items():
                n, worst = counts[arm].get(op, (0, 0))
                counts[arm][op] = (n + (ulp > 0), max(worst, ulp))
    for arm, ops in counts.items():
        for op, (n, worst) in ops.items():
            res[f"{arm}_{op}_wrong"] = n
            res[f"{arm}_{op}_max_ulp"] = worst
    return res


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_malloc":
    print(json.dumps(_malloc_worker(*map(int, sys.argv[2:6]))))
