"""Speaker verification: trials parsing, cosine and PLDA backends, scoring, CLIs end to end."""
import json
import os

import kaldiio
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from fhvae.errors import ConfigError, DataError
from fhvae.eval.metrics import eer_kaldi
from fhvae.eval.backends import PLDA, CosineBackend, PLDABackend
from fhvae.eval.sv import evaluate, read_trials, score_sv, score_trials


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _random_spd(rng, d, scale):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.5 * np.eye(d))


# ---------------------------------------------------------------- trials


def test_read_trials(tmp_path):
    p = _write(tmp_path / "trials", "s1-a s1-b target\ns1-a s2-c nontarget\n")
    assert read_trials(p) == [("s1-a", "s1-b", True), ("s1-a", "s2-c", False)]


@pytest.mark.parametrize("text,msg", [
    ("a b target\na b tar\n", r"trials:2: label must be 'target' or 'nontarget', got 'tar'"),
    ("a b target\na b\n", r"trials:2: expected exactly 3 fields"),
    ("a b target x\n", r"trials:1: expected exactly 3 fields"),
    ("a b target\r\n", r"trials:1: Windows \(CRLF\) line ending; convert with dos2unix"),
    ("", r"trials: no trials"),
])
def test_read_trials_errors_name_file_and_line(tmp_path, text, msg):
    with pytest.raises(DataError, match=msg):
        read_trials(_write(tmp_path / "trials", text))


def test_read_trials_missing_file(tmp_path):
    with pytest.raises(DataError, match="trials file not found"):
        read_trials(str(tmp_path / "nope"))


# ---------------------------------------------------------------- cosine


def test_cosine_backend_subtracts_training_mean():
    b = CosineBackend().fit(np.array([[1.0, 1.0], [3.0, 1.0]]))  # mean (2, 1)
    s = b.score(np.array([[3.0, 1.0], [2.0, 2.0]]), np.array([[1.0, 1.0], [4.0, 1.0]]))
    # (1, 0) vs (-1, 0) -> -1 ; (0, 1) vs (2, 0) -> 0
    np.testing.assert_allclose(s, [-1.0, 0.0], atol=1e-12)
    # Without fit: plain cosine.
    np.testing.assert_allclose(CosineBackend().score(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]])),
                               [np.sqrt(0.5)])


def test_cosine_whitening_makes_training_covariance_identity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)) @ np.array([[3.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]]) + 5.0
    b = CosineBackend(whiten=True).fit(x)
    np.testing.assert_allclose(np.cov((x - b.mean) @ b.proj, rowvar=False), np.eye(3), atol=1e-8)


# ---------------------------------------------------------------- PLDA


def _simulate(rng, m, between, within, n_spk, utts):
    """Two-covariance population: x = y_s + e; utts: int or per-speaker counts."""
    counts = np.full(n_spk, utts) if np.isscalar(utts) else np.asarray(utts)
    y = rng.multivariate_normal(m, between, size=n_spk)
    labels = np.repeat(np.arange(n_spk), counts)
    x = y[labels] + rng.multivariate_normal(np.zeros(len(m)), within, size=len(labels))
    return x, labels


def test_plda_em_recovers_two_covariance_model():
    rng = np.random.default_rng(1)
    d = 4
    m = rng.normal(size=d) * 3
    between, within = _random_spd(rng, d, 2.0), _random_spd(rng, d, 0.5)
    counts = rng.integers(2, 30, size=1500)  # unbalanced: exercises the per-count E-step
    x, labels = _simulate(rng, m, between, within, 1500, counts)
    p = PLDA().fit(x, labels)

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    assert rel(p.within, within) < 0.03
    assert rel(p.between, between) < 0.1
    assert np.linalg.norm(p.mean - m) < 0.2
    # The diagonalization holds: A W A^T = I, A B A^T = diag(psi).
    np.testing.assert_allclose(p.transform @ p.within @ p.transform.T, np.eye(d), atol=1e-8)
    np.testing.assert_allclose(p.transform @ p.between @ p.transform.T, np.diag(p.psi), atol=1e-8)


