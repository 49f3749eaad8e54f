#!/usr/bin/env python3
"""Repeatability check (EXPERIMENTS.md, "Training repeatability"): the same short training of
conf/train.yaml on data/train, in ``--runs`` fresh processes (``--jobs`` at a time), each ``--steps``
steps and a dev bound (one epoch of that many steps); prints how many runs ended with each weight
digest. One digest: the runs agree bitwise. Exit status 1 if they do not.

  local/repeat_training.py --runs 80 --steps 1 --jobs 2                 # after ./run.sh --stop-stage 3
  local/repeat_training.py --runs 80 --steps 1 --jobs 2 --no-warm-up    # without fhvae/cpu/mkl.py's warm-up
  local/repeat_training.py --runs 10 --steps 400 -- --train.num_threads 1

Run in egs/mini/v1 after stages 1-3 (``. ./path.sh`` first, or use tools/venv/bin/python).
"""
import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile


def one_run(steps, warm_up, overrides, exp_dir):
    """Train in this process; returns {"digest": md5 of the weights, "dev_bound": float}."""
    from fhvae import config
    from fhvae.cpu import mkl
    from fhvae.train.expdir import prepare_exp_dir
    from fhvae.train.trainer import Trainer
    if not warm_up:
        mkl._warm = True   # as if done: the VML kernels are then chosen on their first (threaded) use
    cfg = config.load_config("conf/train.yaml", config.parse_overrides(
        ["--train.epoch_steps", str(steps), "--train.max_epochs", "1"] + overrides))
    prepare_exp_dir(cfg, exp_dir, "data/train", "data/dev", "data/train/stats.npz")
    trainer = Trainer(cfg, "data/train", "data/dev", exp_dir, "data/train/stats.npz")
    summary = trainer.run()
    digest = hashlib.md5(b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters()))
    return {"digest": digest.hexdigest()[:12], "dev_bound": summary["best_dev_bound"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--steps", type=int, default=1, help="training steps per run (then the dev bound)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    p.add_argument("--no-warm-up", action="store_true", help="skip fhvae.cpu.mkl.warm_up_vml() (to see the race)")
    p.add_argument("--child", help=argparse.SUPPRESS)   # internal: run once, exp dir here, print JSON
    p.add_argument("overrides", nargs="*", help="fhvae-train overrides (after --)")
    a = p.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if a.child:
        print(json.dumps(one_run(a.steps, not a.no_warm_up, a.overrides, a.child)))
        return 0
    from tqdm import tqdm
    outcomes, procs = collections.Counter(), []
    with tempfile.TemporaryDirectory(prefix="repeat_training.") as tmp, tqdm(total=a.runs, unit="run") as bar:
        def finish(proc):
            out, err = proc.communicate()
            if proc.returncode:
                sys.exit(f"{__file__}: a run failed (status {proc.returncode}):\n{err[-2000:]}")
            r = json.loads(out.strip().splitlines()[-1])
            outcomes[(r["digest"], r["dev_bound"])] += 1
            bar.update(1)
        for i in range(a.runs):
            if len(procs) == a.jobs:
                finish(procs.pop(0))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", os.path.join(tmp, f"run{i}"),
                   "--steps", str(a.steps)] + (["--no-warm-up"] if a.no_warm_up else []) + ["--", *a.overrides]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            finish(proc)
    for (digest, bound), n in outcomes.most_common():
        print(f"{n:5d} runs: weights {digest}, dev bound {bound:.4f}")
    return 0 if len(outcomes) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
