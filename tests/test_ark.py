"""Kaldi ark/scp: round trips through independent readers, atomicity, bad-input errors."""
import os
import pickle
import struct

import kaldiio
import numpy as np
import pytest

from fhvae.errors import DataError
from fhvae.io.ark import ArkScpWriter, FeatReader, MatrixReader, read_scp, write_vectors


def parse_ark(path):
    """Minimal independent parser of a binary ark of FM/FV entries -> {key: (type, array, offset)}."""
    out = {}
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        key = data[pos:sp].decode()
        pos = sp + 1
        offset = pos
        assert data[pos:pos + 2] == b"\0B"
        typ = data[pos + 2:pos + 4].decode()
        assert data[pos + 4:pos + 5] == b" "
        pos += 5
        if typ == "FM":
            assert data[pos] == 4 and data[pos + 5] == 4
            rows, cols = struct.unpack("<i", data[pos + 1:pos + 5])[0], struct.unpack("<i", data[pos + 6:pos + 10])[0]
            pos += 10
            n, shape = rows * cols, (rows, cols)
        elif typ == "FV":
            assert data[pos] == 4
            n = struct.unpack("<i", data[pos + 1:pos + 5])[0]
            pos += 5
            shape = (n,)
        else:
            raise AssertionError(f"unexpected type {typ}")
        arr = np.frombuffer(data[pos:pos + 4 * n], dtype="<f4").reshape(shape)
        pos += 4 * n
        out[key] = (typ, arr, offset)
    return out


@pytest.fixture
def mats():
    rng = np.random.default_rng(0)
    return {f"spk{i}-u{j}": rng.normal(size=(5 + 7 * j + i, 13)).astype(np.float32) for i in range(2) for j in range(3)}


def write(tmp_path, items, compress=False, name="feats"):
    ark, scp = tmp_path / f"{name}.ark", tmp_path / f"{name}.scp"
    with ArkScpWriter(ark, scp, compress=compress) as w:
        for k in sorted(items):
            w.write(k, items[k])
    return ark, scp


def test_roundtrip_fm_through_independent_readers(tmp_path, mats):
    ark, scp = write(tmp_path, mats)
    lines = open(scp).read().splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(mats)           # sorted scp
    hand = parse_ark(ark)
    kio_scp = kaldiio.load_scp(str(scp))
    kio_ark = dict(kaldiio.load_ark(str(ark)))
    with FeatReader(scp) as r:
        assert r.keys() == sorted(mats) and len(r) == len(mats) and "spk0-u0" in r
        assert r.dim == 13
        for line in lines:
            key, value = line.split()
            path, off = value.rsplit(":", 1)
            assert path == str(ark) and os.path.isabs(path)          # absolute final path
            typ, arr, true_off = hand[key]
            assert typ == "FM" and int(off) == true_off              # offsets point at the matrix
            for other in (arr, kio_scp[key], kio_ark[key], r[key]):
                np.testing.assert_array_equal(other, mats[key])
            assert r[key].dtype == np.float32 and r.shape(key) == mats[key].shape


def test_vectors_written_as_fv(tmp_path):
    vecs = {"b": np.arange(4, dtype=np.float64), "a": np.ones(3, np.float32)}
    write_vectors(tmp_path / "v.scp", tmp_path / "v.ark", vecs)
    hand = parse_ark(tmp_path / "v.ark")
    assert [k for k in hand] == ["a", "b"] and all(t == "FV" for t, _, _ in hand.values())
    loaded = kaldiio.load_scp(str(tmp_path / "v.scp"))
    for k, v in vecs.items():
        assert loaded[k].ndim == 1
        np.testing.assert_array_equal(loaded[k], v.astype(np.float32))
        np.testing.assert_array_equal(FeatReader(tmp_path / "v.scp")[k], v.astype(np.float32))


