"""What a Kaldi user brings: segments ending at -1, CRLF tables, broken utterances, empty wavs,
data dirs with many problems, fix reports, small PLDA training sets, the vector file names."""
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fhvae import datadir as D
from fhvae.errors import DataError
from fhvae.eval.backends import PLDABackend
from fhvae.eval.sv import extract_baseline, read_trials
from fhvae.features.fbank import FbankConfig, compute_fbank_job, make_fbank
from fhvae.features.stats import compute_stats
from fhvae.io import tables as T
from fhvae.io.ark import ArkScpWriter, FeatReader, read_scp
from tests.test_datadir import make_dir, read, write
from tests.test_fbank import SR, tone, write_wav

CRLF = "Windows (CRLF) line ending; convert with dos2unix or sed -i 's/\\r$//'"


def no_temps(d):
    return not [f for f in os.listdir(d) if ".tmp" in f]


# ---------------------------------------------------------------------- segments end -1

def _segments_dir(tmp_path):
    """One 3 s recording; u1 = [0, 1) s, u2 = [1 s, end) written as Kaldi's end time -1."""
    d = tmp_path / "data"
    d.mkdir()
    write_wav(tmp_path / "rec.wav", (tone(3 * SR) * 32767).astype(np.int16))
    write(str(d / "wav.scp"), f"rec {tmp_path}/rec.wav\n")
    write(str(d / "segments"), "spk-u1 rec 0.0 1.0\nspk-u2 rec 1.0 -1\n")
    write(str(d / "utt2spk"), "spk-u1 spk\nspk-u2 spk\n")
    write(str(d / "spk2utt"), "spk spk-u1 spk-u2\n")
    return str(d)


def test_segments_end_minus_one_validates_slices_and_crops(tmp_path):
    d = _segments_dir(tmp_path)
    assert D.validate_data_dir(d).segments["spk-u2"] == ("rec", 1.0, -1.0)
    cfg = FbankConfig()
    n, skipped = compute_fbank_job(d, str(tmp_path / "f.ark"), str(tmp_path / "f.scp"), str(tmp_path / "n2f"), cfg)
    assert (n, skipped) == (2, [])
    with FeatReader(str(tmp_path / "f.scp")) as r:
        assert r.shape("spk-u2") == (cfg.num_frames(2 * SR), 80)   # 1 s to the end of the 3 s recording
    D.crop_data_dir(d, str(tmp_path / "crop"), 0.5)
    assert D.load_data_dir(str(tmp_path / "crop")).segments["spk-u2"] == ("rec", 1.75, 2.25)
    write(os.path.join(d, "segments"), "spk-u1 rec 0.0 1.0\nspk-u2 rec 1.0 -2\n")   # only -1 means "the end"
    with pytest.raises(DataError, match=re.escape(f"{d}/segments:2: need 0 <= start < end (or end -1 for the end "
                                                  "of the recording), got start=1.0 end=-2.0")):
        D.validate_data_dir(d)


# ---------------------------------------------------------------------- compute-stats skips broken utts

def _feats(d, n=30, nan=(), dim=3):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    mats = {f"u{i:02d}": rng.normal(size=(5, dim)).astype(np.float32) for i in range(n)}
    with ArkScpWriter(os.path.join(d, "raw.ark"), os.path.join(d, "feats.scp")) as w:
        for k in sorted(mats):
            w.write(k, mats[k])
    scp = read(os.path.join(d, "feats.scp"))
    # NaN cannot be written by ArkScpWriter: patch the float bytes of the chosen utterances
    with open(os.path.join(d, "raw.ark"), "r+b") as f:
        for line in scp.splitlines():
            key, ark_off = line.split()
            if key in nan:
                f.seek(int(ark_off.rsplit(":", 1)[1]) + 15)   # '\0BFM ' + 2 x (size byte + int32) = 15
                f.write(np.float32(np.nan).tobytes())
                mats[key][0, 0] = np.nan
    return mats


