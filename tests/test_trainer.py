"""Trainer, resume, hierarchical vs flat, export: on tiny synthetic feature sets."""
import copy
import json
import os
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import pytest
import torch

from fhvae import config
from fhvae.errors import ConfigError, FhvaeError, TrainingError
from fhvae.export import export
from fhvae.train import checkpoint as ckpt
from fhvae.features.stats import load_stats
from fhvae.models.fhvae import FHVAE
from fhvae.train.dev import DevSet
from fhvae.train.expdir import prepare_exp_dir
from fhvae.train.optim import adam, ema_model, load_adam_state, lr_scale
from fhvae.train.trainer import Trainer
from tests.fakedata import make_feats_dir, write_stats

TINY = [("model.feat_dim", 8), ("data.seg_len", 10), ("data.seg_shift", 5),
        ("data.dev_seg_shift", 10), ("data.svector_shift", 10), ("model.z1_dim", 4), ("model.z2_dim", 4),
        ("model.z1_hidden", 16), ("model.z2_hidden", 16), ("model.dec_hidden", 16), ("train.batch_size", 16),
        ("train.seq_batch_size", 4), ("train.epoch_steps", 3), ("train.max_epochs", 3),
        ("train.num_threads", 1)]


@pytest.fixture
def sets(tmp_path):
    train = make_feats_dir(str(tmp_path / "train"), n_spk=4, utts_per_spk=3, seed=0)
    make_feats_dir(str(tmp_path / "dev"), n_spk=2, utts_per_spk=2, seed=1)
    write_stats(str(tmp_path / "train" / "stats.npz"), train)
    return tmp_path


def train(sets, exp, overrides=()):
    cfg = config.load_config(None, TINY + list(overrides))
    d = str(sets)
    prepare_exp_dir(cfg, exp, f"{d}/train", f"{d}/dev", f"{d}/train/stats.npz")
    return Trainer(cfg, f"{d}/train", f"{d}/dev", exp).run()