def test_compressed_cm_and_cm2(tmp_path, mats):
    mats = dict(mats, **{"spk9-short": np.linspace(-3, 5, 4 * 13, dtype=np.float32).reshape(4, 13)})
    ark, scp = write(tmp_path, mats, compress=True)
    raw = open(ark, "rb").read()
    assert b"\0BCM " in raw and b"\0BCM2 " in raw      # Kaldi: CM for > 8 rows, CM2 for short ones
    ref = kaldiio.load_scp(str(scp))
    with FeatReader(scp) as r:
        assert r.dim == 13
        for k, m in mats.items():
            x = r[k]
            assert x.dtype == np.float32 and x.shape == m.shape == r.shape(k)
            np.testing.assert_array_equal(x, ref[k])
            np.testing.assert_allclose(x, m, atol=0.02 * (m.max() - m.min()))


def test_kaldi_style_inputs_dm_whole_file_and_row_range(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 40))                      # float64 -> DM
    b = rng.normal(size=(6, 40)).astype(np.float32)
    kaldiio.save_ark(str(tmp_path / "k.ark"), {"u1": a}, scp=str(tmp_path / "k.scp"))
    kaldiio.save_mat(str(tmp_path / "u2.mat"), b)
    np.save(tmp_path / "u4.npy", b)
    u1 = open(tmp_path / "k.scp").read().split()[1]
    (tmp_path / "feats.scp").write_text(
        f"u1 {u1}\nu2 {tmp_path}/u2.mat\nu3 {u1}[2:4]\nu4 {tmp_path}/u4.npy\n")
    r = FeatReader(tmp_path / "feats.scp")
    np.testing.assert_allclose(r["u1"], a.astype(np.float32))
    assert r["u1"].dtype == np.float32
    np.testing.assert_array_equal(r["u2"], b)
    np.testing.assert_allclose(r["u3"], a[2:5].astype(np.float32))   # Kaldi ranges are inclusive
    assert r.shape("u3") == (3, 40)
    np.testing.assert_array_equal(r["u4"], b)
    assert r.shape("u4") == (6, 40)


def test_reader_is_picklable_and_lru_bounded(tmp_path, mats):
    items = sorted(mats.items())
    write(tmp_path, dict(items[:3]), name="a")
    write(tmp_path, dict(items[3:]), name="b")
    (tmp_path / "all.scp").write_text(open(tmp_path / "a.scp").read() + open(tmp_path / "b.scp").read())
    r = FeatReader(tmp_path / "all.scp", max_open=1)
    for k, m in items + items[::-1]:                      # alternate between the two arks
        np.testing.assert_array_equal(r[k], m)
        assert len(r._reader._handles) == 1
    r2 = pickle.loads(pickle.dumps(r))                    # with an open handle inside
    for k, m in items:
        np.testing.assert_array_equal(r2[k], m)
    r.close()
    np.testing.assert_array_equal(r[items[0][0]], items[0][1])   # reopens after close


def test_matrix_reader_reads_at_offset(tmp_path, mats):
    _, scp = write(tmp_path, mats)
    path, off = read_scp(scp)["spk1-u2"].rsplit(":", 1)
    mr = MatrixReader()
    np.testing.assert_array_equal(mr.read(path, int(off)), mats["spk1-u2"])
    assert mr.shape(path, int(off)) == mats["spk1-u2"].shape
    with pytest.raises(DataError, match=r"^here: .*offset 3"):
        mr.read(path, 3, where="here")


def test_keys_must_be_sorted_and_unique(tmp_path):
    x = np.zeros((2, 3), np.float32)
    for keys in (["b", "a"], ["a", "a"]):
        with pytest.raises(ValueError, match="sorted"):
            with ArkScpWriter(tmp_path / "x.ark", tmp_path / "x.scp") as w:
                for k in keys:
                    w.write(k, x)
        assert os.listdir(tmp_path) == []


