"""Seed systems: vq z1 bottleneck (+ codebook lr group, k-means re-init, usage), time jitter,
autoregressive decoder, Z-forcing -- model pieces and tiny training runs."""
import json
import math
import os

import kaldiio
import numpy as np
import pytest
import torch

from fhvae import config
from fhvae.errors import ConfigError
from fhvae.export import export
from fhvae.models import losses
from fhvae.models.ar import ARDecoder, ZForcing
from fhvae.config import ModelConfig, TrainConfig
from fhvae.models.ar import weight as zf_weight
from fhvae.models.fhvae import FHVAE
from fhvae.models.jitter import jitter_starts
from fhvae.models.vq import Reservoir, VectorQuantizer, usage
from fhvae.train.trainer import Trainer
from tests.test_trainer import assert_same_weights, sets, train, weights  # noqa: F401 (fixture)

SMALL = dict(feat_dim=6, z1_dim=4, z2_dim=4, z1_hidden=8, z2_hidden=8, dec_hidden=8, vq_codes=5)


# ---- vq ---------------------------------------------------------------------------------------

def test_vq_picks_the_nearest_code_and_passes_gradients_straight_through():
    vq = VectorQuantizer(2, 3, commitment=0.25, batchnorm=False)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
        vq.proj.weight.copy_(torch.eye(2))
        vq.proj.bias.zero_()
    h = torch.tensor([[0.9, 0.2], [0.1, 1.5], [-0.3, 0.1]], requires_grad=True)
    out = vq(h)
    assert out["codes"].tolist() == [1, 2, 0]
    assert torch.equal(out["z1"], vq.codebook[[1, 2, 0]].detach())
    # ||sg(ze) - e||^2 + 0.25 ||ze - sg(e)||^2 = 1.25 * squared distance
    d2 = torch.tensor([0.01 + 0.04, 0.01 + 0.25, 0.09 + 0.01])
    assert torch.allclose(out["loss"], 1.25 * d2)
    (out["z1"].sum() + 0 * out["loss"].sum()).backward()
    assert torch.allclose(h.grad, torch.ones_like(h))   # straight-through: d z1 / d ze = I
    vq.zero_grad()
    h.grad = None
    vq(h)["loss"].sum().backward()
    # commitment: d/dze 0.25 ||ze - e||^2 = 0.5 (ze - e); codebook: d/de ||ze - e||^2 = 2 (e - ze)
    e = vq.codebook.detach()[[1, 2, 0]]
    assert torch.allclose(h.grad, 0.5 * (h.detach() - e))
    assert torch.allclose(vq.codebook.grad[1], 2 * (e[0] - h.detach()[0]))


def test_vq_kl_is_log_k_in_the_bound():
    m = FHVAE(ModelConfig(**SMALL, z1_bottleneck="vq"))
    x = torch.randn(3, 10, 6)
    out = m(x)
    assert out["z1_logvar"] is None and m.z1_logvar is None
    t = m.segment_terms(out, x, torch.zeros(3, 4), torch.ones(3))
    assert torch.allclose(t["kl_z1"], torch.full((3,), math.log(5)))
    loss, terms = m.loss(out, x, torch.zeros(2, 4, requires_grad=True), torch.tensor([0, 1, 0]),
                         torch.ones(3), TrainConfig())
    assert torch.allclose(loss, (-(terms["bound"] + 10 * terms["disc"]) + terms["vq"]).mean())
    m.eval()
    z1, lv = m.encode_z1(x, m.encode_z2(x)[0])
    assert lv is None
    assert all(any(torch.equal(r, c) for c in m.vq.codebook) for r in z1)


def test_usage_entropy_and_perplexity():
    u = usage([5, 5, 5, 5])
    assert u["usage"] == pytest.approx(1.0) and u["perplexity"] == pytest.approx(4.0) and u["used"] == 4
    u = usage([0, 9, 0, 0])
    assert u["usage"] == 0.0 and u["perplexity"] == 1.0 and u["used"] == 1
    u = usage([1, 1, 2, 0])   # p = 1/4, 1/4, 1/2
    assert u["entropy"] == pytest.approx(1.5 * math.log(2)) and u["usage"] == pytest.approx(0.75)


