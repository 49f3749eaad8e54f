"""Kaldi data dirs: table reading, validation (every error path), fix, split, subset, crop, trials, CLIs."""
import logging
import os
import subprocess
import sys

import pytest

from fhvae import datadir as D
from fhvae.errors import DataError
from fhvae.io import tables as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def make_dir(root, spk_counts=(("s1", 2), ("s2", 3), ("s3", 1)), *, wav=True, feats=False, segments=False,
             text=False):
    """Data dir with speakers ``sN`` and utterances ``sN-uK``; wav files / arks exist under root."""
    d = os.path.join(root, "data")
    utt2spk = {f"{s}-u{k}": s for s, n in spk_counts for k in range(1, n + 1)}
    T.write_kv(os.path.join(d, "utt2spk"), utt2spk)
    T.write_kv(os.path.join(d, "spk2utt"), T.utt2spk_to_spk2utt(utt2spk))
    if segments:
        recos = {u: "rec-" + s for u, s in utt2spk.items()}
        T.write_kv(os.path.join(d, "segments"),
                   {u: f"{recos[u]} {i * 1.5:.2f} {i * 1.5 + 1:.2f}" for i, u in enumerate(sorted(utt2spk))})
        wavs = {r: os.path.join(root, r + ".wav") for r in set(recos.values())}
    else:
        wavs = {u: os.path.join(root, u + ".wav") for u in utt2spk}
    if wav:
        for p in wavs.values():
            write(p, "")
        T.write_kv(os.path.join(d, "wav.scp"), wavs)
    if feats:
        ark = os.path.join(root, "feats.ark")
        write(ark, "")
        T.write_kv(os.path.join(d, "feats.scp"), {u: f"{ark}:{10 * i + 5}" for i, u in enumerate(sorted(utt2spk))})
        T.write_kv(os.path.join(d, "utt2num_frames"), {u: str(100 + i) for i, u in enumerate(sorted(utt2spk))})
        write(os.path.join(d, "frame_shift"), "0.01\n")
    if text:
        T.write_kv(os.path.join(d, "text"), {u: "hello world" for u in utt2spk})
    return d


def read(path):
    with open(path) as f:
        return f.read()


# ----------------------------------------------------------------------------- tables

def test_read_table_and_kv(tmp_path):
    p = str(tmp_path / "wav.scp")
    write(p, "a sox a.wav -t wav - |\nb  b.wav\t\n")
    assert T.read_kv(p) == {"a": "sox a.wav -t wav - |", "b": "b.wav"}
    assert T.read_table(p) == {"a": ["sox", "a.wav", "-t", "wav", "-", "|"], "b": ["b.wav"]}


@pytest.mark.parametrize("content, kwargs, where, what", [
    ("a 1\n\nb 2\n", {}, ":2:", "empty line"),
    ("a 1\nb\n", {}, ":2:", "at least 2 fields"),
    ("a 1 2\n", {"max_fields": 2}, ":1:", "exactly 2 fields"),
    ("a 1\nb 2\na 3\n", {}, ":3:", "duplicate key 'a' (first at line 1)"),
    ("a 1\nc 2\nb 3\n", {}, ":3:", "not sorted"),
    ("a 1\nB 2\n", {}, ":2:", "not sorted"),  # C order: 'B' (0x42) sorts before 'a' (0x61)
    ("a 1\n b 2\n", {}, ":2:", "starts with whitespace"),
    ("a\u00a0b 1\n", {}, ":1:", "U+00A0"),
])
def test_read_table_errors_name_file_and_line(tmp_path, content, kwargs, where, what):
    p = str(tmp_path / "utt2spk")
    write(p, content)
    with pytest.raises(DataError) as e:
        T.read_table(p, **kwargs)
    assert f"{p}{where}" in str(e.value) and what in str(e.value)


def test_read_table_c_order_and_unsorted_option(tmp_path):
    p = str(tmp_path / "t")
    write(p, "A 1\nB 1\na 1\na-1 1\na_1 1\n\u00e9 1\n")  # C (byte) order
    assert list(T.read_table(p)) == ["A", "B", "a", "a-1", "a_1", "\u00e9"]
    write(p, "b 1\na 1\n")
    assert T.read_table(p, check_sorted=False) == {"b": ["1"], "a": ["1"]}