def test_exception_mid_write_leaves_nothing_and_keeps_old_outputs(tmp_path, mats):
    with pytest.raises(RuntimeError):
        with ArkScpWriter(tmp_path / "x.ark", tmp_path / "x.scp") as w:
            w.write("a", np.ones((3, 2), np.float32))
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []
    ark, scp = write(tmp_path, mats, name="x")
    before = (open(ark, "rb").read(), open(scp).read())
    with pytest.raises(DataError, match="NaN.*'b'"):
        with ArkScpWriter(ark, scp) as w:
            w.write("a", np.ones((3, 2), np.float32))
            w.write("b", np.array([[1.0, np.nan]], np.float32))
    assert sorted(os.listdir(tmp_path)) == ["x.ark", "x.scp"]   # no temp left, old pair intact
    assert (open(ark, "rb").read(), open(scp).read()) == before


def test_inf_rejected_for_vectors(tmp_path):
    with pytest.raises(DataError, match="'v1'"):
        write_vectors(tmp_path / "v.scp", tmp_path / "v.ark", {"v1": np.array([1.0, np.inf])})
    assert os.listdir(tmp_path) == []


def test_truncated_ark(tmp_path, mats):
    ark, scp = write(tmp_path, mats)
    last = sorted(mats)[-1]
    off = read_scp(scp)[last].rsplit(":", 1)[1]
    size = os.path.getsize(ark)
    with open(ark, "r+b") as f:
        f.truncate(size - 10)
    r = FeatReader(scp)
    np.testing.assert_array_equal(r[sorted(mats)[0]], mats[sorted(mats)[0]])  # others still fine
    with pytest.raises(DataError) as e:
        r[last]
    msg = str(e.value)
    assert "truncated" in msg and last in msg and str(ark) in msg and f"offset {off}" in msg


def test_corrupt_header_and_offset_past_end(tmp_path, mats):
    ark, scp = write(tmp_path, mats)
    entries = read_scp(scp)
    first = sorted(mats)[0]
    off = int(entries[first].rsplit(":", 1)[1])
    with open(ark, "r+b") as f:
        f.seek(off)
        f.write(b"\0BXY ")
    with pytest.raises(DataError, match=f"{first}.*unsupported matrix type 'XY'"):
        FeatReader(scp)[first]
    (tmp_path / "bad.scp").write_text(f"u1 {ark}:{os.path.getsize(ark) + 100}\n")
    with pytest.raises(DataError, match=r"bad.scp:1: utt 'u1'.*not a binary Kaldi matrix"):
        FeatReader(tmp_path / "bad.scp")["u1"]


def test_missing_ark_names_ark_and_scp_line(tmp_path):
    (tmp_path / "feats.scp").write_text(f"u1 {tmp_path}/a.ark:5\nu2 {tmp_path}/gone.ark:5\n")
    r = FeatReader(tmp_path / "feats.scp")
    with pytest.raises(DataError, match=r"feats.scp:2: utt 'u2': ark file not found: .*gone.ark"):
        r["u2"]
    with pytest.raises(DataError, match="no entry for utterance 'zz'"):
        r["zz"]


def test_unparseable_scp_lines(tmp_path):
    (tmp_path / "feats.scp").write_text("u1 a.ark:5\nu2 a.ark:5[1:x]\n")
    with pytest.raises(DataError, match=r"feats.scp:2: unsupported range"):
        FeatReader(tmp_path / "feats.scp")
    (tmp_path / "feats.scp").write_text("u1 copy-feats ark:a.ark ark:- |\n")
    with pytest.raises(DataError, match=r"feats.scp:1: pipes are not supported"):
        FeatReader(tmp_path / "feats.scp")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_mode_of_a_new_file(tmp_path, umask):
    """Temp-then-rename must not leave mkstemp's 0600 on a written ark, scp or checkpoint."""
    from fhvae.io.atomic import atomic_write_text
    old = os.umask(umask)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x\n")
        with ArkScpWriter(str(tmp_path / "v.ark"), str(tmp_path / "v.scp")) as w:
            w.write("u1", np.zeros(3, np.float32))
    finally:
        os.umask(old)
    for name in ("a.txt", "v.ark", "v.scp"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