def _marginal_loglik(p, x, labels):
    """log p(x) under the fitted model: each speaker's utterances are jointly Gaussian."""
    total = 0.0
    for s in np.unique(labels):
        xs = x[labels == s]
        n = len(xs)
        cov = np.kron(np.ones((n, n)), p.between) + np.kron(np.eye(n), p.within)
        total += multivariate_normal(np.tile(p.mean, n), cov).logpdf(xs.ravel())
    return total


def test_plda_em_increases_likelihood():
    rng = np.random.default_rng(11)
    d = 3
    x, labels = _simulate(rng, np.zeros(d), _random_spd(rng, d, 1.0), _random_spd(rng, d, 1.0),
                          60, rng.integers(2, 6, size=60))
    ll = [_marginal_loglik(PLDA(n_iter=k).fit(x, labels), x, labels) for k in (0, 1, 5, 20)]
    assert all(b > a for a, b in zip(ll, ll[1:]))


def _brute_llr(m, between, within, enroll_obs, test):
    """log N(joint | same speaker) - log N(joint | different), joint of n enroll obs + 1 test."""
    n, d = enroll_obs.shape
    joint = np.concatenate([enroll_obs.ravel(), test])
    mean = np.tile(m, n + 1)
    same = np.kron(np.ones((n + 1, n + 1)), between) + np.kron(np.eye(n + 1), within)
    diff = same.copy()
    diff[: n * d, n * d:] = 0
    diff[n * d:, : n * d] = 0
    return (multivariate_normal(mean, same).logpdf(joint)
            - multivariate_normal(mean, diff).logpdf(joint))


def test_plda_llr_matches_brute_force_joint_gaussians():
    rng = np.random.default_rng(2)
    d = 3
    m = rng.normal(size=d)
    between, within = _random_spd(rng, d, 1.5), _random_spd(rng, d, 0.7)
    p = PLDA().set_params(m, between, within)
    enroll, test, n_enroll, expected = [], [], [], []
    for n in [1, 1, 3, 5, 2]:
        obs = rng.normal(size=(n, d)) + m
        t = rng.normal(size=d) + m
        enroll.append(obs.mean(axis=0))
        test.append(t)
        n_enroll.append(n)
        expected.append(_brute_llr(m, between, within, obs, t))
    got = p.llr(np.array(enroll), np.array(test), np.array(n_enroll))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # Scalar n_enroll broadcasts.
    np.testing.assert_allclose(p.llr(np.array(enroll[:2]), np.array(test[:2]), 1), expected[:2])


def test_plda_rejects_training_without_repeated_speakers():
    with pytest.raises(DataError, match="PLDA needs at least 2 speakers"):
        PLDA().fit(np.eye(3), ["a", "b", "c"])


def test_plda_backend_caps_lda_dim_and_separates_speakers():
    rng = np.random.default_rng(3)
    x, labels = _simulate(rng, np.zeros(10), np.eye(10), 0.1 * np.eye(10), 6, 20)
    b = PLDABackend(lda_dim=200).fit(x, labels)
    assert b.lda.shape == (10, 5)  # capped at #speakers - 1
    same = b.score(x[labels == 0][:5], x[labels == 0][5:10])
    diff = b.score(x[labels == 0][:5], x[labels == 1][:5])
    assert same.min() > diff.max()


# ---------------------------------------------------------------- score_trials / evaluate


def _vectors(rng, n_spk, n_utt, dim=8, spread=1.0, noise=0.3, prefix="spk"):
    centers = rng.normal(size=(n_spk, dim)) * spread
    out = {}
    for s in range(n_spk):
        for u in range(n_utt):
            out[f"{prefix}{s:02d}-u{u:02d}"] = (centers[s] + noise * rng.normal(size=dim)).astype(np.float32)
    return out