def test_read_table_non_utf8_and_missing(tmp_path):
    p = str(tmp_path / "text")
    write(p, b"a ok\nb caf\xe9\n", "wb")
    with pytest.raises(DataError, match=rf"{p}:2: not valid UTF-8"):
        T.read_kv(p)
    with pytest.raises(DataError, match="nothere: cannot read"):
        T.read_kv(str(tmp_path / "nothere"))


def test_write_kv_sorts_atomically_and_round_trips(tmp_path):
    p = str(tmp_path / "x")
    T.write_kv(p, {"b": "2 3", "a": ["x", "y"], "B": "", "\u00e9": "e"})
    assert read(p) == "B\na x y\nb 2 3\n\u00e9 e\n"
    assert T.read_kv(p, min_fields=1) == {"B": "", "a": "x y", "b": "2 3", "\u00e9": "e"}
    with pytest.raises(DataError, match="whitespace"):
        T.write_kv(p, {"a b": "1"})
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_spk2utt_conversions():
    utt2spk = {"s2-b": "s2", "s1-b": "s1", "s1-a": "s1"}
    spk2utt = T.utt2spk_to_spk2utt(utt2spk)
    assert spk2utt == {"s1": ["s1-a", "s1-b"], "s2": ["s2-b"]} and list(spk2utt) == ["s1", "s2"]
    assert list(T.spk2utt_to_utt2spk(spk2utt).items()) == [("s1-a", "s1"), ("s1-b", "s1"), ("s2-b", "s2")]
    with pytest.raises(DataError, match="'u1' is listed under speakers 'a' and 'b'"):
        T.spk2utt_to_utt2spk({"a": ["u1"], "b": ["u1"]})


# ----------------------------------------------------------------------------- load / validate

def test_load_data_dir_types(tmp_path):
    d = make_dir(str(tmp_path), wav=True, feats=True, segments=True, text=True)
    os.unlink(os.path.join(d, "spk2utt"))
    dd = D.load_data_dir(d)
    assert dd.utts == ["s1-u1", "s1-u2", "s2-u1", "s2-u2", "s2-u3", "s3-u1"]
    assert dd.spk2utt == {"s1": ["s1-u1", "s1-u2"], "s2": ["s2-u1", "s2-u2", "s2-u3"], "s3": ["s3-u1"]}
    assert dd.segments["s1-u2"] == ("rec-s1", 1.5, 2.5)
    assert dd.utt2num_frames["s1-u2"] == 101 and dd.frame_shift == 0.01
    assert dd.text["s3-u1"] == "hello world" and dd.utt2cond is None and dd.spk2gender is None


def test_load_data_dir_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        D.load_data_dir(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "d")
    with pytest.raises(DataError, match="utt2spk: missing"):
        D.load_data_dir(str(tmp_path / "d"))
    write(str(tmp_path / "d" / "utt2spk"), "")
    with pytest.raises(DataError, match="utt2spk: empty"):
        D.load_data_dir(str(tmp_path / "d"))


def test_load_bad_numbers_name_line(tmp_path):
    d = make_dir(str(tmp_path), feats=True)
    write(os.path.join(d, "utt2num_frames"), "s1-u1 100\ns1-u2 1e3\n")
    with pytest.raises(DataError, match=r"utt2num_frames:2: expected an integer frame count"):
        D.load_data_dir(d)
    write(os.path.join(d, "utt2num_frames"), "s1-u1 100\n")
    write(os.path.join(d, "frame_shift"), "ten ms\n")
    with pytest.raises(DataError, match=r"frame_shift:1: expected one number"):
        D.load_data_dir(d)


