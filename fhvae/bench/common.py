"""Timing, memory and sub-process helpers shared by the benchmarks.

Timings are medians over repeated, interleaved calls in one process (``time_interleaved``), so
ratios between configurations measured in the same run are meaningful on a shared, noisy machine.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def sync(device):
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_mb():
    """Peak resident set size of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(module, *args, env=None):
    """Run ``python -m <module> <args>`` in a fresh process -> the JSON dict its last stdout line holds."""
    out = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_interleaved(fns, iters, warmup, device):
    """Median seconds per call of each fn, calls interleaved round-robin."""
    for f in fns:
        for _ in range(warmup):
            f()
    sync(device)
    times = [[] for _ in fns]
    for _ in range(iters):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def device_name(device):
    """GPU name, or 'cpu (<cores> cores, <threads> threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