def test_score_trials_single_utterance_enrollment_matches_backend_score():
    rng = np.random.default_rng(4)
    vec = _vectors(rng, 3, 2)
    trials = [("spk00-u00", "spk00-u01", True), ("spk00-u00", "spk01-u00", False),
              ("spk02-u01", "spk00-u01", False)]
    b = CosineBackend().fit(np.stack(list(vec.values())))
    got = score_trials(trials, vec, b)
    want = b.score(np.stack([vec[t[0]] for t in trials]), np.stack([vec[t[1]] for t in trials]))
    np.testing.assert_allclose(got, want)


def test_score_trials_speaker_enrollment_uses_mean_and_n_enroll():
    rng = np.random.default_rng(5)
    train = _vectors(rng, 8, 6)
    labels = [k.split("-")[0] for k in train]
    b = PLDABackend(lda_dim=4).fit(np.stack(list(train.values())), labels)
    enroll = _vectors(rng, 2, 3, prefix="enr")
    test = _vectors(rng, 2, 1, prefix="tst")
    spk2utt = {"A": ["enr00-u00", "enr00-u01", "enr00-u02"], "B": ["enr01-u01"]}
    trials = [("A", "tst00-u00", True), ("B", "tst00-u00", False), ("A", "tst01-u00", False)]
    got = score_trials(trials, test, b, enroll_vectors=enroll, enroll_spk2utt=spk2utt)
    model_a = b.transform(np.stack([enroll[u] for u in spk2utt["A"]])).mean(axis=0)
    model_b = b.transform(enroll["enr01-u01"][None])[0]
    t0, t1 = b.transform(np.stack([test["tst00-u00"], test["tst01-u00"]]))
    want = [b.plda.llr(model_a[None], t0[None], 3)[0], b.plda.llr(model_b[None], t0[None], 1)[0],
            b.plda.llr(model_a[None], t1[None], 3)[0]]
    np.testing.assert_allclose(got, want)
    # n_enroll matters: scoring model A as if it were a single utterance gives other scores.
    assert abs(b.plda.llr(model_a[None], t0[None], 1)[0] - want[0]) > 1e-3


def test_score_trials_missing_vectors_are_listed():
    vec = {"a": np.ones(2), "b": np.ones(2)}
    trials = [("a", "x1", True), ("a", "x2", False), ("b", "x1", False)] + [
        ("a", f"y{i}", False) for i in range(6)]
    with pytest.raises(DataError) as e:
        score_trials(trials, vec, CosineBackend(), trials_path="data/test/trials")
    msg = str(e.value)
    assert msg.startswith("data/test/trials: 8 test utterance(s) have no vector: x1, x2, y0")
    assert msg.endswith(", ...")
    with pytest.raises(DataError, match=r"trials: 1 enroll utterance\(s\) have no vector: z"):
        score_trials([("z", "a", True)], vec, CosineBackend())
    with pytest.raises(DataError, match="1 enroll speaker.* not in the enrollment spk2utt: S"):
        score_trials([("S", "a", True)], vec, CosineBackend(), enroll_spk2utt={"T": ["a"]})
    with pytest.raises(DataError, match=r"1 enrollment utterance\(s\) \(from spk2utt\) have no vector: q"):
        score_trials([("S", "a", True)], vec, CosineBackend(), enroll_spk2utt={"S": ["a", "q"]})


def test_evaluate_keys_and_values():
    r = evaluate([0.9, 0.8, 0.1, 0.2, 0.85], [True, True, False, False, False])
    assert set(r) == {"eer", "eer_interp", "mindcf_p0.01", "mindcf_p0.001", "n_target",
                      "n_nontarget"}
    assert (r["n_target"], r["n_nontarget"]) == (2, 3)
    # targets 0.8 0.9 ; nontargets 0.1 0.2 0.85: p=0: k=2, 0.85 < 0.8 no; stop at p=1 -> 50%
    assert r["eer"] == 50.0
    with pytest.raises(DataError, match="need target and nontarget"):
        evaluate([1.0, 2.0], [True, True])


# ---------------------------------------------------------------- CLIs end to end