def test_validate_good_dirs(tmp_path):
    d = make_dir(str(tmp_path / "a"), feats=True, text=True)
    dd = D.validate_data_dir(d, need_feats=True)
    assert len(dd.utts) == 6
    D.validate_data_dir(make_dir(str(tmp_path / "b"), segments=True))
    d = make_dir(str(tmp_path / "c"), wav=False, feats=True)
    D.validate_data_dir(d)  # features only: wav.scp not needed
    with pytest.raises(DataError, match="wav.scp: missing"):
        D.validate_data_dir(d, need_wav=True)


def _expect(d, match, **kw):
    with pytest.raises(DataError) as e:
        D.validate_data_dir(d, **kw)
    assert match in str(e.value), str(e.value)
    return str(e.value)


def test_validate_speaker_prefix(tmp_path):
    d = make_dir(str(tmp_path))
    write(os.path.join(d, "utt2spk"), "s1-u1 s1\ns1-u2 s2\n")
    write(os.path.join(d, "spk2utt"), "s1 s1-u1\ns2 s1-u2\n")
    _expect(d, f"{d}/utt2spk:2: speaker id 's2' is not a prefix of utterance id 's1-u2'", need_wav=False)


def test_validate_speaker_order_disagrees(tmp_path):
    d = str(tmp_path / "d")
    write(os.path.join(d, "utt2spk"), "a1-x a1\na2 a\n")  # prefixes hold, but spk order != utt order
    write(os.path.join(d, "spk2utt"), "a a2\na1 a1-x\n")
    _expect(d, "sorting by speaker and by utterance disagree", need_wav=False)


def test_validate_spk2utt(tmp_path):
    d = make_dir(str(tmp_path))
    write(os.path.join(d, "spk2utt"), "s1 s1-u1 s1-u2\ns2 s2-u1 s2-u3\ns3 s3-u1\n")
    _expect(d, f"{d}/spk2utt:2: speaker 's2' disagrees with utt2spk")
    write(os.path.join(d, "spk2utt"), "s1 s1-u2 s1-u1\ns2 s2-u1 s2-u2 s2-u3\ns3 s3-u1\n")
    _expect(d, "spk2utt:1: speaker 's1' disagrees with utt2spk (utterances not in C order")
    write(os.path.join(d, "spk2utt"), "s1 s1-u1 s1-u2\ns2 s2-u1 s2-u2 s2-u3\n")
    _expect(d, f"speaker(s) of utt2spk missing: 's3' ({d}/utt2spk:6)")
    os.unlink(os.path.join(d, "spk2utt"))
    _expect(d, "spk2utt: missing")


def test_validate_wav_scp_keys_and_files(tmp_path):
    d = make_dir(str(tmp_path))
    wav = T.read_kv(os.path.join(d, "wav.scp"))
    T.write_kv(os.path.join(d, "wav.scp"), {k: v for k, v in wav.items() if k != "s2-u2"})
    _expect(d, "wav.scp: 1 key(s) of utt2spk missing: 's2-u2'")
    T.write_kv(os.path.join(d, "wav.scp"), dict(wav, **{"s2-u9": wav["s2-u2"]}))
    _expect(d, f"{d}/wav.scp:6: key 's2-u9' is not in utt2spk")
    T.write_kv(os.path.join(d, "wav.scp"), wav)
    os.unlink(wav["s2-u1"])
    _expect(d, f"{d}/wav.scp:3: file not found: {wav['s2-u1']}")
    D.validate_data_dir(d, check_files=False)
    T.write_kv(os.path.join(d, "wav.scp"), dict(wav, **{"s2-u1": "sox x.flac -t wav - |"}))
    D.validate_data_dir(d)  # pipes are not checked


def test_validate_feats(tmp_path):
    d = make_dir(str(tmp_path), feats=True)
    os.unlink(str(tmp_path / "feats.ark"))
    _expect(d, f"{d}/feats.scp:1: file not found: {tmp_path}/feats.ark")
    d2 = make_dir(str(tmp_path / "b"))
    _expect(d2, "feats.scp: missing", need_feats=True)