def test_compute_stats_skips_nan_and_unreadable_utts(tmp_path, caplog):
    d = str(tmp_path / "train")
    mats = _feats(d, nan=("u03",))
    with open(os.path.join(d, "feats.scp"), "a") as f:          # an entry past the end of the ark
        f.write(f"u99 {d}/raw.ark:999999\n")
    with caplog.at_level(logging.WARNING, logger="fhvae.features.stats"):
        st = compute_stats(os.path.join(d, "feats.scp"), max_bad=0.1)
    good = np.concatenate([m for k, m in mats.items() if k != "u03"]).astype(np.float64)
    np.testing.assert_allclose(st.mean, good.mean(0), rtol=1e-6)
    assert st.count == len(good)
    assert re.search(r"feats.scp:4: utt 'u03' has NaN/inf values \(ark .*raw.ark:\d+\)", caplog.text)
    assert f"feats.scp:31: utt 'u99': cannot read matrix from {d}/raw.ark" in caplog.text
    assert "skipped 2 of 31 utterances" in caplog.text
    # past the fraction: stop, name the first, write nothing
    _feats(d, nan=("u03", "u07"))
    r = subprocess.run([sys.executable, "-m", "fhvae.bin.compute_stats", d], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.search(r"error: .*feats.scp: 2 of 30 utterances are broken \(more than the fraction "
                     r"max_bad_utts=0.05\); first: .*feats.scp:4: utt 'u03' has NaN/inf", r.stderr), r.stderr
    assert not os.path.exists(os.path.join(d, "stats.npz")) and no_temps(d)
    r = subprocess.run([sys.executable, "-m", "fhvae.bin.compute_stats", "--max-bad-utts", "0.1", d],
                       capture_output=True, text=True)
    assert r.returncode == 0 and os.path.exists(os.path.join(d, "stats.npz")), r.stderr
    assert "skipping broken utterance" in r.stderr and "'u07'" in r.stderr


# ---------------------------------------------------------------------- empty and short wavs

def test_fbank_skips_and_lists_empty_and_short_wavs(tmp_path, caplog):
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    lengths = {"s1-a": 4000, "s1-empty": 0, "s1-short": 200}
    for u, n in lengths.items():
        write_wav(tmp_path / f"{u}.wav", (tone(n) * 32767).astype(np.int16))
    T.write_kv(str(d / "wav.scp"), {u: f"{tmp_path}/{u}.wav" for u in lengths})
    T.write_kv(str(d / "utt2spk"), {u: "s1" for u in lengths})
    T.write_kv(str(d / "spk2utt"), {"s1": sorted(lengths)})
    with caplog.at_level(logging.WARNING):
        skipped = make_fbank(str(d), str(tmp_path / "log"), str(tmp_path / "fbank"), nj=1)
    assert skipped == ["s1-empty", "s1-short"]
    assert read(str(tmp_path / "log" / "make_fbank_train.skipped")) == "s1-empty\ns1-short\n"
    assert "2 of 3 utterances were too short for one frame or had no audio samples" in caplog.text
    assert list(read_scp(str(d / "feats.scp"))) == ["s1-a"]
    job_log = read(str(tmp_path / "log" / "make_fbank_train.1.log"))
    assert f"skipping utt s1-empty: its audio ({d}/wav.scp:2) has no samples" in job_log


# ---------------------------------------------------------------------- validate lists every problem

def test_validate_reports_every_problem_with_file_and_line(tmp_path):
    d = make_dir(str(tmp_path), feats=True, text=True)
    write(os.path.join(d, "wav.scp"), read(os.path.join(d, "wav.scp")).replace("\n", "\r\n", 1))
    write(os.path.join(d, "spk2gender"), "s1 m\ns2 x\ns3 f\n")
    write(os.path.join(d, "utt2num_frames"), read(os.path.join(d, "utt2num_frames")).replace(" 102\n", " 0\n"))
    write(os.path.join(d, "text"), "s1-u1 hi\ns1-u1 again\ns1-u2 hi\ns2-u1 hi\ns2-u2 hi\ns2-u3 hi\n")
    os.unlink(str(tmp_path / "feats.ark"))
    with pytest.raises(DataError) as e:
        D.validate_data_dir(d)
    msg = str(e.value)
    for part in (f"{d}: ", f"{d}/wav.scp:1: {CRLF}", f"{d}/text:2: duplicate key 's1-u1' (first at line 1)",
                 f"{d}/text: 1 key(s) of utt2spk missing: 's3-u1' ({d}/utt2spk:6)",
                 f"{d}/spk2gender:2: gender must be 'm' or 'f', got 'x'",
                 f"{d}/utt2num_frames:3: value must be > 0, got 0", f"{d}/feats.scp:1: file not found"):
        assert part in msg, msg
    assert msg.count("file not found") == 6 and msg.startswith(f"{d}: 11 problems:")


def test_validate_caps_the_list(tmp_path):
    d = make_dir(str(tmp_path), spk_counts=(("s1", 30),))
    for p in T.read_kv(os.path.join(d, "wav.scp")).values():
        os.unlink(p)
    write(os.path.join(d, "frame_shift"), "0\n")
    with pytest.raises(DataError) as e:
        D.validate_data_dir(d)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{d}: 31 problems:" and len(lines) == 1 + 20 + 1
    assert lines[1].endswith("wav.scp:1: file not found: " + str(tmp_path / "s1-u1.wav"))
    assert lines[-1] == "  ... and 11 more"


# ---------------------------------------------------------------------- fix says what it dropped

def test_fix_reports_dropped_lines_per_file(tmp_path, caplog):
    d = make_dir(str(tmp_path), spk_counts=(("s1", 5), ("s2", 6)), text=True)
    write(os.path.join(d, "wav.scp"), read(os.path.join(d, "wav.scp")) + f"zz-x {tmp_path}/s1-u1.wav\n")
    write(os.path.join(d, "text"), read(os.path.join(d, "text")) + "zz-x hello\n")
    with caplog.at_level(logging.INFO, logger="fhvae.datadir"):
        assert D.fix_data_dir(d) == (11, 0)
    assert "kept all 11 utterances" in caplog.text
    assert "wav.scp: dropped 1 line (utt 'zz-x' has no utt2spk entry)" in caplog.text
    assert "text: dropped 1 line (utt 'zz-x' has no utt2spk entry)" in caplog.text
    assert "zz-x" not in read(os.path.join(d, "wav.scp")) and "zz-x" in read(os.path.join(d, ".backup", "wav.scp"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fhvae.datadir"):
        D.fix_data_dir(d)
    assert "kept all 11 utterances (files sorted" in caplog.text and ": dropped" not in caplog.text


# ---------------------------------------------------------------------- CRLF tables are refused

@pytest.mark.parametrize("name, text, read_it", [
    ("utt2spk", "a-1 a\r\n", lambda p: T.read_kv(p)),
    ("wav.scp", "a-1 /x.wav\na-2 /y.wav\r\n", lambda p: T.read_kv(p)),
    ("segments", "a-1 r 0 1\r\n", lambda p: T.read_table(p, min_fields=4)),
    ("text", "a-1 hello world\r\n", lambda p: T.read_kv(p, min_fields=1)),
    ("feats.scp", "a-1 /x.ark:5\r\n", lambda p: FeatReader(p)),
    ("vectors.scp", "a-1 /x.ark:5\na-2 /x.ark:9\r\n", lambda p: read_scp(p)),
    ("trials", "a-1 a-2 target\r\n", lambda p: read_trials(p)),
])
def test_crlf_refused_with_file_and_line(tmp_path, name, text, read_it):
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(text.encode())
    line = text.count("\n")
    with pytest.raises(DataError) as e:
        read_it(p)
    assert str(e.value) == f"{p}:{line}: {CRLF}"


def test_crlf_data_dir(tmp_path):
    d = make_dir(str(tmp_path))
    with open(os.path.join(d, "utt2spk"), "rb") as f:
        crlf = f.read().replace(b"\n", b"\r\n")
    with open(os.path.join(d, "utt2spk"), "wb") as f:
        f.write(crlf)
    with pytest.raises(DataError, match=re.escape(f"{d}/utt2spk:1: {CRLF}")):
        D.load_data_dir(d)
    with pytest.raises(DataError) as e:
        D.validate_data_dir(d)
    assert str(e.value) == f"{d}/utt2spk:1: {CRLF}"      # reported once per file
    with pytest.raises(DataError, match=re.escape(CRLF)):
        D.fix_data_dir(d)


# ---------------------------------------------------------------------- PLDA on too little data

def test_plda_warns_on_too_few_speakers_and_vectors(caplog):
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(4, 16)), 3, axis=0) + 0.3 * rng.normal(size=(12, 16))
    labels = [f"s{i // 3}" for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="fhvae.eval.backends"):
        PLDABackend(lda_dim=200).fit(x, labels)
    assert "only 4 training speakers, so LDA keeps 3 dims, not 16" in caplog.text
    assert "lower --lda-dim to 3 or train on more speakers" in caplog.text
    assert "12 vectors of 4 speakers leave 8 within-speaker degrees of freedom for 16-dim vectors" in caplog.text
    assert "Train on at least 36 vectors" in caplog.text and "--backend cosine" in caplog.text
    caplog.clear()
    x = np.repeat(rng.normal(size=(50, 8)), 10, axis=0) + 0.3 * rng.normal(size=(500, 8))
    with caplog.at_level(logging.WARNING, logger="fhvae.eval.backends"):
        PLDABackend(lda_dim=200).fit(x, [f"s{i // 10:02d}" for i in range(500)])
    assert caplog.text == ""


# ---------------------------------------------------------------------- the vector file names in --help

def test_score_sv_help_names_the_files_export_and_baseline_write(tmp_path):
    from fhvae.bin.export import EPILOG as export_help
    from fhvae.bin.score_sv import EXAMPLES
    d = str(tmp_path / "data")
    _feats(d, n=2)
    extract_baseline(d, str(tmp_path / "base"))
    written = {"svector.scp", "spk_svector.scp"} & set(re.findall(r"\w+\.scp", export_help))
    written |= {f for f in os.listdir(tmp_path / "base") if f.endswith(".scp")}
    named = set(re.findall(r"[\w/<>]+\.scp", EXAMPLES))
    assert {os.path.basename(n) for n in named} == written == {"svector.scp", "spk_svector.scp", "vectors.scp"}
    assert "exp/fhvae/export/test/svector.scp" in named and "exp/baseline/test/vectors.scp" in named
