"""Labels (CTM -> frames), probes, t-SNE/recombination plots and conversion on tiny synthetic sets."""
import json
import logging
import os

import kaldiio
import matplotlib.image
import numpy as np
import pytest
import torch

from fhvae import config
from fhvae.errors import DataError
from fhvae.eval import labels as lab
from fhvae.eval import convert as convert_mod
from fhvae.eval import plots, probes
from fhvae import infer
from fhvae.datadir import subset_data_dir
from fhvae.export import export
from fhvae.infer import load_model
from fhvae.io.tables import write_kv
from fhvae.models.fhvae import FHVAE
from fhvae.train import checkpoint as ckpt
from fhvae.train.expdir import prepare_exp_dir
from tests.fakedata import make_feats_dir, write_stats

TINY = [("model.feat_dim", 8), ("data.seg_len", 10), ("data.dev_seg_shift", 10),
        ("data.svector_shift", 10), ("model.z1_dim", 4), ("model.z2_dim", 4), ("model.z1_hidden", 16),
        ("model.z2_hidden", 16), ("model.dec_hidden", 16)]
PHONES = {"sil": "SIL", "aa": "SON", "m": "SON", "s": "OBS", "t": "OBS"}


def add_labels(path, feats, seed):
    """utt2cond (by utterance index), phones.ctm (random phones covering each utterance)."""
    rng = np.random.default_rng(seed)
    write_kv(os.path.join(path, "utt2cond"), {u: ["clean", "noise"][i % 2] for i, u in enumerate(sorted(feats))})
    lines = []
    for u in sorted(feats):
        t, end = 0.0, len(feats[u]) * 0.01 + 0.015
        while t < end:
            d = round(float(rng.uniform(0.03, 0.12)), 2)
            lines.append(f"{u} 1 {t:.2f} {d:.2f} {rng.choice(list(PHONES))}\n")
            t = round(t + d, 2)
    rng.shuffle(lines)  # CTMs need not be sorted
    with open(os.path.join(path, "phones.ctm"), "w") as f:
        f.writelines(lines)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """train/dev/test sets with labels, an exp dir with a random-weight tiny model, test export."""
    d = tmp_path_factory.mktemp("pp")
    # train and dev: different utterances of the same 3 speakers
    feats = make_feats_dir(str(d / "all"), n_spk=3, utts_per_spk=5, min_len=40, max_len=70, seed=0)
    train = {u: x for u, x in feats.items() if u[-1] in "012"}
    dev = {u: x for u, x in feats.items() if u[-1] in "34"}
    subset_data_dir(str(d / "all"), str(d / "train"), utts=train)
    subset_data_dir(str(d / "all"), str(d / "dev"), utts=dev)
    test = make_feats_dir(str(d / "test"), n_spk=4, utts_per_spk=2, min_len=25, max_len=60, seed=2,
                          spk_offset=10)
    for name, feats, seed in (("train", train, 0), ("dev", dev, 1), ("test", test, 2)):
        add_labels(str(d / name), feats, seed)
    write_stats(str(d / "train" / "stats.npz"), train)
    with open(d / "phone_classes.txt", "w") as f:
        f.writelines(f"{p} {c}\n" for p, c in PHONES.items())
    cfg = config.load_config(None, TINY)
    exp = str(d / "exp")
    prepare_exp_dir(cfg, exp, str(d / "train"), str(d / "dev"), str(d / "train" / "stats.npz"))
    torch.manual_seed(0)
    ckpt.save_best(os.path.join(exp, "checkpoints"), FHVAE(cfg.model).state_dict(), {"step": 0})
    export(exp, str(d / "test"), os.path.join(exp, "export", "test"))
    export(exp, str(d / "train"), os.path.join(exp, "export", "train"))
    return d, exp, {"train": train, "dev": dev, "test": test}


# ------------------------------------------------------------------------------------------ labels

def test_frame_labels_use_frame_centres():
    iv = [(0.0, 0.1, "sil"), (0.1, 0.25, "aa"), (0.25, 0.3, "s")]
    got = lab.frame_labels(iv, 32).tolist()
    # centre of frame t: t * 0.01 + 0.0125 s
    assert got == ["sil"] * 9 + ["aa"] * 15 + ["s"] * 5 + [None] * 3
    # a gap between phones and a phone shorter than a frame step
    got = lab.frame_labels([(0.0, 0.05, "a"), (0.104, 0.11, "b"), (0.1, 0.104, "c")], 12).tolist()
    assert got == ["a"] * 4 + [None] * 5 + ["c"] + [None] * 2