def weights(exp, which="last"):
    return ckpt.load_model_weights(exp, which)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_writes_outputs_and_finishes(sets):
    exp = str(sets / "exp")
    summary = train(sets, exp)
    assert summary["epoch"] == 3 and summary["step"] == 9
    for f in ("config.yaml", "metrics.jsonl", "training_curve.png", "done", "checkpoints/best.pt"):
        assert os.path.isfile(os.path.join(exp, f)), f
    recs = [json.loads(x) for x in open(os.path.join(exp, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == [3, 6, 9]
    assert all(np.isfinite(r["dev"]["bound"]) for r in recs)
    # a second run of the same command does not train again
    assert train(sets, exp)["step"] == 9


@pytest.mark.parametrize("schedule", [[], [("train.lr_warmup_steps", 2), ("train.lr_decay_steps", 5)],
                                      [("train.ema_decay", 0.9)]],
                         ids=["constant_lr", "warmup_cosine", "ema"])
def test_resume_after_interruption_gives_same_model(sets, monkeypatch, schedule):
    ref = str(sets / "ref")
    train(sets, ref, schedule)
    exp = str(sets / "int")
    orig = Trainer._step
    calls = {"n": 0}

    def dying_step(self, data, st):
        calls["n"] += 1
        if calls["n"] == 5:   # after the checkpoint at step 3, inside epoch 2
            raise KeyboardInterrupt
        return orig(self, data, st)

    monkeypatch.setattr(Trainer, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(sets, exp, schedule)
    monkeypatch.setattr(Trainer, "_step", orig)
    assert ckpt.last_step_dir(os.path.join(exp, "checkpoints")).endswith("step00000003")
    with open(os.path.join(exp, "metrics.jsonl"), "a") as f:   # as if killed in the middle of an append
        f.write('{"epoch": 2, "step": 6, "tra')
    summary = train(sets, exp, schedule)
    assert summary["step"] == 9
    assert_same_weights(weights(ref), weights(exp))
    assert_same_weights(weights(ref, "best"), weights(exp, "best"))
    recs = [json.loads(x) for x in open(os.path.join(exp, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == [3, 6, 9]


def test_adam_state_of_the_per_parameter_adam_resumes_fused():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    t = config.TrainConfig()

    def step(opt, i):
        opt.zero_grad()
        sum(((p - i) ** 3).sum() for p in ps).backward()   # a different gradient every step
        opt.step()

    old = torch.optim.Adam(ps, lr=t.lr, betas=(t.beta1, t.beta2))   # what checkpoints before fused Adam hold
    for i in range(3):
        step(old, i)
    saved, state = [p.detach().clone() for p in ps], copy.deepcopy(old.state_dict())

    def one_more(opt):   # step 4 from the saved weights
        with torch.no_grad():
            for p, s in zip(ps, saved):
                p.copy_(s)
        step(opt, 3)
        return [p.detach().clone() for p in ps]

    want = one_more(old)
    new = adam(ps, t, "cpu")
    load_adam_state(new, copy.deepcopy(state))
    assert new.param_groups[0]["fused"] is True
    for p, w in zip(one_more(new), want):
        assert torch.allclose(p, w, rtol=0, atol=1e-7)
    fresh = one_more(adam(ps, t, "cpu"))   # without the state the step differs: the test can fail
    assert not all(torch.allclose(p, w, rtol=0, atol=1e-7) for p, w in zip(fresh, want))


def test_ema_model_follows_the_moving_average():
    m = torch.nn.Linear(3, 2)
    avg = ema_model(m, 0.5)
    seen = []
    for i in range(4):
        with torch.no_grad():
            m.weight.add_(float(i + 1))
        seen.append(m.weight.detach().clone())
        avg.update_parameters(m)
    want = seen[0]   # the first update copies; then decay min(0.5, (1 + n) / (10 + n)) after n updates
    for n, w in enumerate(seen[1:], start=1):
        d = min(0.5, (1 + n) / (10 + n))
        want = d * want + (1 - d) * w
    assert torch.allclose(avg.module.weight, want)
    assert not torch.allclose(avg.module.weight, m.weight)
    bn = torch.nn.BatchNorm1d(3)   # float buffers averaged, the integer batch counter copied
    avg = ema_model(bn, 0.5)
    for _ in range(3):
        bn(torch.randn(8, 3) + 5)
        avg.update_parameters(bn)
    assert int(avg.module.num_batches_tracked) == 3
    assert 0 < float(avg.module.running_mean.mean()) < float(bn.running_mean.mean())


def test_ema_weights_go_to_best_and_the_dev_bound(sets):
    exp = str(sets / "exp")
    train(sets, exp, [("train.ema_decay", 0.9)])
    best, last = weights(exp, "best"), weights(exp, "last")
    assert best.keys() == last.keys()
    assert not torch.equal(best["x_mu.weight"], last["x_mu.weight"])   # best.pt: the average, last: as trained
    main = torch.load(os.path.join(ckpt.last_step_dir(os.path.join(exp, "checkpoints")), "model.pt"),
                      weights_only=True)
    avg = {k[len("module."):]: v for k, v in main["ema"].items() if k.startswith("module.")}
    recs = [json.loads(x) for x in open(os.path.join(exp, "metrics.jsonl"))]
    if recs[-1]["best"]:
        assert_same_weights(avg, best)
    cfg = config.load_config(None, TINY)   # the last dev bound is the average's, not the trained weights'
    dev = DevSet(f"{sets}/dev", load_stats(f"{sets}/train/stats.npz"), 10, 10, 8)
    model = FHVAE(cfg.model)
    got = []
    for w in (avg, last):
        model.load_state_dict(w)
        got.append(dev.bound(model.eval(), torch.device("cpu"), seed=1)["bound"])
    assert recs[-1]["dev"]["bound"] == pytest.approx(got[0], abs=1e-3)
    assert abs(got[0] - got[1]) > 1e-3
    plain = str(sets / "plain")
    train(sets, plain)
    assert_same_weights(weights(plain, "last"), last)   # the average does not change the training itself
    with pytest.raises(ConfigError, match="ema_decay"):
        config.load_config(None, TINY + [("train.ema_decay", 1.0)])


def test_lr_schedule_warmup_then_cosine_then_constant():
    t = config.TrainConfig(lr_warmup_steps=4, lr_decay_steps=10, lr_final=0.1)
    got = [lr_scale(t, s) for s in range(16)]
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got[4] == pytest.approx(1.0) and got[9] == pytest.approx(0.55)   # half-way: (1 + 0.1) / 2
    assert got[14] == pytest.approx(0.1) and got[15] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(got[3:], got[4:]))
    assert lr_scale(config.TrainConfig(), 12345) == 1.0   # the paper: constant


def test_lr_schedule_sets_the_optimizer_rates(sets):
    exp = str(sets / "exp")
    tr_cfg = [("train.lr_decay_steps", 9), ("train.lr_final", 0.2), ("train.max_epochs", 3)]
    train(sets, exp, tr_cfg)
    opt = torch.load(os.path.join(ckpt.last_step_dir(os.path.join(exp, "checkpoints")), "model.pt"),
                     weights_only=True)["opt"]
    lr0 = config.TrainConfig().lr
    g = opt["param_groups"][0]
    assert g["base_lr"] == pytest.approx(lr0)
    assert g["lr"] == pytest.approx(lr0 * lr_scale(config.TrainConfig(lr_decay_steps=9, lr_final=0.2), 8))
    assert g["fused"] is True   # PyTorch's fused Adam on CPU (trainer.adam)


def test_hierarchical_with_k_equal_m_matches_flat(sets):
    # M = 12 sequences; within the first block both algorithms use the same segments, cache and loss
    # (flat with its cache started at the MAP estimates, as every hierarchical block is)
    over = [("train.seq_batch_size", 12), ("train.max_epochs", 1), ("train.epoch_steps", 2)]
    h, f = str(sets / "h"), str(sets / "f")
    train(sets, h, over)
    train(sets, f, over + [("train.sampling", "flat"), ("train.flat_cache_init", "map")])
    assert_same_weights(weights(h), weights(f))
    # with K < M they differ
    k4 = str(sets / "k4")
    train(sets, k4, [("train.max_epochs", 1), ("train.epoch_steps", 2)])
    assert not torch.equal(weights(h)["x_mu.weight"], weights(k4)["x_mu.weight"])


def _first_cache(sets, exp, overrides):
    """The cache after the first step's set-up: (its rows (K, D), the Trainer)."""
    cfg = config.load_config(None, TINY + list(overrides))
    d = str(sets)
    prepare_exp_dir(cfg, exp, f"{d}/train", f"{d}/dev", f"{d}/train/stats.npz")
    tr = Trainer(cfg, f"{d}/train", f"{d}/dev", exp)
    tr._prepare()
    data = tr.loader.get(0)
    tr._new_cache(data)
    tr.loader.close()
    return tr.cache.detach().clone(), tr, data


def test_flat_cache_starts_at_the_standard_normal_by_default_or_at_the_map_estimates(sets):
    """The 2017 code's flat training starts its M-row table at N(0, I) and learns it by gradient only;
    flat_cache_init=map starts it at the sequences' MAP estimates (the hierarchical reset)."""
    rand, tr, data = _first_cache(sets, str(sets / "r"), [("train.sampling", "flat")])
    assert rand.shape == (12, 4)
    torch.testing.assert_close(rand, torch.randn(12, 4, generator=torch.Generator().manual_seed(tr.seed)))
    from fhvae.train.trainer import map_cache
    mp, tr, data = _first_cache(sets, str(sets / "m"), [("train.sampling", "flat"), ("train.flat_cache_init", "map")])
    torch.testing.assert_close(mp, map_cache(tr.model, data, 10, tr.device))
    assert not torch.allclose(rand, mp)


def test_cache_optimizer_carry_keeps_the_adam_moments_across_blocks(sets):
    """reset: a fresh Adam for every block's cache; carry: the same Adam (moments and step count) with
    the rows set to the new block's MAP estimates, as the original code's single Adam."""
    for mode in ("reset", "carry"):
        _, tr, data = _first_cache(sets, str(sets / mode), [("train.cache_optimizer", mode)])
        tr.cache.grad = torch.ones_like(tr.cache)
        tr.cache_opt.step()
        opt, cache = tr.cache_opt, tr.cache
        tr._new_cache(data)
        from fhvae.train.trainer import map_cache
        torch.testing.assert_close(tr.cache.detach(), map_cache(tr.model, data, 10, tr.device))
        if mode == "reset":
            assert tr.cache_opt is not opt and not tr.cache_opt.state
        else:
            assert tr.cache_opt is opt and tr.cache is cache
            assert float(opt.state[cache]["step"]) == 1 and opt.state[cache]["exp_avg"].abs().sum() > 0
    with pytest.raises(ConfigError, match="cache_optimizer"):
        config.load_config(None, [("train.cache_optimizer", "keep")])


def test_changed_config_in_trained_exp_dir_is_refused(sets):
    exp = str(sets / "exp")
    train(sets, exp, [("train.max_epochs", 1)])
    with pytest.raises(ConfigError, match=r"differs in: train.lr \(was 0.001, now 0.5\), "
                                          r"train.seed \(was 1, now 3\); use --overwrite"):
        train(sets, exp, [("train.max_epochs", 1), ("train.lr", 0.5), ("train.seed", 3)])


def test_more_epochs_on_a_finished_run_continues_it(sets):
    ref = str(sets / "ref")
    train(sets, ref, [("train.max_epochs", 2)])
    exp = str(sets / "exp")
    assert train(sets, exp, [("train.max_epochs", 1)])["step"] == 3
    # the stopping rule is not listed
    with pytest.raises(ConfigError, match=r"differs in: train.lr \(was 0.001, now 0.5\); use --overwrite"):
        train(sets, exp, [("train.max_epochs", 2), ("train.lr", 0.5)])
    assert train(sets, exp, [("train.max_epochs", 2)])["step"] == 6
    assert_same_weights(weights(ref), weights(exp))
    assert config.read_exp_config(exp)[0].train.max_epochs == 2


def _nan_at(monkeypatch, steps):
    """Make the loss non-finite at the given (1-based) steps."""
    orig, n = FHVAE.loss, {"i": 0}

    def fake(*a, **k):
        loss, terms = orig(*a, **k)
        n["i"] += 1
        if n["i"] in steps:
            terms = dict(terms, kl_z1=terms["kl_z1"] * float("nan"))
            loss = loss * float("nan")
        return loss, terms
    monkeypatch.setattr(FHVAE, "loss", fake)


def test_nan_loss_stops_naming_step_and_term(sets, monkeypatch):
    _nan_at(monkeypatch, {2})
    with pytest.raises(TrainingError, match="non-finite loss at step 2.*kl_z1=nan"):
        train(sets, str(sets / "nan"))


def test_nan_loss_skip_policy_counts_batches(sets, monkeypatch):
    _nan_at(monkeypatch, {2, 4})
    s = train(sets, str(sets / "skip"), [("train.on_nonfinite", "skip")])
    assert s["skipped_batches"] == 2 and s["step"] == 9


def test_export_frame_counts_and_kaldi_readable(sets):
    exp = str(sets / "exp")
    train(sets, exp)
    out = str(sets / "export")
    summary = export(exp, str(sets / "train"), out, logvars=True)
    assert summary["utts"] == 12
    n2f = dict(line.split() for line in open(sets / "train" / "utt2num_frames"))
    z1 = kaldiio.load_scp(os.path.join(out, "z1.scp"))
    z2 = kaldiio.load_scp(os.path.join(out, "z2_logvar.scp"))
    for utt, n in n2f.items():
        assert z1[utt].shape == (int(n), 4) and z2[utt].shape == (int(n), 4)
    sv = kaldiio.load_scp(os.path.join(out, "svector.scp"))
    assert len(sv) == 12 and all(v.shape == (4,) for v in sv.values())
    # s-vectors are Kaldi float vectors (FV), not 1 x D matrices
    ark, off = open(os.path.join(out, "svector.scp")).readline().split()[1].rsplit(":", 1)
    with open(ark, "rb") as f:
        f.seek(int(off))
        assert f.read(4) == b"\0BFV"
    spk = kaldiio.load_scp(os.path.join(out, "spk_svector.scp"))
    assert sorted(spk) == ["spk00", "spk01", "spk02", "spk03"]
    np.testing.assert_allclose(spk["spk01"], np.mean([sv[f"spk01-u{i:02d}"] for i in range(3)], 0),
                               rtol=1e-5)
    assert open(os.path.join(out, "num_utts.ark")).read().splitlines()[0] == "spk00 3"
    # scp paths are absolute
    assert all(os.path.isabs(line.split()[1]) for line in open(os.path.join(out, "z1.scp")))
    # s-vectors only: the same s-vectors, no frame-level outputs
    out2 = str(sets / "export2")
    export(exp, str(sets / "train"), out2, svectors_only=True)
    assert not os.path.exists(os.path.join(out2, "z1.scp"))
    sv2 = kaldiio.load_scp(os.path.join(out2, "svector.scp"))
    for k in sv:
        np.testing.assert_allclose(sv2[k], sv[k], rtol=1e-5, atol=1e-6)
    assert summary["svector_shift"] == 10   # TINY's data.svector_shift, read from the exp's config.yaml
    # --svector-shift overrides the exp's config: other segments, other s-vectors; < 1 is refused
    out3 = str(sets / "export3")
    assert export(exp, str(sets / "train"), out3, svectors_only=True, svector_shift=3)["svector_shift"] == 3
    sv3 = kaldiio.load_scp(os.path.join(out3, "svector.scp"))
    assert not any(np.allclose(sv3[k], sv[k]) for k in sv)
    with pytest.raises(ConfigError, match="svector_shift must be >= 1"):
        export(exp, str(sets / "train"), str(sets / "export4"), svector_shift=0)


@pytest.mark.slow
def test_sigkill_and_restart_gives_same_model(sets):
    """Kill -9 a real fhvae-train process after its first checkpoint, restart: same final model."""
    d = str(sets)
    base = [sys.executable, "-m", "fhvae.bin.train", "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev"]
    over = [a for k, v in TINY + [("train.max_epochs", 4)] for a in (f"--{k}", str(v))]
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    subprocess.run(base + ["--exp-dir", f"{d}/ref"] + over, check=True, env=env, capture_output=True)
    exp = f"{d}/killed"
    kills = 0
    for _ in range(3):
        p = subprocess.Popen(base + ["--exp-dir", exp] + over, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        last = os.path.join(exp, "checkpoints", "last")
        t0 = time.time()
        start = open(last).read() if os.path.exists(last) else ""
        while p.poll() is None and time.time() - t0 < 60:
            if os.path.exists(last) and open(last).read() != start:
                time.sleep(0.05)
                break
            time.sleep(0.01)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    subprocess.run(base + ["--exp-dir", exp] + over, check=True, env=env, capture_output=True)
    assert_same_weights(weights(f"{d}/ref"), weights(exp))
    assert_same_weights(weights(f"{d}/ref", "best"), weights(exp, "best"))


def test_full_disk_cli_message(sets):
    """A file-size limit (as a full disk): one clear line naming the checkpoint, no traceback, and no
    checkpoint committed (the step dir with partial parts is never named by 'last')."""
    d = str(sets)
    over = [a for k, v in TINY for a in (f"--{k}", str(v))]
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
            "from fhvae.bin.train import main; main(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", code, "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev",
                        "--exp-dir", f"{d}/full"] + over, env=dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1"),
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "cannot write checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert ckpt.last_step_dir(os.path.join(d, "full", "checkpoints")) is None


def test_full_disk_keeps_previous_checkpoint_and_resumes(sets, monkeypatch):
    ref = str(sets / "ref")
    train(sets, ref)
    exp = str(sets / "full")
    orig = ckpt.atomic_open

    def full_disk_open(path, mode="w", **kw):
        if "step00000006" in str(path):
            raise OSError(28, "No space left on device", str(path))
        return orig(path, mode, **kw)

    monkeypatch.setattr(ckpt, "atomic_open", full_disk_open)
    with pytest.raises(FhvaeError, match="cannot write checkpoint .*No space left.*previous checkpoint is kept"):
        train(sets, exp)
    monkeypatch.undo()
    last = ckpt.last_step_dir(os.path.join(exp, "checkpoints"))
    assert last.endswith("step00000003")
    ckpt.load_part(last, "model")   # intact and readable
    train(sets, exp)
    assert_same_weights(weights(ref), weights(exp))



def test_dev_max_utts_bounds_the_dev_set(sets):
    from fhvae.features.stats import load_stats
    from fhvae.train.trainer import DevSet
    stats = load_stats(str(sets / "train" / "stats.npz"))
    full = DevSet(str(sets / "dev"), stats, 10, 10, 8)
    part = DevSet(str(sets / "dev"), stats, 10, 10, 8, max_utts=2, seed=1)
    assert full.n_seqs == 4 and part.n_seqs == 2 and len(part.x) < len(full.x)
    again = DevSet(str(sets / "dev"), stats, 10, 10, 8, max_utts=2, seed=1)
    assert torch.equal(part.x, again.x)
