"""One feats.scp grammar: row ranges, whole files and ark paths with spaces, read identically by
UttIndex + UttReader (training, export) and FeatReader (stats, scoring, probes)."""
import os

import numpy as np
import pytest
from kaldiio.matio import write_array

from fhvae.data.index import UttIndex
from fhvae.data.loader import UttReader
from fhvae.errors import DataError
from fhvae.io.ark import ArkScpWriter, FeatReader, parse_entry


class Identity:
    def normalize(self, x):
        return x


def write_dir(d, lines, n2f):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "feats.scp"), "w") as f:
        f.writelines(f"{k} {v}\n" for k, v in lines)
    with open(os.path.join(d, "utt2num_frames"), "w") as f:
        f.writelines(f"{k} {n}\n" for k, n in n2f)


@pytest.fixture
def data(tmp_path):
    """A data dir whose feats.scp has row ranges into one ark, and whole files, in a dir with a space."""
    rng = np.random.default_rng(0)
    spaced = tmp_path / "my feats"
    spaced.mkdir()
    rec = rng.normal(size=(50, 4)).astype(np.float32)
    other = rng.normal(size=(7, 4)).astype(np.float32)
    with ArkScpWriter(spaced / "a b.ark", spaced / "a.scp") as w:
        w.write("rec1", rec)
        w.write("rec2", other)
    (_, r1), (_, r2) = [line.split(" ", 1) for line in open(spaced / "a.scp").read().splitlines()]
    whole = rng.normal(size=(9, 4)).astype(np.float32)
    with open(spaced / "whole.mat", "wb") as f:
        write_array(f, whole)
    npy = rng.normal(size=(6, 4)).astype(np.float32)
    np.save(spaced / "x y.npy", npy)
    want = {"a-u1": rec[0:20], "a-u2": rec[20:50], "a-u3": rec[5:6], "b-u1": other, "c-u1": whole, "c-u2": npy}
    lines = [("a-u1", f"{r1}[0:19]"), ("a-u2", f"{r1}[20:49]"), ("a-u3", f"{r1}[5:5]"), ("b-u1", r2),
             ("c-u1", f"  {spaced}/whole.mat "), ("c-u2", f"{spaced}/x y.npy")]
    d = str(tmp_path / "data")
    write_dir(d, lines, [(k, len(want[k])) for k, _ in lines])
    return d, want


def test_parse_entry():
    assert parse_entry("a b/c.ark:12[0:9]") == ("a b/c.ark", 12, slice(0, 10))
    assert parse_entry("c.ark:12") == ("c.ark", 12, None)
    assert parse_entry("x y.npy") == ("x y.npy", None, None)
    for bad in ("c.ark:1[3:2]", "c.ark:1[0:2,0:3]", "copy-feats ark:a.ark ark:- |"):
        with pytest.raises(ValueError):
            parse_entry(bad)


def test_every_reader_reads_the_same(data):
    d, want = data
    index = UttIndex.from_data_dir(d)
    reader = UttReader(index, Identity(), 4)
    feats = FeatReader(os.path.join(d, "feats.scp"))
    assert [index.name(i) for i in range(len(index))] == feats.keys() == sorted(want)
    for i in range(len(index)):
        name = index.name(i)
        x = reader.load(i)
        np.testing.assert_array_equal(x, want[name])
        np.testing.assert_array_equal(feats[name], want[name])
        assert feats.shape(name) == want[name].shape
    assert not reader.bad
    sub = index.subset(np.array([1, 4]))
    np.testing.assert_array_equal(UttReader(sub, Identity(), 4).load(0), want["a-u2"])


@pytest.mark.parametrize("line, msg", [
    ("u2 a.ark:5[1:x]", r"feats.scp:2: unsupported range"),
    ("u2 copy-feats ark:a.ark ark:- |", r"feats.scp:2: pipes are not supported"),
    ("u2", r"feats.scp:2: expected '<key> <rxfilename>'"),
    ("u1 a.ark:7", r"feats.scp:2: duplicate key 'u1'"),
    ("a a.ark:7", r"feats.scp:2: keys not sorted"),
])
def test_malformed_entry_same_error_from_both_readers(tmp_path, line, msg):
    d = str(tmp_path / "d")
    write_dir(d, [], [("u1", 3), ("u2", 3)])
    open(os.path.join(d, "feats.scp"), "w").write(f"u1 a.ark:5\n{line}\n")
    errors = []
    for read in (UttIndex.from_data_dir, lambda d: FeatReader(os.path.join(d, "feats.scp"))):
        with pytest.raises(DataError, match=msg) as e:
            read(d)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def test_row_range_past_the_matrix(data):
    d, want = data
    scp = os.path.join(d, "feats.scp")
    lines = open(scp).read().replace("[20:49]", "[20:50]")
    open(scp, "w").write(lines)
    with pytest.raises(DataError, match=r"feats.scp:2: utt 'a-u2': row range \[20:50\] outside the 50-row"):
        FeatReader(scp)["a-u2"]
    reader = UttReader(UttIndex.from_data_dir(d), Identity(), 4)
    assert reader.load(1) is None and "row range [20:50] outside the 50-row" in reader.bad[1]