def test_read_ctm_and_phone_classes(tmp_path):
    p = tmp_path / "phones.ctm"
    p.write_text("u2 1 0.10 0.05 s\nu1 1 0.20 0.10 aa\nu1 1 0.00 0.20 sil 0.9\n")
    assert lab.read_ctm(str(p)) == {"u2": [(0.1, pytest.approx(0.15), "s")],
                                    "u1": [(0.0, 0.2, "sil"), (0.2, pytest.approx(0.3), "aa")]}
    p.write_text("u1 1 0.00 0.20 sil\nu1 1 0.20 x aa\n")
    with pytest.raises(DataError, match=r"phones.ctm:2: .*numbers"):
        lab.read_ctm(str(p))
    p.write_text("u1 1 0.00 0.20\n")
    with pytest.raises(DataError, match=r"phones.ctm:1"):
        lab.read_ctm(str(p))
    c = tmp_path / "classes"
    c.write_text("sil SIL\naa SON\n")
    assert lab.read_phone_classes(str(c)) == {"sil": "SIL", "aa": "SON"}
    c.write_text("sil SIL\nsil SON\n")
    with pytest.raises(DataError, match=r"classes:2: duplicate key 'sil'"):
        lab.read_phone_classes(str(c))


def test_sample_segments_are_valid_and_reproducible():
    frames = {"b": 45, "a": 20, "c": 9}
    segs = lab.sample_segments(frames, 10, 100)
    assert segs == [("a", 0), ("a", 10), ("b", 0), ("b", 10), ("b", 20), ("b", 30)]
    few = lab.sample_segments(frames, 10, 3, seed=1)
    assert len(few) == 3 and set(few) <= set(segs) and few == lab.sample_segments(frames, 10, 3, seed=1)
    with pytest.raises(DataError, match="at least 50 frames"):
        lab.sample_segments(frames, 50, 10)


def test_segment_labels_at_centre_frames(tmp_path, caplog):
    make_feats_dir(str(tmp_path), n_spk=1, utts_per_spk=1, min_len=40, max_len=40)
    (tmp_path / "phones.ctm").write_text("spk00-u00 1 0.00 0.10 sil\nspk00-u00 1 0.10 0.20 s\n"
                                         "spk00-u00 1 0.30 0.10 zz\n")
    (tmp_path / "classes").write_text("sil SIL\ns OBS\n")
    with caplog.at_level(logging.INFO):
        sl = lab.SetLabels(str(tmp_path), str(tmp_path / "classes"))
    assert sl.factors == ["speaker", "phone_class", "phone"]
    assert "utt2cond not found: skipping the condition factor" in caplog.text
    assert "have no class (e.g. 'zz')" in caplog.text
    # centres of 10-frame segments at 0, 10, 30: frames 4 (sil), 14 (s), 34 (zz, no class)
    y = sl.segment_labels([("spk00-u00", 0), ("spk00-u00", 10), ("spk00-u00", 30)], 10)
    assert y["phone"].tolist() == ["sil", "s", "zz"]
    assert y["phone_class"].tolist() == ["SIL", "OBS", None]
    assert y["speaker"].tolist() == ["spk00"] * 3


# ------------------------------------------------------------------------------------------ probes

def test_probe_table_separates_decodable_from_not():
    rng = np.random.default_rng(0)

    def make(n):
        a = rng.integers(0, 4, n)   # coded in input "x" only
        b = rng.integers(0, 3, n)   # coded in input "y" only
        x = np.eye(4)[a] * 3 + rng.normal(size=(n, 4)) * 0.5
        y = np.eye(3)[b] * 3 + rng.normal(size=(n, 3)) * 0.5
        labels = {"A": a.astype(str).astype(object), "B": b.astype(str).astype(object)}
        labels["A"][:5] = None  # unlabelled segments are left out
        return {"x": np.c_[x, rng.normal(size=(n, 2))], "y": y}, labels

    res = probes.probe_table(*make(400), *make(300))
    assert set(res) == {"A", "B"}
    assert res["A"]["x"] > 0.95 and res["A"]["y"] < res["A"]["chance"] + 0.12
    assert res["B"]["y"] > 0.95 and res["B"]["x"] < res["B"]["chance"] + 0.12
    assert res["A"]["n_train"] == 395 and res["A"]["n_test"] == 295 and res["A"]["n_classes"] == 4
    assert 0.2 < res["A"]["chance"] < 0.35
    md = probes.format_table(res, inputs=("x", "y"))
    assert md.splitlines()[0] == "| factor | x | y | chance | classes | test segments |"
    cells = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert cells == ["A", f"{100 * res['A']['x']:.1f}", f"{100 * res['A']['y']:.1f}",
                     f"{100 * res['A']['chance']:.1f}", "4", "295"]