def test_validate_segments(tmp_path):
    d = make_dir(str(tmp_path), segments=True)
    seg = T.read_kv(os.path.join(d, "segments"))
    T.write_kv(os.path.join(d, "segments"), dict(seg, **{"s1-u2": "rec-s1 3.0 2.0"}))
    _expect(d, f"{d}/segments:2: need 0 <= start < end")
    T.write_kv(os.path.join(d, "segments"), dict(seg, **{"s1-u2": "rec-zz 1.0 2.0"}))
    msg = _expect(d, "wav.scp: 1 key(s) of the recordings of segments missing: 'rec-zz'")
    assert "wav.scp:1: key 'rec-s1' is not in the recordings" not in msg  # rec-s1 still used by s1-u1


def test_validate_other_tables(tmp_path):
    d = make_dir(str(tmp_path), feats=True)
    write(os.path.join(d, "utt2num_frames"), "".join(f"{u} {0 if u == 's2-u1' else 5}\n" for u in
                                                    D.load_data_dir(d).utts))
    _expect(d, f"{d}/utt2num_frames:3: value must be > 0, got 0")
    d = make_dir(str(tmp_path / "b"), feats=True)
    write(os.path.join(d, "frame_shift"), "-0.01\n")
    _expect(d, "frame_shift:1: frame shift must be > 0")
    write(os.path.join(d, "frame_shift"), "0.01\n")
    write(os.path.join(d, "spk2gender"), "s1 m\ns2 x\ns3 f\n")
    _expect(d, "spk2gender:2: gender must be 'm' or 'f', got 'x'")
    write(os.path.join(d, "spk2gender"), "s1 m\ns2 f\n")
    _expect(d, "spk2gender: 1 key(s) of spk2utt missing: 's3'")
    os.unlink(os.path.join(d, "spk2gender"))
    write(os.path.join(d, "text"), "s1-u1 hi\n")
    _expect(d, "text: 5 key(s) of utt2spk missing")


def test_validate_reports_all_problems(tmp_path):
    d = make_dir(str(tmp_path), feats=True)
    write(os.path.join(d, "text"), "s1-u1 hi\n")
    write(os.path.join(d, "frame_shift"), "0\n")
    msg = _expect(d, "2 problems")
    assert "text:" in msg and "frame_shift:1:" in msg


# ----------------------------------------------------------------------------- fix

def test_fix_data_dir(tmp_path, caplog):
    d = make_dir(str(tmp_path), feats=True, text=True)
    before = read(os.path.join(d, "utt2spk"))
    write(os.path.join(d, "utt2spk"), "s3-u1 s3\n" + before + "s1-u1 s1\n\n")  # unsorted, duplicate, empty line
    feats = T.read_kv(os.path.join(d, "feats.scp"))
    write(os.path.join(d, "feats.scp"), "".join(f"{u} {v}\n" for u, v in reversed(feats.items()) if u != "s2-u2")
          + "zz-u1 /x.ark:1\n")
    text = T.read_kv(os.path.join(d, "text"))
    T.write_kv(os.path.join(d, "text"), {u: t for u, t in text.items() if u != "s3-u1"})
    write(os.path.join(d, "spk2utt"), "junk line\n")
    with caplog.at_level(logging.WARNING, logger="fhvae.datadir"):
        kept, removed = D.fix_data_dir(d)
    assert (kept, removed) == (4, 2)
    assert "kept 4 of 6 utterances" in caplog.text
    assert "utt2spk: dropped 2 lines (utt 's2-u2' is not in feats.scp; utt 's3-u1' is not in text)" in caplog.text
    assert "feats.scp: dropped 2 lines (utt 's3-u1' is not in text; utt 'zz-u1' has no utt2spk entry)" in caplog.text
    assert "text: dropped 1 line (utt 's2-u2' is not in feats.scp)" in caplog.text
    dd = D.validate_data_dir(d, need_feats=True)
    assert dd.utts == ["s1-u1", "s1-u2", "s2-u1", "s2-u3"]
    assert dd.spk2utt == {"s1": ["s1-u1", "s1-u2"], "s2": ["s2-u1", "s2-u3"]}
    assert list(dd.utt2num_frames) == dd.utts and list(dd.wav_scp) == dd.utts
    assert read(os.path.join(d, ".backup", "spk2utt")) == "junk line\n"
    assert read(os.path.join(d, ".backup", "utt2spk")).startswith("s3-u1 s3\n")