def _write_vectors(d, name, vectors):
    scp = str(d / f"{name}.scp")
    with kaldiio.WriteHelper(f"ark,scp:{d / name}.ark,{scp}") as w:
        for k in sorted(vectors):
            w(k, vectors[k])
    return scp


def _sv_setup(tmp_path, rng):
    """Train: 20 speakers x 8 utts; test: 10 new speakers x 4 utts, all-pairs trials."""
    dim = 16
    train = _vectors(rng, 20, 8, dim=dim, prefix="tr")
    test = _vectors(rng, 10, 4, dim=dim, prefix="te")
    # A nuisance direction shared by all utterances, to give mean subtraction/LDA work to do.
    offset = 3.0 * rng.normal(size=dim).astype(np.float32)
    train = {k: v + offset for k, v in train.items()}
    test = {k: v + offset for k, v in test.items()}
    keys = sorted(test)
    lines = [f"{a} {b} {'target' if a[:4] == b[:4] else 'nontarget'}"
             for i, a in enumerate(keys) for b in keys[i + 1:]]
    return {
        "trials": _write(tmp_path / "trials", "\n".join(lines) + "\n"),
        "vectors": _write_vectors(tmp_path, "test", test),
        "train": _write_vectors(tmp_path, "train", train),
        "utt2spk": _write(tmp_path / "utt2spk", "".join(f"{k} {k[:4]}\n" for k in sorted(train))),
        "n_trials": len(lines),
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cosine", "plda"])
def test_score_sv_cli_end_to_end(tmp_path, backend, capsys):
    from fhvae.bin.score_sv import main

    s = _sv_setup(tmp_path, np.random.default_rng(6))
    out = tmp_path / f"sv_{backend}"
    with pytest.raises(SystemExit) as e:
        main(["--trials", s["trials"], "--vectors", s["vectors"], "--backend", backend,
              "--out-dir", str(out), "--train-vectors", s["train"], "--train-utt2spk", s["utt2spk"],
              "--lda-dim", "8"])
    assert e.value.code == 0
    assert f"{backend}: EER " in capsys.readouterr().out

    r = json.loads((out / "results.json").read_text())
    for key in ["eer", "eer_interp", "mindcf_p0.01", "mindcf_p0.001", "n_target", "n_nontarget",
                "backend", "inputs", "definitions"]:
        assert key in r
    assert r["backend"] == backend
    assert (r["n_target"], r["n_nontarget"]) == (60, 720)
    assert r["eer"] < 5.0 and r["eer_interp"] < 5.0
    assert r["inputs"]["trials"] == os.path.abspath(s["trials"])

    trials = read_trials(s["trials"])
    lines = (out / "scores").read_text().splitlines()
    assert len(lines) == s["n_trials"]
    fields = [line.split() for line in lines]
    assert all(len(f) == 3 for f in fields)
    assert [(f[0], f[1]) for f in fields] == [(t[0], t[1]) for t in trials]
    scores = np.array([float(f[2]) for f in fields])
    labels = np.array([t[2] for t in trials])
    # results.json eer is what compute-eer gives on the written scores file.
    assert r["eer"] == 100.0 * eer_kaldi(scores[labels], scores[~labels])[0]
    if backend == "plda":
        assert r["lda_dim"] == 8


@pytest.mark.slow
def test_score_sv_speaker_enrollment_cli(tmp_path):
    from fhvae.bin.score_sv import main

    s = _sv_setup(tmp_path, np.random.default_rng(7))
    # Enroll speakers te00..te09 with their utterances u00, u01; test on u02, u03.
    spk2utt = "".join(f"te{i:02d} te{i:02d}-u00 te{i:02d}-u01\n" for i in range(10))
    trials = "".join(f"te{i:02d} te{j:02d}-u{u:02d} {'target' if i == j else 'nontarget'}\n"
                     for i in range(10) for j in range(10) for u in (2, 3))
    out = tmp_path / "sv"
    with pytest.raises(SystemExit) as e:
        main(["--trials", _write(tmp_path / "trials_spk", trials), "--vectors", s["vectors"],
              "--backend", "plda", "--out-dir", str(out), "--train-vectors", s["train"],
              "--train-utt2spk", s["utt2spk"], "--enroll-spk2utt",
              _write(tmp_path / "spk2utt", spk2utt)])
    assert e.value.code == 0
    r = json.loads((out / "results.json").read_text())
    assert (r["n_target"], r["n_nontarget"]) == (20, 180)
    assert r["eer"] < 5.0


@pytest.mark.slow
def test_score_sv_cli_errors(tmp_path, capsys):
    from fhvae.bin.score_sv import main

    s = _sv_setup(tmp_path, np.random.default_rng(8))
    bad = _write(tmp_path / "trials_bad", "te00-u00 te00-u01 target\nte00-u00 ghost-u9 nontarget\n")
    with pytest.raises(SystemExit) as e:
        main(["--trials", bad, "--vectors", s["vectors"], "--backend", "cosine",
              "--out-dir", str(tmp_path / "o")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"fhvae-score-sv: error: {bad}: 1 test utterance(s) have no vector: ghost-u9" in err
    assert not (tmp_path / "o" / "scores").exists()

    with pytest.raises(SystemExit) as e:
        main(["--trials", s["trials"], "--vectors", s["vectors"], "--backend", "plda",
              "--out-dir", str(tmp_path / "o")])
    assert e.value.code == 1
    assert "plda backend needs --train-vectors and --train-utt2spk" in capsys.readouterr().err


def test_score_sv_dimension_mismatch(tmp_path):
    rng = np.random.default_rng(9)
    vec = _write_vectors(tmp_path, "a", _vectors(rng, 2, 2, dim=4))
    train = _write_vectors(tmp_path, "b", _vectors(rng, 2, 2, dim=5))
    trials = _write(tmp_path / "trials", "spk00-u00 spk00-u01 target\nspk00-u00 spk01-u00 nontarget\n")
    with pytest.raises(DataError, match="vector dimensions differ"):
        score_sv(trials, vec, "cosine", str(tmp_path / "o"), train_vectors=train)
    with pytest.raises(ConfigError, match="--train-utt2spk given without --train-vectors"):
        score_sv(trials, vec, "cosine", str(tmp_path / "o"), train_utt2spk=trials)


@pytest.mark.slow
def test_extract_baseline_cli(tmp_path):
    from fhvae.bin.extract_baseline import main

    rng = np.random.default_rng(10)
    data = tmp_path / "data"
    data.mkdir()
    feats = {f"s1-u{i}": rng.normal(size=(5 + 3 * i, 4)).astype(np.float32) for i in range(3)}
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for k in sorted(feats):
            w(k, feats[k])
    mean, var = np.array([1.0, 0, 0, 2]), np.array([4.0, 1, 1, 0.25])
    np.savez(tmp_path / "stats.npz", mean=mean, var=var)
    for stats, out in [(None, tmp_path / "raw"), (tmp_path / "stats.npz", tmp_path / "norm")]:
        argv = ["--data-dir", str(data), "--out-dir", str(out)]
        argv += ["--stats", str(stats)] if stats else []
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        got = kaldiio.load_scp(str(out / "vectors.scp"))
        assert sorted(got) == sorted(feats)
        with open(out / "vectors.ark", "rb") as f:
            assert b"FV" in f.read(64)  # Kaldi float vectors, not 1 x D matrices
        for k, x in feats.items():
            x = x.astype(np.float64)
            if stats:
                x = (x - mean) / np.sqrt(var)
            want = np.concatenate([x.mean(0), x.std(0)])
            assert got[k].shape == (8,)
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-5)

    np.savez(tmp_path / "bad.npz", mean=np.zeros(3), var=np.ones(3))
    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(data), "--out-dir", str(tmp_path / "bad"), "--stats",
              str(tmp_path / "bad.npz")])
    assert e.value.code == 1
    assert not (tmp_path / "bad" / "vectors.scp").exists()
