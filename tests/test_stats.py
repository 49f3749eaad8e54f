"""Global mean/variance stats: against NumPy on the concatenation, any dim and CM arks, bad input."""
import os
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from fhvae.errors import DataError
from fhvae.features.stats import Stats, compute_stats, load_stats
from fhvae.io.ark import ArkScpWriter, FeatReader


def write_feats(d, mats, compress=False):
    d.mkdir(parents=True, exist_ok=True)
    with ArkScpWriter(d / "raw.ark", d / "feats.scp", compress=compress) as w:
        for k in sorted(mats):
            w.write(k, mats[k])
    return d / "feats.scp"


def random_mats(dim, n=7, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.1, 20, dim)
    return {f"u{i}": (rng.normal(size=(3 + 11 * i, dim)) * scale + 50).astype(np.float32) for i in range(n)}


def test_matches_numpy_on_concatenation(tmp_path):
    mats = random_mats(80)
    scp = write_feats(tmp_path, mats)
    st = compute_stats(scp)
    cat = np.concatenate([mats[k] for k in sorted(mats)]).astype(np.float64)
    assert st.count == cat.shape[0] and st.dim == 80
    np.testing.assert_allclose(st.mean, cat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.var, cat.var(0), rtol=1e-10)
    sub = compute_stats(scp, utts=["u1", "u4"])
    cat2 = np.concatenate([mats["u1"], mats["u4"]]).astype(np.float64)
    np.testing.assert_allclose(sub.var, cat2.var(0), rtol=1e-10)
    assert sub.count == len(cat2)


def test_any_dim_and_compressed_kaldi_features(tmp_path):
    mats = random_mats(13, seed=1)
    scp = write_feats(tmp_path, mats, compress=True)
    assert b"\0BCM " in open(tmp_path / "raw.ark", "rb").read()
    decoded = FeatReader(scp)
    cat = np.concatenate([decoded[k] for k in sorted(mats)]).astype(np.float64)
    st = compute_stats(scp)
    assert st.dim == 13
    np.testing.assert_allclose(st.mean, cat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(st.var, cat.var(0), rtol=1e-8)


def test_normalize_save_load(tmp_path):
    mats = random_mats(5)
    for k in mats:
        mats[k][:, 2] = 7.0                       # constant dim: var 0, floored
    st = compute_stats(write_feats(tmp_path, mats))
    st.save(tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as z:
        assert sorted(z.files) == ["count", "dim", "mean", "var"] and int(z["dim"]) == 5
    st2 = load_stats(tmp_path / "stats.npz")
    np.testing.assert_array_equal(st2.mean, st.mean)
    np.testing.assert_array_equal(st2.var, st.var)
    assert st2.count == st.count
    cat = np.concatenate(list(mats.values()))
    y = st2.normalize(cat)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(np.delete(y.std(0), 2), 1, atol=1e-3)
    with pytest.raises(DataError, match="dim 4"):
        st2.normalize(np.zeros((3, 4)))


def test_dim_mismatch_and_nan(tmp_path):
    with ArkScpWriter(tmp_path / "a.ark", tmp_path / "feats.scp") as w:
        w.write("u1", np.zeros((4, 80), np.float32))
        w.write("u2", np.zeros((4, 40), np.float32))
    with pytest.raises(DataError, match=r"feats.scp: utt 'u2' has dim 40, but utt 'u1' has dim 80"):
        compute_stats(tmp_path / "feats.scp")
    bad = np.ones((5, 3), np.float32)
    bad[2, 1] = np.nan
    kaldiio.save_ark(str(tmp_path / "n.ark"), {"a": np.ones((2, 3), np.float32), "b": bad},
                     scp=str(tmp_path / "nan.scp"))
    with pytest.raises(DataError, match=r"nan.scp: 1 of 2 utterances are broken .*first: .*nan.scp:2: utt 'b' "
                                        r"has NaN/inf values \(ark .*n.ark:\d+\)"):
        compute_stats(tmp_path / "nan.scp")
    with pytest.raises(DataError, match="no features for 1 utterance"):
        compute_stats(tmp_path / "nan.scp", utts=["a", "zz"])
    kaldiio.save_ark(str(tmp_path / "e.ark"), {"a": np.zeros((0, 3), np.float32)}, scp=str(tmp_path / "e.scp"))
    with pytest.raises(DataError, match="no frames"):
        compute_stats(tmp_path / "e.scp")


def test_load_stats_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_stats(tmp_path / "nope.npz")
    np.savez(tmp_path / "x.npz", mean=np.zeros(3))
    with pytest.raises(DataError, match="not a stats file"):
        load_stats(tmp_path / "x.npz")
    Stats(np.zeros(3), np.ones(3), 10).save(tmp_path / "ok.npz")
    assert load_stats(tmp_path / "ok.npz").count == 10


def test_cli(tmp_path):
    data = tmp_path / "train"
    mats = random_mats(6)
    write_feats(data, mats)
    r = subprocess.run([sys.executable, "-m", "fhvae.bin.compute_stats", str(data)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    st = load_stats(data / "stats.npz")
    np.testing.assert_allclose(st.mean, np.concatenate(list(mats.values())).astype(np.float64).mean(0))
    assert not [f for f in os.listdir(data) if f.endswith(".tmp")]
    r = subprocess.run([sys.executable, "-m", "fhvae.bin.compute_stats", "--out", str(tmp_path / "s.npz"),
                        str(tmp_path / "nodata")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "fhvae-compute-stats: error:" in r.stderr and "feats.scp: not found" in r.stderr
    assert "Traceback" not in r.stderr