def test_probe_table_leaves_out_unseen_test_labels_and_single_class_factors():
    x = {"in": np.arange(20, dtype=float)[:, None]}
    ytr = {"spk": np.array(["a"] * 10 + ["b"] * 10, dtype=object), "one": np.array(["c"] * 20, dtype=object)}
    yte = {"spk": np.array(["a"] * 5 + ["b"] * 5 + ["z"] * 10, dtype=object), "one": ytr["one"]}
    res = probes.probe_table(x, ytr, x, yte)
    assert list(res) == ["spk"] and res["spk"]["n_test"] == 10
    assert res["spk"]["chance"] == 0.5


def test_chance_level_uses_training_majority():
    assert probes.chance_level(np.array(["a", "a", "b"]), np.array(["b", "b", "a", "b"])) == 0.25


def test_run_probes_writes_json_and_table(setup, capsys):
    from fhvae.bin import probe
    d, exp, _ = setup
    out = d / "probes"
    with pytest.raises(SystemExit) as e:
        probe.main(["--exp-dir", exp, "--train-dir", str(d / "train"), "--test-dir", str(d / "dev"),
                    "--phone-classes", str(d / "phone_classes.txt"), "--out-dir", str(out),
                    "--max-segments", "60"])
    assert e.value.code == 0
    res = json.loads((out / "probes.json").read_text())
    assert list(res) == ["speaker", "condition", "phone_class", "phone"]
    for row in res.values():
        assert set(row) == {"fbank", "z1", "z2", "chance", "n_train", "n_test", "n_classes"}
        assert all(0 <= row[k] <= 1 for k in ("fbank", "z1", "z2", "chance"))
    assert res["speaker"]["n_classes"] == 3 and res["phone_class"]["n_classes"] == 3
    # speakers' feature means differ by ~2 std: the fbank reference must find them
    assert res["speaker"]["fbank"] > 0.8
    printed = capsys.readouterr().out
    assert "| speaker |" in printed and printed in (out / "probes.md").read_text()


# ------------------------------------------------------------------------------------------- plots

def assert_png(path):
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0  # not blank


def test_tsne_plots_and_recombination(setup):
    from fhvae.bin import plot
    d, exp, _ = setup
    out = d / "plots"
    with pytest.raises(SystemExit) as e:
        plot.main(["--exp-dir", exp, "--data-dir", str(d / "test"), "--phone-classes",
                   str(d / "phone_classes.txt"), "--out-dir", str(out), "--max-segments", "40",
                   "--recombine-n", "3"])
    assert e.value.code == 0
    names = [f"tsne_{z}_{f}.png" for z in ("z1", "z2") for f in ("speaker", "condition", "phone")]
    for n in names + ["tsne_grid.png", "recombination.png"]:
        assert_png(out / n)


def test_tsne_skips_factors_without_labels(setup, tmp_path, caplog):
    d, exp, feats = setup
    bare = tmp_path / "bare"  # only utt2spk + features: no utt2cond, no phones.ctm
    make_feats_dir(str(bare), n_spk=4, utts_per_spk=2, min_len=25, max_len=60, seed=2, spk_offset=10)
    with caplog.at_level(logging.INFO):
        written = plots.plot_tsne(str(bare), os.path.join(exp, "export", "test"), str(tmp_path / "out"),
                                  seg_len=10, phone_classes=str(d / "phone_classes.txt"), max_segments=30)
    assert sorted(os.path.basename(p) for p in written) == ["tsne_grid.png", "tsne_z1_speaker.png",
                                                           "tsne_z2_speaker.png"]
    assert "utt2cond not found: skipping the condition factor" in caplog.text
    assert "phones.ctm not found: skipping the phone and phone_class factors" in caplog.text
    assert_png(tmp_path / "out" / "tsne_grid.png")


def _encode(model, x):
    """Posterior means (z1, z2) of segments x as numpy."""
    z = infer.encode(model, x)
    return z["z1_mu"].numpy(), z["z2_mu"].numpy()


def test_tsne_uses_exported_latents_at_segment_centres(setup):
    d, exp, _ = setup
    ex = os.path.join(exp, "export", "test")
    segs = [("spk10-u00", 0), ("spk10-u00", 10)]
    z = plots.read_export_at(ex, segs, 10)
    ref = kaldiio.load_scp(os.path.join(ex, "z1.scp"))["spk10-u00"]
    np.testing.assert_array_equal(z["z1"], ref[[4, 14]])
    # ... which are the latents of exactly those segments
    model, cfg, stats = load_model(exp)
    x = probes.read_segments(str(d / "test" / "feats.scp"), segs, 10, stats)
    z1, z2 = _encode(model, x)
    np.testing.assert_allclose(z["z1"], z1, atol=1e-5)
    np.testing.assert_allclose(z["z2"], z2, atol=1e-5)