def test_reservoir_is_a_uniform_deterministic_sample():
    r = Reservoir(100, 1)
    r.add(np.arange(60, dtype=np.float32)[:, None], seed=0)
    assert len(r) == 60 and r.data[:60, 0].tolist() == list(range(60))
    for i in range(1, 100):   # 60 + 99 * 100 rows
        r.add(np.arange(60 + (i - 1) * 100, 60 + i * 100, dtype=np.float32)[:, None], seed=i)
    assert len(r) == 100 and r.seen == 9960
    assert len(np.unique(r.data[:, 0])) == 100
    # uniform over everything seen, not only the last rows: mean near 9960 / 2
    assert abs(r.data[:, 0].mean() - 4980) < 800
    r2 = Reservoir(100, 1)
    r2.load_state_dict(r.state_dict())
    assert np.array_equal(r2.data, r.data) and r2.seen == r.seen
    r.clear()
    assert len(r) == 0


def test_kmeans_reinit_finds_the_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    data = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres])
    vq = VectorQuantizer(2, 4, batchnorm=False)
    inertia = vq.reinit(data, seed=0)
    got = vq.codebook.detach().numpy()
    for c in centres:
        assert np.min(np.linalg.norm(got - c, axis=1)) < 0.1
    assert inertia < 0.05


# ---- time jitter ----------------------------------------------------------------------------

def test_jitter_moves_a_share_p_of_starts_to_a_neighbour_within_the_sequence():
    rng = np.random.default_rng(0)
    starts = np.full(10000, 20)
    new = jitter_starts(starts, np.full(10000, 60), 10, 0.12, 8, rng)
    assert set(np.unique(new)) == {12, 20, 28}
    assert abs(np.mean(new != 20) - 0.12) < 0.01
    assert abs(np.mean(new == 12) - np.mean(new == 28)) < 0.01
    # clipped to [0, L - seg_len]
    edge = jitter_starts(np.array([0, 3, 50]), np.array([60, 60, 60]), 10, 0.999999, 8, np.random.default_rng(1))
    assert (edge >= 0).all() and (edge <= 50).all()
    assert np.array_equal(jitter_starts(starts[:5], np.full(5, 60), 10, 0.0, 8, rng), starts[:5])


def test_model_reads_the_jittered_segment_only_in_the_z1_encoder():
    torch.manual_seed(0)
    m = FHVAE(ModelConfig(**SMALL))
    x, other = torch.randn(2, 10, 6), torch.randn(2, 10, 6)
    a, b = m(x, sample=False), m(x, sample=False, x_z1=other)
    assert torch.equal(a["z2_mu"], b["z2_mu"])
    assert not torch.allclose(a["z1_mu"], b["z1_mu"])
    assert torch.allclose(b["z1_mu"], m.encode_z1(other, b["z2_mu"])[0], atol=1e-6)


# ---- autoregressive decoder, Z-forcing --------------------------------------------------------

def test_ar_decoder_is_causal_and_starts_as_the_plain_decoder():
    torch.manual_seed(0)
    ar = ARDecoder(6, 8, channels=4, layers=3)
    torch.nn.init.normal_(ar.out.weight)
    x, d = torch.randn(2, 12, 6), torch.randn(2, 8, 12)
    mu, _ = ar(x, d)
    x2 = x.clone()
    x2[:, 5] += 1.0
    mu2, _ = ar(x2, d)
    assert torch.equal(mu[:, :6], mu2[:, :6])       # frames <= 5 do not see x_5
    assert not torch.allclose(mu[:, 6], mu2[:, 6])  # frame 6 does
    assert ar.receptive_field == 8
    # zero-initialized output layer: the FHVAE with decoder=ar starts as the plain one
    torch.manual_seed(1)
    plain = FHVAE(ModelConfig(**SMALL))
    torch.manual_seed(1)
    arm = FHVAE(ModelConfig(**SMALL, decoder="ar"))
    xx = torch.randn(3, 10, 6)
    assert torch.allclose(plain(xx, sample=False)["x_mu"], arm(xx, sample=False)["x_mu"], atol=1e-6)


@pytest.mark.parametrize("layers", [4, 2])   # receptive field 16 (> T) and 4 (< T: windowed generation)
def test_ar_generation_agrees_with_teacher_forcing_on_its_own_output(layers):
    torch.manual_seed(0)
    m = FHVAE(ModelConfig(**SMALL, decoder="ar", ar_layers=layers)).eval()
    torch.nn.init.normal_(m.ar.out.weight, std=0.3)
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    gen, _ = m.decode(z1, z2, 12)
    forced, _ = m.decode(z1, z2, 12, x=gen)
    assert torch.allclose(gen, forced, atol=1e-5)