@pytest.mark.parametrize("delta", [+3, -3])
def test_utt2num_frames_must_match_the_features(data, delta):
    """A longer or shorter utt2num_frames is an inconsistent data dir: an error naming the fix."""
    d, want = data
    n2f = os.path.join(d, "utt2num_frames")
    lines = open(n2f).read().splitlines()
    lines[1] = f"a-u2 {30 + delta}"
    open(n2f, "w").write("\n".join(lines) + "\n")
    reader = UttReader(UttIndex.from_data_dir(d), Identity(), 4)
    np.testing.assert_array_equal(reader.load(0), want["a-u1"])
    with pytest.raises(DataError) as e:
        reader.load(1)
    assert str(e.value) == (
        f"{n2f}:2: utterance 'a-u2' has {30 + delta} frames there but 30 in {d}/feats.scp; "
        f"recompute it: feat-to-len scp:{d}/feats.scp ark,t:{n2f}")


def _as_row_ranges(src, dst):
    """Copy data dir ``src`` to ``dst``, its features re-written as one recording matrix per speaker in an
    ark whose directory and name contain spaces, feats.scp entries Kaldi row ranges into it."""
    import shutil
    shutil.copytree(src, dst)
    feats = FeatReader(os.path.join(src, "feats.scp"))
    by_spk = {}
    for u in feats.keys():
        by_spk.setdefault(u.split("-")[0], []).append(u)
    arkdir = os.path.join(dst, "row ranges")
    os.makedirs(arkdir)
    with ArkScpWriter(os.path.join(arkdir, "all feats.ark"), os.path.join(arkdir, "rec.scp")) as w:
        for spk in sorted(by_spk):
            w.write(spk, np.concatenate([feats[u] for u in by_spk[spk]]))
    rec = dict(line.rstrip("\n").split(" ", 1) for line in open(os.path.join(arkdir, "rec.scp")))
    lines = []
    for spk in sorted(by_spk):
        start = 0
        for u in by_spk[spk]:
            n = len(feats[u])
            lines.append(f"{u} {rec[spk]}[{start}:{start + n - 1}]\n")
            start += n
    with open(os.path.join(dst, "feats.scp"), "w") as f:
        f.writelines(sorted(lines))
    return feats


@pytest.mark.slow
def test_train_export_stats_and_scoring_read_row_ranges_in_paths_with_spaces(tmp_path):
    """Every stage that reads features accepts the same feats.scp: training (UttIndex), export, stats
    and the fbank baseline of scoring (FeatReader); the results equal those of the plain arks."""
    from fhvae import config
    from fhvae.datadir import make_trials, write_trials
    from fhvae.eval.sv import extract_baseline, score_sv
    from fhvae.export import export
    from fhvae.features.stats import compute_data_dir_stats, load_stats
    from fhvae.train.expdir import prepare_exp_dir
    from fhvae.train.trainer import Trainer
    from tests.fakedata import make_feats_dir
    from tests.test_trainer import TINY

    runs = {}
    for name in ("plain", "ranges"):
        d = tmp_path / name
        make_feats_dir(str(tmp_path / "src_train"), n_spk=4, utts_per_spk=3, seed=0)
        make_feats_dir(str(tmp_path / "src_dev"), n_spk=2, utts_per_spk=2, seed=1)
        if name == "plain":
            import shutil
            shutil.copytree(tmp_path / "src_train", d / "train")
            shutil.copytree(tmp_path / "src_dev", d / "dev")
        else:
            _as_row_ranges(str(tmp_path / "src_train"), str(d / "train"))
            _as_row_ranges(str(tmp_path / "src_dev"), str(d / "dev"))
        compute_data_dir_stats(str(d / "train"))
        cfg = config.load_config(None, TINY + [("train.max_epochs", 1)])
        exp = str(d / "exp")
        prepare_exp_dir(cfg, exp, str(d / "train"), str(d / "dev"), str(d / "train" / "stats.npz"))
        Trainer(cfg, str(d / "train"), str(d / "dev"), exp).run()
        export(exp, str(d / "train"), str(d / "export"))
        extract_baseline(str(d / "train"), str(d / "base"))
        trials = str(d / "trials")
        write_trials(trials, make_trials({u: u.split("-")[0] for u in FeatReader(str(d / "train" / "feats.scp")).keys()},
                                         seed=0))
        res = score_sv(trials, str(d / "export" / "svector.scp"), "cosine", str(d / "sv"))
        runs[name] = (load_stats(str(d / "train" / "stats.npz")), FeatReader(str(d / "export" / "z1.scp")),
                      FeatReader(str(d / "base" / "vectors.scp")), res["eer"])
    (s0, z0, b0, e0), (s1, z1, b1, e1) = runs["plain"], runs["ranges"]
    np.testing.assert_allclose(s0.mean, s1.mean)
    for u in z0.keys():
        np.testing.assert_array_equal(z0[u], z1[u])
        np.testing.assert_array_equal(b0[u], b1[u])
    assert e0 == e1
