"""torch.distributed (gloo, CPU): 2 ranks keep identical weights, rank-local caches, resume."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from fhvae import config
from fhvae.train import checkpoint as ckpt
from tests.fakedata import make_feats_dir, write_stats
from tests.test_trainer import TINY


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, d, exp, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from fhvae.train import distributed
    from fhvae.train.expdir import prepare_exp_dir
    from fhvae.train.trainer import Trainer
    cfg = config.load_config(None, TINY + [("train.max_epochs", 2)])
    prepare_exp_dir(cfg, exp, f"{d}/train", f"{d}/dev", f"{d}/train/stats.npz")
    tr = Trainer(cfg, f"{d}/train", f"{d}/dev", exp)
    tr.run()
    torch.save({"model": tr.model.state_dict(), "cache": tr.cache.detach().clone()}, f"{out}.{rank}.pt")
    distributed.cleanup()


@pytest.fixture
def sets(tmp_path):
    train = make_feats_dir(str(tmp_path / "train"), n_spk=4, utts_per_spk=3, seed=0)
    make_feats_dir(str(tmp_path / "dev"), n_spk=2, utts_per_spk=2, seed=1)
    write_stats(str(tmp_path / "train" / "stats.npz"), train)
    return tmp_path


@pytest.mark.slow
def test_two_ranks_keep_identical_weights_and_own_caches(sets):
    d, exp, out = str(sets), str(sets / "exp"), str(sets / "final")
    mp.start_processes(_rank_main, args=(2, _free_port(), d, exp, out), nprocs=2, start_method="spawn")
    r0, r1 = torch.load(f"{out}.0.pt"), torch.load(f"{out}.1.pt")
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    # each rank sampled its own block, so the rank-local caches are not averaged
    assert not torch.equal(r0["cache"], r1["cache"])
    step = ckpt.last_step_dir(os.path.join(exp, "checkpoints"))
    assert sorted(os.listdir(step)) == ["model.pt", "rank0.pt", "rank1.pt"]


@pytest.mark.slow
def test_torchrun_cli_trains_and_resumes(sets):
    d = str(sets)
    over = [a for k, v in TINY + [("train.max_epochs", 2)] for a in (f"--{k}", str(v))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fhvae.bin.train", "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev",
           "--exp-dir", f"{d}/exp"] + over
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.isfile(f"{d}/exp/done")
    # more epochs: both ranks continue the finished run from its last checkpoint
    r = subprocess.run(cmd[:-1] + ["3"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(f"{d}/exp/done"))["epoch"] == 3
    # any other changed key is refused, naming it
    r = subprocess.run(cmd + ["--train.lr", "0.5"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "differs in: train.lr (was 0.001, now 0.5);" in r.stderr


@pytest.mark.slow
def test_torchrun_killed_then_resumed_matches_uninterrupted(sets):
    """Kill a 2-rank torchrun run (whole process group) after its first checkpoint; the same command
    resumes every rank from its own part and ends with the same model as an uninterrupted run."""
    import signal
    import time

    d = str(sets)
    over = [a for k, v in TINY + [("train.max_epochs", 6)] for a in (f"--{k}", str(v))]

    def cmd(exp):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "fhvae.bin.train", "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev",
                "--exp-dir", exp] + over

    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd(f"{d}/ref"), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    exp = f"{d}/killed"
    p = subprocess.Popen(cmd(exp), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    last, t0 = os.path.join(exp, "checkpoints", "last"), time.time()
    while p.poll() is None and not os.path.exists(last) and time.time() - t0 < 120:
        time.sleep(0.01)
    assert p.poll() is None, "finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not os.path.exists(os.path.join(exp, "done"))
    r = subprocess.run(cmd(exp), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = ckpt.load_model_weights(f"{d}/ref"), ckpt.load_model_weights(exp)
    for k in a:
        assert torch.equal(a[k], b[k]), k