def test_zforcing_stops_gradients_where_it_should():
    torch.manual_seed(0)
    zf = ZForcing(6, 8, hidden=5)
    x, d = torch.randn(2, 10, 6), torch.randn(2, 8, 10, requires_grad=True)
    aux, back = zf(x, d)
    assert aux.shape == back.shape == (2,)
    aux.sum().backward(retain_graph=True)
    assert all(p.grad is None for p in zf.lstm.parameters())   # sg(b): aux does not train the LSTM
    assert d.grad is not None and d.grad.abs().sum() > 0
    d.grad = None
    back.sum().backward()
    assert d.grad is None or d.grad.abs().sum() == 0            # back does not train the latents
    assert all(p.grad is not None for p in zf.lstm.parameters())
    # b_t reads x_t..x_T only
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert torch.equal(zf.backward_states(x)[:, 1:], zf.backward_states(x2)[:, 1:])


@pytest.mark.parametrize("kw", [dict(z1_bottleneck="vq"), dict(decoder="ar", zforcing=True)])
def test_fast_cpu_path_matches_nn_lstm_for_seed_systems(kw):
    torch.manual_seed(0)
    fast = FHVAE(ModelConfig(**SMALL, **kw))
    plain = FHVAE(ModelConfig(**SMALL, **kw), plain=True)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(4, 10, 6)
    outs = []
    for m in (fast, plain):
        torch.manual_seed(3)
        out = m(x)
        loss, _ = m.loss(out, x, torch.zeros(2, 4), torch.tensor([0, 1, 0, 1]), torch.ones(4),
                         TrainConfig(zforcing_weight=0.5, zforcing_anneal_steps=0))
        loss.backward()
        outs.append((loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys()
    for k in outs[0][1]:
        assert torch.allclose(outs[0][1][k], outs[1][1][k], rtol=1e-3, atol=1e-5), k


def test_config_rejects_bad_seed_system_values():
    for key, value in [("model.z1_bottleneck", "gumbel"), ("model.decoder", "wavenet"),
                       ("train.z1_jitter", 1.0), ("train.vq_lr_mult", 0)]:
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            config.load_config(None, [(key, value)])
    with pytest.raises(ConfigError, match="vq_reservoir"):
        config.load_config(None, [("model.z1_bottleneck", "vq"), ("train.vq_reservoir", 10)])


# ---- training runs ----------------------------------------------------------------------------

VQ = [("model.z1_bottleneck", "vq"), ("model.vq_codes", 8), ("train.vq_reservoir", 40),
      ("train.vq_reinit_epochs", 2)]


def test_vq_training_logs_usage_reinitializes_and_exports_codes(sets):
    exp = str(sets / "vq")
    train(sets, exp, VQ)
    recs = [json.loads(x) for x in open(os.path.join(exp, "metrics.jsonl"))]
    for r in recs:
        for part in ("train", "dev"):
            assert 0 <= r[part]["vq_usage"] <= 1 and 1 <= r[part]["vq_perplexity"] <= 8
            assert 1 <= r[part]["vq_used"] <= 8
    assert ["vq_reinit" in r for r in recs] == [True, True, False]   # epochs 1..vq_reinit_epochs
    cb = weights(exp, "best")["vq.codebook"]   # export reads the best model
    out = str(sets / "vq_export")
    export(exp, str(sets / "dev"), out)
    for _, z1 in kaldiio.load_scp(os.path.join(out, "z1.scp")).items():
        diff = (torch.tensor(np.asarray(z1))[:, None] - cb[None]).abs().amax(-1).min(1).values
        assert float(diff.max()) == 0.0   # every exported z1 frame is a code vector
    with pytest.raises(ConfigError, match="log-variance"):
        export(exp, str(sets / "dev"), out, logvars=True)


def test_vq_codebook_group_runs_at_the_lr_multiple(sets):
    cfg = config.load_config(None, __import__("tests.test_trainer", fromlist=["TINY"]).TINY + VQ
                             + [("train.vq_lr_mult", 10.0), ("train.lr", 1e-3)])
    d = str(sets)
    tr = Trainer(cfg, f"{d}/train", f"{d}/dev", str(sets / "g"))
    tr._prepare()
    groups = tr.opt.param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert groups[1]["params"] == [tr.model.vq.codebook]
    assert not any(p is tr.model.vq.codebook for p in groups[0]["params"])
    tr.loader.close()
    tr.utts.close()


def test_vq_resume_after_interruption_gives_same_model(sets, monkeypatch):
    ref = str(sets / "ref")
    train(sets, ref, VQ)
    exp = str(sets / "int")
    orig, calls = Trainer._step, {"n": 0}

    def dying_step(self, data, st):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return orig(self, data, st)

    monkeypatch.setattr(Trainer, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(sets, exp, VQ)
    monkeypatch.setattr(Trainer, "_step", orig)
    train(sets, exp, VQ)
    assert_same_weights(weights(ref), weights(exp))


def test_ar_zforcing_jitter_training_runs_and_logs_terms(sets):
    exp = str(sets / "arzf")
    train(sets, exp, [("model.decoder", "ar"), ("model.zforcing", True), ("train.z1_jitter", 0.5),
                      ("train.zforcing_anneal_steps", 6)])
    recs = [json.loads(x) for x in open(os.path.join(exp, "metrics.jsonl"))]
    assert all(np.isfinite(r["train"]["zf_aux"]) and np.isfinite(r["train"]["zf_back"]) for r in recs)
    assert all(np.isfinite(r["dev"]["bound"]) for r in recs)
    w = weights(exp)
    assert any(k.startswith("ar.") for k in w) and any(k.startswith("zf.") for k in w)


def test_zforcing_weight_ramps_linearly():
    cfg = config.load_config(None, [("train.zforcing_weight", 2.0), ("train.zforcing_anneal_steps", 100)])
    assert [zf_weight(cfg.train, s) for s in (0, 50, 100, 1000)] == [0.0, 1.0, 2.0, 2.0]


def test_seed_table_collects_the_result_files(tmp_path, repo_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location("seed_table", os.path.join(repo_root, "egs/mini/v1/local/seed_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    exp = tmp_path / "exp"
    (exp / "vq" / "abx" / "z1").mkdir(parents=True)
    (exp / "fbank" / "abx").mkdir(parents=True)
    rec = {"step": 800, "train": {"vq_usage": 0.5, "vq_perplexity": 16.0, "vq_used": 40},
           "dev": {"bound": -600.0, "log_px": -550.0, "kl_z1": math.log(256), "kl_z2": 20.0}}
    (exp / "vq" / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    (exp / "vq" / "abx" / "z1" / "results.json").write_text(json.dumps({"within": 12.5, "across": 15.25}))
    (exp / "fbank" / "abx" / "results.json").write_text(json.dumps({"within": 18.7, "across": 32.5}))
    out = tmp_path / "t.md"
    mod.main(["--exp", str(exp), "--systems", "gauss vq", "--out", str(out), "--plot", str(tmp_path / "t.png")])
    text = out.read_text()
    assert "| vq | 800 | -600.0 | -550.0 | 5.55 | 20.00 | 0.50 / 16 / 40 |" in text
    assert "| vq | 12.50 | 15.25 | - |" in text and "| fbank (input) | 18.70 | 32.50 | - |" in text
    assert "| gauss | - | - |" in text   # no results yet
    assert os.path.getsize(tmp_path / "t.png") > 1000


def test_vq_reinit_restarts_the_codebooks_moving_average(sets):
    """With train.ema_decay, a k-means re-initialized codebook replaces its moving average (which would
    otherwise interpolate the old codes and the new, unrelated ones)."""
    cfg = config.load_config(None, __import__("tests.test_trainer", fromlist=["TINY"]).TINY + VQ
                             + [("train.ema_decay", 0.9)])
    d = str(sets)
    tr = Trainer(cfg, f"{d}/train", f"{d}/dev", str(sets / "ema"))
    tr._prepare()
    vq = tr.model.vq
    vq.reservoir.add(torch.randn(60, 4), seed=0)
    rec = {"train": {}}
    reinit = vq.end_epoch(1, rec, tr.opt, tr.dist, tr.seed)
    assert reinit == [vq.codebook] and "vq_reinit" in rec
    assert not torch.equal(tr.ema.module.vq.codebook, vq.codebook)
    for p in reinit:
        tr._resync_average(p)
    assert torch.equal(tr.ema.module.vq.codebook, vq.codebook)
    tr.loader.close()
    tr.utts.close()