def test_recombine_pairs_z1_of_rows_with_z2_of_columns(setup):
    d, exp, _ = setup
    model, cfg, stats = load_model(exp)
    x = probes.read_segments(str(d / "test" / "feats.scp"), [("spk10-u00", 0), ("spk11-u00", 0),
                                                             ("spk12-u00", 0), ("spk13-u00", 0)], 10, stats)
    grid = plots.recombine(model, x[:2], x[2:])
    assert grid.shape == (2, 2, 10, 8)
    z1, z2 = _encode(model, x)
    np.testing.assert_allclose(grid[0, 1], infer.decode(model, z1[[0]], z2[[3]], 10)[0], atol=1e-5)
    np.testing.assert_allclose(grid[1, 0], infer.decode(model, z1[[1]], z2[[2]], 10)[0], atol=1e-5)


def test_pick_diverse_covers_speakers_and_conditions_first():
    segs = [("a1", 0), ("a2", 0), ("a3", 0), ("b1", 0), ("c1", 0)]
    spk = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "c1": "c"}
    cond = {"a1": "clean", "a2": "noise", "a3": "tel", "b1": "clean", "c1": "clean"}
    for seed in range(5):
        got = plots.pick_diverse(segs, {"speaker": spk, "condition": cond}, 3, np.random.default_rng(seed))
        assert len({u for u, _ in got}) == 3 and {spk[u] for u, _ in got} == {"a", "b", "c"}
        # 4 picks: all three speakers, and two of them from a's utterances (new conditions)
        got = plots.pick_diverse(segs, {"speaker": spk, "condition": cond}, 4, np.random.default_rng(seed))
        assert {spk[u] for u, _ in got} == {"a", "b", "c"} and len({u for u, _ in got}) == 4


# -------------------------------------------------------------------------------------- conversion

def test_convert_writes_same_frame_counts(setup, tmp_path):
    from fhvae.bin import convert
    d, exp, feats = setup
    sv = os.path.join(exp, "export", "train", "spk_svector.scp")
    for mode in ("segment", "frame"):
        out = tmp_path / mode
        with pytest.raises(SystemExit) as e:
            convert.main(["--exp-dir", exp, "--data-dir", str(d / "test"), "--target-spk", "spk01",
                          "--svectors", sv, "--out-dir", str(out), "--windows", mode])
        assert e.value.code == 0
        got = dict(kaldiio.load_scp(str(out / "feats.scp")).items())
        assert sorted(got) == sorted(feats["test"])
        for u, x in feats["test"].items():
            assert got[u].shape == x.shape and np.isfinite(got[u]).all()
        assert (out / "utt2tgt").read_text().splitlines()[0] == "spk10-u00 spk01"
    # a utterance list converts only the listed utterances, each to its own target
    (tmp_path / "u2t").write_text("spk11-u01 spk02\nspk10-u00 spk00\n")
    assert convert_mod.convert(exp, str(d / "test"), str(tmp_path / "list"), sv, src_utt2tgt=str(tmp_path / "u2t")) == 2
    assert (tmp_path / "list" / "utt2num_frames").read_text() == (
        f"spk10-u00 {len(feats['test']['spk10-u00'])}\nspk11-u01 {len(feats['test']['spk11-u01'])}\n")
    with pytest.raises(DataError, match=r"spk_svector.scp: no s-vector for target speaker\(s\) nobody"):
        convert_mod.convert(exp, str(d / "test"), str(tmp_path / "bad"), sv, target_spk="nobody")


def test_convert_shifts_z2_by_svector_difference(setup):
    d, exp, feats = setup
    model, cfg, stats = load_model(exp)
    x = stats.normalize(feats["test"]["spk10-u01"])  # not a multiple of 10 frames: last window overlaps
    T = len(x)
    s_u = convert_mod._svector(model, cfg, x)
    # target = own s-vector: plain reconstruction of non-overlapping windows, the last ending at T
    same = convert_mod.convert_utterance(model, cfg, x, s_u)
    starts = list(range(0, T - 10 + 1, 10)) + ([T - 10] if T % 10 else [])
    z1, z2 = _encode(model, np.stack([x[s:s + 10] for s in starts]))
    rec = infer.decode(model, z1, z2, 10)
    np.testing.assert_allclose(same[:10], rec[0], atol=1e-5)
    np.testing.assert_allclose(same[T - 10:], rec[-1], atol=1e-5)
    # another target: every window decoded with z2 + (s_t - s_u)
    s_t = s_u + np.array([1.0, -1.0, 0.5, 0.0], dtype=np.float32)
    conv = convert_mod.convert_utterance(model, cfg, x, s_t)
    want = infer.decode(model, z1, z2 + (s_t - s_u), 10)
    np.testing.assert_allclose(conv[10:20], want[1], atol=1e-5)
    assert not np.allclose(conv, same, atol=1e-3)
    # the s-vector is the export's
    sv = kaldiio.load_scp(os.path.join(exp, "export", "test", "svector.scp"))["spk10-u01"]
    np.testing.assert_allclose(s_u, sv, atol=1e-5)