def test_fix_data_dir_segments_and_speakers(tmp_path):
    d = make_dir(str(tmp_path), segments=True)
    wav = T.read_kv(os.path.join(d, "wav.scp"))
    T.write_kv(os.path.join(d, "wav.scp"), dict((k, v) for k, v in wav.items() if k != "rec-s2"),)
    write(os.path.join(d, "spk2gender"), "s1 m\ns2 f\n")
    assert D.fix_data_dir(d) == (2, 4)  # s2 lost its recording, s3 has no gender
    dd = D.validate_data_dir(d)
    assert dd.utts == ["s1-u1", "s1-u2"] and list(dd.wav_scp) == ["rec-s1"] and dd.spk2gender == {"s1": "m"}


def test_fix_data_dir_nothing_left(tmp_path):
    d = make_dir(str(tmp_path))
    write(os.path.join(d, "text"), "other-u1 hi\n")
    with pytest.raises(DataError, match="no utterance is in all of"):
        D.fix_data_dir(d)
    with pytest.raises(DataError, match="utt2spk: missing"):
        os.unlink(os.path.join(d, "utt2spk"))
        D.fix_data_dir(d)


# ----------------------------------------------------------------------------- split / subset

def test_split_balanced_by_speaker(tmp_path):
    counts = (("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1), ("f", 1))
    d = make_dir(str(tmp_path), counts, feats=True, segments=True)
    parts = D.split_data_dir(d, 2)
    assert parts == [os.path.join(d, "split2", "1"), os.path.join(d, "split2", "2")]
    full = D.load_data_dir(d)
    seen = {}
    sizes = []
    for p in parts:
        dd = D.validate_data_dir(p, need_feats=True)
        sizes.append(len(dd.utts))
        for s in dd.spk2utt:
            assert s not in seen, f"speaker {s} in two parts"
            seen[s] = p
            assert dd.spk2utt[s] == full.spk2utt[s]  # whole speaker in one part
        assert list(dd.feats_scp) == dd.utts and list(dd.segments) == dd.utts
        assert set(dd.wav_scp) == {r for r, _, _ in dd.segments.values()}
        assert dd.frame_shift == 0.01
    assert sorted(seen) == sorted(full.spk2utt) and sizes == [8, 8]


def test_split_clamps_to_speakers(tmp_path, caplog):
    d = make_dir(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="fhvae.datadir"):
        parts = D.split_data_dir(d, 10)
    assert len(parts) == 3 and all(p.startswith(os.path.join(d, "split3")) for p in parts)
    assert "asked for 10 parts but there are only 3 speakers" in caplog.text
    assert not os.path.exists(os.path.join(d, "split10"))
    with pytest.raises(DataError, match=">= 1"):
        D.split_data_dir(d, 0)


def test_split_reuses_up_to_date_split(tmp_path):
    d = make_dir(str(tmp_path))
    p1 = D.split_data_dir(d, 2)[0]
    t1 = os.stat(os.path.join(p1, "utt2spk")).st_mtime_ns
    D.split_data_dir(d, 2)
    assert os.stat(os.path.join(p1, "utt2spk")).st_mtime_ns == t1
    T.write_kv(os.path.join(d, "text"), {u: "x" for u in D.load_data_dir(d).utts})  # source changed
    st = os.stat(os.path.join(d, "text"))
    os.utime(os.path.join(d, "text"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    D.split_data_dir(d, 2)
    assert os.path.exists(os.path.join(p1, "text"))
    os.unlink(os.path.join(d, "text"))  # a table removed: the split is stale too
    D.split_data_dir(d, 2)
    assert not os.path.exists(os.path.join(p1, "text"))


def test_subset_by_utts_and_spks(tmp_path, caplog):
    d = make_dir(str(tmp_path), segments=True, text=True)
    dst = str(tmp_path / "sub")
    with caplog.at_level(logging.WARNING, logger="fhvae.datadir"):
        assert D.subset_data_dir(d, dst, utts=["s2-u3", "s1-u1", "nobody"]) == 2
    assert "1 utterance id(s) not in the data dir" in caplog.text
    dd = D.validate_data_dir(dst)
    assert dd.utts == ["s1-u1", "s2-u3"] and set(dd.wav_scp) == {"rec-s1", "rec-s2"}
    assert list(dd.text) == dd.utts
    d2 = make_dir(str(tmp_path / "b"), feats=True)
    D.subset_data_dir(d2, dst, spks=["s2"])
    dd = D.validate_data_dir(dst, need_feats=True)
    assert dd.utts == ["s2-u1", "s2-u2", "s2-u3"] and dd.segments is None and dd.text is None  # stale removed
    with pytest.raises(DataError, match="no utterance"):
        D.subset_data_dir(d2, dst, spks=["zz"])


def _write_wav(path, seconds):
    import numpy as np
    from scipy.io import wavfile
    wavfile.write(path, 16000, np.zeros(int(round(seconds * 16000)), dtype=np.int16))


def test_crop_from_wav_lengths(tmp_path, caplog):
    d = make_dir(str(tmp_path), feats=True, text=True)  # wav.scp keyed by utterance, no segments
    lengths = {u: 0.5 + 0.75 * i for i, u in enumerate(sorted(T.read_kv(os.path.join(d, "utt2spk"))))}
    for u, sec in lengths.items():
        _write_wav(str(tmp_path / f"{u}.wav"), sec)
    T.write_kv(os.path.join(d, "utt2cond"), {u: "clean" for u in lengths})
    dst = str(tmp_path / "crop")
    with caplog.at_level(logging.INFO, logger="fhvae.datadir"):
        assert D.crop_data_dir(d, dst, 1.0) == len(lengths)
    assert "1 not longer, kept whole" in caplog.text  # the 0.5 s utterance
    dd = D.validate_data_dir(dst)
    assert dd.utts == sorted(lengths) and set(dd.wav_scp) == set(lengths)
    for u, sec in lengths.items():
        reco, start, end = dd.segments[u]
        assert reco == u
        if sec > 1.0:  # central second
            assert abs(start - (sec - 1.0) / 2) < 1e-3 and abs(end - start - 1.0) < 1e-3
        else:
            assert (start, end) == (0.0, sec)
        assert abs(dd.utt2dur[u] - (end - start)) < 1e-9
    # whole-utterance tables are not carried over; the others are
    assert dd.feats_scp is None and dd.text is None and dd.utt2num_frames is None
    assert dd.utt2cond == {u: "clean" for u in lengths}


def test_crop_within_segments_and_errors(tmp_path):
    d = make_dir(str(tmp_path), segments=True)  # segments of 1.0 s each, at 1.5 s spacing
    dst = str(tmp_path / "crop")
    D.crop_data_dir(d, dst, 0.4)
    src, out = D.load_data_dir(d), D.validate_data_dir(dst)
    for u, (reco, start, end) in src.segments.items():
        assert out.segments[u] == (reco, round(start + 0.3, 3), round(start + 0.7, 3))
    assert set(out.wav_scp) == set(src.wav_scp)
    with pytest.raises(DataError, match="duration must be > 0"):
        D.crop_data_dir(d, dst, 0)
    with pytest.raises(DataError, match="same dir"):
        D.crop_data_dir(d, d, 1.0)
    d2 = make_dir(str(tmp_path / "b"))  # empty placeholder wavs: unreadable, named with line
    with pytest.raises(DataError, match=r"wav.scp:1 \(utt s1-u1\)"):
        D.crop_data_dir(d2, dst, 1.0)
    T.write_kv(os.path.join(d2, "utt2dur"), {"s1-u1": "2.0"})
    with pytest.raises(DataError, match="utt2dur: no duration for 5 utterance"):
        D.crop_data_dir(d2, dst, 1.0)
    T.write_kv(os.path.join(d2, "utt2dur"), {u: "2.0" for u in T.read_kv(os.path.join(d2, "utt2spk"))})
    T.write_kv(os.path.join(d2, "wav.scp"), {"s1-u1": str(tmp_path / "b" / "s1-u1.wav")})
    with pytest.raises(DataError, match="5 utterance.s. have no recording in wav.scp"):
        D.crop_data_dir(d2, dst, 1.0)


# ----------------------------------------------------------------------------- trials

UTT2SPK = {f"{s}-u{k}": s for s, n in (("a", 4), ("b", 3), ("c", 2), ("d", 1)) for k in range(n)}


def _check_trials(trials, utt2spk):
    pairs = [(e, t) for e, t, _ in trials]
    assert len(set(pairs)) == len(pairs)
    for e, t, lab in trials:
        assert e < t
        assert lab == ("target" if utt2spk[e] == utt2spk[t] else "nontarget")


def test_trials_all_pairs():
    trials = D.make_trials(UTT2SPK)
    _check_trials(trials, UTT2SPK)
    n_tgt = sum(lab == "target" for *_, lab in trials)
    assert n_tgt == 6 + 3 + 1 and len(trials) == 10 * 9 // 2
    with_self = D.make_trials(UTT2SPK, exclude_same_utt=False)
    assert sum(e == t for e, t, _ in with_self) == 10 and len(with_self) == 45 + 10
    assert all(lab == "target" for e, t, lab in with_self if e == t)


@pytest.mark.parametrize("n_target, n_nontarget", [(3, 5), (9, 34), (10, 35), (0, 1)])
def test_trials_sampled_counts_and_determinism(n_target, n_nontarget):
    trials = D.make_trials(UTT2SPK, n_target=n_target, n_nontarget=n_nontarget, seed=3)
    _check_trials(trials, UTT2SPK)
    assert sum(lab == "target" for *_, lab in trials) == n_target
    assert sum(lab == "nontarget" for *_, lab in trials) == n_nontarget
    assert D.make_trials(UTT2SPK, n_target=n_target, n_nontarget=n_nontarget, seed=3) == trials


def test_trials_seed_changes_sample():
    runs = {tuple(D.make_trials(UTT2SPK, n_target=3, n_nontarget=5, seed=s)) for s in range(5)}
    assert len(runs) > 1


def test_trials_errors(tmp_path):
    with pytest.raises(DataError, match="at least 2 speakers"):
        D.make_trials({"a-1": "a", "a-2": "a"})
    with pytest.raises(DataError, match="asked for 11 target trials but only 10 exist"):
        D.make_trials(UTT2SPK, n_target=11)
    with pytest.raises(DataError, match="no target trials possible"):
        D.make_trials({"a-1": "a", "b-1": "b"})
    p = str(tmp_path / "trials")
    D.write_trials(p, [("a-u0", "b-u1", "nontarget"), ("a-u0", "a-u1", "target")])
    assert read(p) == "a-u0 b-u1 nontarget\na-u0 a-u1 target\n"


# ----------------------------------------------------------------------------- wrappers / CLI

def sh(script, *args, stdin=None, cwd=None):
    return subprocess.run([os.path.join(REPO, "utils", script), *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd)


def test_wrappers_validate_split_fix(tmp_path):
    d = make_dir(str(tmp_path))
    r = sh("validate_data_dir.sh", "--no-feats", d)
    assert r.returncode == 0, r.stderr
    write(os.path.join(d, "utt2spk"), "s2-u1 s2\ns1-u1 s1\n")
    r = sh("validate_data_dir.sh", d)
    assert r.returncode == 1 and f"{d}/utt2spk:2: keys not sorted" in r.stderr and "Traceback" not in r.stderr
    r = sh("fix_data_dir.sh", d)
    assert r.returncode == 0 and read(os.path.join(d, "utt2spk")) == "s1-u1 s1\ns2-u1 s2\n"
    r = sh("split_data.sh", d, "5")
    assert r.returncode == 0 and r.stdout == "2\n" and "only 2 speakers" in r.stderr
    assert os.path.isdir(os.path.join(d, "split2", "2"))


def test_wrappers_tables_subset_trials(tmp_path):
    r = sh("utt2spk_to_spk2utt.sh", stdin="b-1 b\na-2 a\na-1 a\n")
    assert r.returncode == 0 and r.stdout == "a a-1 a-2\nb b-1\n", r.stderr
    r = sh("spk2utt_to_utt2spk.sh", stdin=r.stdout)
    assert r.stdout == "a-1 a\na-2 a\nb-1 b\n"
    d = make_dir(str(tmp_path))
    write(str(tmp_path / "spk.list"), "s1\ns3\n")
    r = sh("subset_data_dir.sh", "--spk-list", str(tmp_path / "spk.list"), d, str(tmp_path / "sub"))
    assert r.returncode == 0, r.stderr
    assert list(T.read_kv(str(tmp_path / "sub" / "utt2spk"))) == ["s1-u1", "s1-u2", "s3-u1"]
    trials = str(tmp_path / "trials")
    r = sh("make_trials.sh", "--n-target", "1", "--n-nontarget", "2", os.path.join(d, "utt2spk"), trials)
    assert r.returncode == 0, r.stderr
    lines = read(trials).split("\n")[:-1]
    assert len(lines) == 3 and sorted(x.split()[2] for x in lines) == ["nontarget", "nontarget", "target"]


def test_cli_help():
    for sub in ("validate", "split", "make-trials"):
        r = subprocess.run([sys.executable, "-m", "fhvae.bin.data_dir", sub, "--help"], capture_output=True,
                           text=True, cwd=REPO)
        assert r.returncode == 0 and "usage:" in r.stdout


def test_extra_utt2_spk2_tables_survive_subset_split_crop_fix(tmp_path):
    """utt2mic / utt2noise / spk2accent (any utt2* / spk2* table) go through every tool, filtered."""
    d = make_dir(str(tmp_path), segments=True)
    utts = T.read_kv(os.path.join(d, "utt2spk"))
    T.write_kv(os.path.join(d, "utt2mic"), {u: f"mic{i % 2}" for i, u in enumerate(sorted(utts))})
    T.write_kv(os.path.join(d, "utt2noise"), {u: "babble 5dB" for u in utts})
    T.write_kv(os.path.join(d, "spk2accent"), {"s1": "scottish", "s2": "rp", "s3": "us"})
    write(os.path.join(d, "utt2spk.bak"), "junk\n")  # not a table name: left alone

    def check(dst, want_utts):
        got = T.read_kv(os.path.join(dst, "utt2mic"))
        assert sorted(got) == sorted(want_utts) and T.read_kv(os.path.join(dst, "utt2noise"))[want_utts[0]] == "babble 5dB"
        spks = {utts[u] for u in want_utts}
        assert sorted(T.read_kv(os.path.join(dst, "spk2accent"))) == sorted(spks)
        assert not os.path.exists(os.path.join(dst, "utt2spk.bak"))

    D.subset_data_dir(d, str(tmp_path / "sub"), spks=["s2"])
    check(str(tmp_path / "sub"), [u for u in sorted(utts) if utts[u] == "s2"])
    parts = D.split_data_dir(d, 2)
    for p in parts:
        check(p, sorted(T.read_kv(os.path.join(p, "utt2spk"))))
    D.crop_data_dir(d, str(tmp_path / "crop"), 0.4)
    check(str(tmp_path / "crop"), sorted(utts))
    # fix: an extra table is filtered to the kept utterances, and never drops one itself
    first = sorted(utts)[0]
    T.write_kv(os.path.join(d, "text"), {u: "a b" for u in utts if u != first})
    T.write_kv(os.path.join(d, "utt2mic"), {u: "mic0" for u in sorted(utts)[1:3]})
    assert D.fix_data_dir(d) == (len(utts) - 1, 1)
    assert sorted(T.read_kv(os.path.join(d, "utt2mic"))) == sorted(utts)[1:3]
    assert first not in T.read_kv(os.path.join(d, "utt2noise"))
    # a stale extra table in the destination is removed
    sub = str(tmp_path / "sub")
    os.unlink(os.path.join(d, "utt2noise"))
    D.subset_data_dir(d, sub, spks=["s2"])
    assert not os.path.exists(os.path.join(sub, "utt2noise"))
