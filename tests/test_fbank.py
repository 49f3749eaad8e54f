"""Fbank: Kaldi conventions (int16 scale, frame count, dither), a NumPy reference of the Kaldi
pipeline, config loading, audio reading, and the fbank stage end to end."""
import logging
import os
import subprocess
import sys

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
from scipy.io import wavfile

from fhvae import jobs
from fhvae.errors import ConfigError, DataError, FhvaeError
from fhvae.features.fbank import FbankConfig, compute_fbank, make_fbank
from fhvae.io.ark import FeatReader
from fhvae.io.audio import read_wav_entry, slice_segment

SR = 16000


def tone(n, seed=0):
    """Two tones plus low noise, in [-1, 1] (float32)."""
    t = np.arange(n) / SR
    noise = np.random.default_rng(seed).normal(scale=0.01, size=n)
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + noise).astype(np.float32)


def knf_direct(x, dither=0.0, bins=80):
    o = knf.FbankOptions()
    o.frame_opts.dither = dither
    o.mel_opts.num_bins = bins
    f = knf.OnlineFbank(o)
    f.accept_waveform(SR, x)
    f.input_finished()
    return np.array([f.get_frame(i) for i in range(f.num_frames_ready)])


def kaldi_fbank_numpy(x, num_bins=80, sr=SR):
    """Kaldi compute-fbank-feats written out in NumPy: 25/10 ms frames (snip_edges), DC removal,
    preemphasis 0.97, povey window, 512-point power spectrum, Kaldi mel bins, log with FLT_EPSILON floor."""
    L, S, nfft = 400, 160, 512
    T = 1 + (len(x) - L) // S
    frames = np.stack([x[t * S:t * S + L] for t in range(T)]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    pre = frames.copy()
    pre[:, 1:] -= 0.97 * frames[:, :-1]
    pre[:, 0] -= 0.97 * frames[:, 0]
    win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / (L - 1))) ** 0.85
    power = np.abs(np.fft.rfft(pre * win, nfft)) ** 2                     # (T, 257)

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (num_bins + 1)
    fft_mel = mel(np.arange(nfft // 2) * sr / nfft)                       # Kaldi skips the Nyquist bin
    W = np.zeros((num_bins, nfft // 2 + 1))
    for b in range(num_bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        w = np.where(fft_mel <= center, (fft_mel - left) / (center - left), (right - fft_mel) / (right - center))
        W[b, :nfft // 2] = np.where((fft_mel > left) & (fft_mel < right), w, 0.0)
    return np.log(np.maximum(power @ W.T, np.finfo(np.float32).eps))


# ---------------------------------------------------------------------------- features

@pytest.mark.parametrize("n", [0, 100, 399, 400, 559, 560, 4321, 16000])
def test_frame_count_snip_edges(n):
    cfg = FbankConfig()
    expected = 0 if n < 400 else 1 + (n - 400) // 160
    feats = compute_fbank(tone(n), cfg)
    assert feats.shape == (expected, 80) and feats.dtype == np.float32
    assert cfg.num_frames(n) == expected


def test_int16_scale_convention():
    x = tone(8000)
    ours = compute_fbank(x, FbankConfig())
    np.testing.assert_allclose(ours, knf_direct(x * 32768.0), rtol=0, atol=1e-5)
    raw = knf_direct(x)                                   # knf on [-1, 1] floats: ~log(32768^2) lower
    assert np.abs(ours - raw).mean() > 10


def test_matches_numpy_kaldi_pipeline():
    x = tone(SR)
    ours = compute_fbank(x, FbankConfig())
    ref = kaldi_fbank_numpy(x.astype(np.float64) * 32768.0)
    assert ours.shape == ref.shape == (98, 80)
    has_energy = ref > 1.0
    assert has_energy.mean() > 0.95
    assert np.abs(ours - ref)[has_energy].max() < 1e-3
    # and a different config really changes the result (the comparison can fail)
    assert np.abs(compute_fbank(x, FbankConfig(low_freq=100.0)) - ref).max() > 0.1


def test_dither_is_configurable():
    x = tone(4000)
    x[:2000] = 0.0                                        # digital silence: dither matters there
    a, b = compute_fbank(x, FbankConfig()), compute_fbank(x, FbankConfig())
    np.testing.assert_array_equal(a, b)                   # dither 0: deterministic
    assert a[:5].max() < -10                              # log of the floor on silence
    d = compute_fbank(x, FbankConfig(dither=1.0))
    assert np.abs(d[:5] - a[:5]).min() > 1.0


def test_config_loading(tmp_path):
    p = tmp_path / "fbank.yaml"
    p.write_text("num-mel-bins: 40\ndither: 1\nsnip_edges: false\nuse_energy: true\n")
    cfg = FbankConfig.from_yaml(p)
    assert (cfg.num_mel_bins, cfg.dither, cfg.snip_edges, cfg.dim) == (40, 1.0, False, 41)
    assert compute_fbank(tone(1000), cfg).shape == (cfg.num_frames(1000), 41) == (6, 41)
    p.write_text("num_mel_bin: 40\n")
    with pytest.raises(ConfigError, match=r"fbank.yaml \(fbank\): unknown key 'num_mel_bin'; "
                                          r"did you mean 'num_mel_bins'"):
        FbankConfig.from_yaml(p)
    with pytest.raises(ConfigError, match="snip_edges: expected true/false"):
        FbankConfig.from_dict({"snip_edges": "maybe"})
    with pytest.raises(ConfigError, match="window_type must be one of"):
        FbankConfig.from_dict({"window_type": "hann"})
    with pytest.raises(ConfigError, match="high_freq"):
        FbankConfig.from_dict({"high_freq": 9000})
    with pytest.raises(ConfigError, match="not found"):
        FbankConfig.from_yaml(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- audio

def write_wav(path, samples, rate=SR):
    wavfile.write(path, rate, samples)
    return str(path)


def test_read_wav_file_and_pipe(tmp_path):
    pcm = (tone(1600) * 32767).astype(np.int16)
    path = write_wav(tmp_path / "a.wav", pcm)
    x = read_wav_entry(path)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, pcm / 32768.0)
    np.testing.assert_array_equal(read_wav_entry(f"cat {path} |"), x)
    if subprocess.run(["which", "sox"], capture_output=True).returncode == 0:  # header without length
        np.testing.assert_array_equal(read_wav_entry(f"sox {path} -t wav - |"), x)
    f32 = write_wav(tmp_path / "f.wav", tone(800))
    np.testing.assert_array_equal(read_wav_entry(f32), tone(800))
    i32 = write_wav(tmp_path / "i.wav", pcm.astype(np.int32) << 16)
    np.testing.assert_allclose(read_wav_entry(i32), x)


def test_read_wav_errors(tmp_path):
    where = "data/x/wav.scp:3 (utt u1)"
    with pytest.raises(DataError, match=r"^data/x/wav.scp:3 \(utt u1\): audio file not found: .*nope.wav"):
        read_wav_entry(str(tmp_path / "nope.wav"), where=where)
    with pytest.raises(DataError, match=r"wav.scp:3 \(utt u1\): command .*failed with exit status 3: boom"):
        read_wav_entry("echo boom >&2; exit 3 |", where=where)
    with pytest.raises(DataError, match="failed"):                      # pipefail: early stage fails
        read_wav_entry(f"cat {tmp_path}/nope.wav | cat |", where=where)
    p8k = write_wav(tmp_path / "8k.wav", np.zeros(800, np.int16), rate=8000)
    with pytest.raises(DataError, match="sample rate 8000 Hz, expected 16000 Hz"):
        read_wav_entry(p8k, where=where)
    stereo = write_wav(tmp_path / "st.wav", np.zeros((800, 2), np.int16))
    with pytest.raises(DataError, match="has 2 channels; expected mono"):
        read_wav_entry(stereo, where=where)
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16))
    with pytest.raises(DataError, match="no audio samples"):
        read_wav_entry(empty, where=where)
    (tmp_path / "junk.wav").write_bytes(b"NIST_1A\n   1024\nsample_rate -i 16000\n")
    with pytest.raises(DataError, match="sph2pipe"):
        read_wav_entry(str(tmp_path / "junk.wav"), where=where)


def test_slice_segment():
    x = np.arange(SR * 2, dtype=np.float32)
    np.testing.assert_array_equal(slice_segment(x, 0.5, 1.0), x[8000:16000])
    assert len(slice_segment(x, 1.5, 2.2)) == 8000                      # small overshoot: clipped
    assert len(slice_segment(x, 1.0, -1)) == 16000                      # -1: to the end
    with pytest.raises(DataError, match="ends past the recording"):
        slice_segment(x, 1.0, 3.0, where="segments:4")


# ---------------------------------------------------------------------------- the stage

def make_data_dir(d, spk_utts, lengths, rate=SR, segments=False):
    """A Kaldi data dir with one wav per utterance (or one recording per speaker with segments)."""
    d.mkdir(parents=True, exist_ok=True)
    wavs = d / "wav"
    wavs.mkdir(exist_ok=True)
    utt2spk, wav_scp, segs, audio = [], [], [], {}
    for spk, utts in spk_utts.items():
        if segments:
            reco = f"{spk}-rec"
            x = np.concatenate([tone(lengths[u], seed=i) for i, u in enumerate(utts)])
            write_wav(wavs / f"{reco}.wav", (x * 32767).astype(np.int16), rate)
            wav_scp.append(f"{reco} cat {wavs}/{reco}.wav |")
            start = 0
            for u in utts:
                segs.append(f"{u} {reco} {start / SR:.4f} {(start + lengths[u]) / SR:.4f}")
                start += lengths[u]
        for i, u in enumerate(utts):
            utt2spk.append(f"{u} {spk}")
            if not segments:
                pcm = (tone(lengths[u], seed=i) * 32767).astype(np.int16)
                audio[u] = pcm / np.float32(32768.0)
                wav_scp.append(f"{u} {write_wav(wavs / f'{u}.wav', pcm, rate)}")
    (d / "utt2spk").write_text("".join(x + "\n" for x in sorted(utt2spk)))
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(sorted(u))}\n" for s, u in sorted(spk_utts.items())))
    (d / "wav.scp").write_text("".join(x + "\n" for x in sorted(wav_scp)))
    if segments:
        (d / "segments").write_text("".join(x + "\n" for x in sorted(segs)))
    return audio


SPK_UTTS = {"spkA": ["spkA-u1", "spkA-u2"], "spkB": ["spkB-u1", "spkB-u2", "spkB-u3"]}
LENGTHS = {"spkA-u1": 4000, "spkA-u2": 5600, "spkB-u1": 3000, "spkB-u2": 300, "spkB-u3": 4800}


@pytest.mark.slow
def test_stage_end_to_end(tmp_path, caplog, monkeypatch):
    data = tmp_path / "data" / "train"
    audio = make_data_dir(data, SPK_UTTS, LENGTHS)
    spawned = []
    real_run = subprocess.run
    monkeypatch.setattr(jobs.subprocess, "run",
                        lambda argv, *a, **k: spawned.append(argv) or real_run(argv, *a, **k))
    with caplog.at_level(logging.WARNING):
        skipped = make_fbank(str(data), str(tmp_path / "log"), str(tmp_path / "fbank"), nj=5)
    # local jobs: one process each, the job itself (no utils/run.sh, no bash in between)
    assert [argv[:4] for argv in spawned] == [[sys.executable, "-m", "fhvae.bin.compute_fbank", "--job"]] * 2
    head = (tmp_path / "log" / "make_fbank_train.1.log").read_text().splitlines()[0]
    assert head.startswith(f"# {sys.executable} -m fhvae.bin.compute_fbank --job ")
    assert "only 2 speakers" in caplog.text                             # nj clamped to #speakers
    assert skipped == ["spkB-u2"]                                       # 300 samples < one frame
    assert "1 of 5 utterances were too short" in caplog.text
    assert (tmp_path / "log" / "make_fbank_train.skipped").read_text() == "spkB-u2\n"
    assert sorted(os.listdir(tmp_path / "fbank")) == [
        "raw_fbank_train.1.ark", "raw_fbank_train.1.scp", "raw_fbank_train.2.ark", "raw_fbank_train.2.scp"]
    lines = (data / "feats.scp").read_text().splitlines()
    keys = [ln.split()[0] for ln in lines]
    assert keys == sorted(set(LENGTHS) - {"spkB-u2"})
    assert all(os.path.isabs(ln.split()[1].rsplit(":", 1)[0]) for ln in lines)
    n2f = dict(ln.split() for ln in (data / "utt2num_frames").read_text().splitlines())
    assert n2f == {u: str(1 + (LENGTHS[u] - 400) // 160) for u in keys}
    assert (data / "frame_shift").read_text() == "0.01\n"
    ref = kaldiio.load_scp(str(data / "feats.scp"))
    with FeatReader(data / "feats.scp") as r:
        for u in keys:
            np.testing.assert_array_equal(r[u], compute_fbank(audio[u], FbankConfig()))
            np.testing.assert_array_equal(ref[u], r[u])
    assert os.path.isfile(tmp_path / "log" / "make_fbank_train.1.log")


@pytest.mark.slow
def test_stage_segments_compress_and_cli(tmp_path):
    from fhvae.bin.compute_fbank import main

    data = tmp_path / "dev"
    make_data_dir(data, SPK_UTTS, {u: 2000 + 160 * i for i, u in enumerate(LENGTHS)}, segments=True)
    (tmp_path / "fbank.yaml").write_text("num_mel_bins: 23\n")
    with pytest.raises(SystemExit) as e:
        main(["--nj", "2", "--config", str(tmp_path / "fbank.yaml"), "--compress", "true", str(data)])
    assert e.value.code == 0
    raw = open(data / "data" / "raw_fbank_dev.1.ark", "rb").read()
    assert b"\0BCM " in raw and b"\0BFM " not in raw
    rec = read_wav_entry(f"cat {data}/wav/spkA-rec.wav |")
    with FeatReader(data / "feats.scp") as r:
        assert r.keys() == sorted(LENGTHS) and r.dim == 23
        exact = compute_fbank(rec[:2000], FbankConfig(num_mel_bins=23))   # first segment of spkA-rec
        np.testing.assert_allclose(r["spkA-u1"], exact, atol=0.02 * np.ptp(exact))
    assert os.path.isfile(data / "log" / "make_fbank_dev.2.log")


@pytest.mark.slow
def test_stage_failures_leave_no_outputs(tmp_path):
    data = tmp_path / "d"
    make_data_dir(data, SPK_UTTS, LENGTHS)
    # a first good run, then a wav goes missing: the rerun fails naming the job log, with no feats.scp
    make_fbank(str(data), nj=2)
    os.unlink(data / "wav" / "spkB-u3.wav")
    (data / "wav.scp").write_text((data / "wav.scp").read_text().replace(
        f"{data}/wav/spkB-u3.wav", f"cat {data}/wav/spkB-u3.wav |"))  # pipe: passes validation, fails in the job
    with pytest.raises(FhvaeError, match=r"make_fbank_d\.\d\.log"):
        make_fbank(str(data), nj=2)
    assert not (data / "feats.scp").exists() and (data / ".backup" / "feats.scp").exists()
    logs = "".join(open(data / "log" / f).read() for f in os.listdir(data / "log") if f.endswith(".log"))
    assert "wav.scp:5 (utt 'spkB-u3')" in logs and "failed with exit status" in logs
    assert not [f for f in os.listdir(data / "data") if f.endswith(".tmp")]   # no half-written ark
    # repaired: the rerun completes
    write_wav(data / "wav" / "spkB-u3.wav", (tone(LENGTHS["spkB-u3"]) * 32767).astype(np.int16))
    make_fbank(str(data), nj=2)
    assert len((data / "feats.scp").read_text().splitlines()) == 4
    # wrong sample rate: the job's DataError names the rate
    write_wav(data / "wav" / "spkA-u1.wav", np.zeros(8000, np.int16), rate=8000)
    with pytest.raises(FhvaeError):
        make_fbank(str(data), nj=2)
    logs = "".join(open(data / "log" / f).read() for f in os.listdir(data / "log") if f.endswith(".log"))
    assert "sample rate 8000 Hz, expected 16000 Hz" in logs
    assert not (data / "feats.scp").exists()


def test_stage_rejects_bad_data_dirs(tmp_path):
    data = tmp_path / "d"
    make_data_dir(data, SPK_UTTS, LENGTHS)
    lines = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r"wav.scp:2: keys not sorted"):
        make_fbank(str(data), nj=1)
    (data / "wav.scp").write_text("\n".join([lines[0], lines[0]] + lines[1:]) + "\n")
    with pytest.raises(DataError, match=r"wav.scp:2: duplicate key"):
        make_fbank(str(data), nj=1)
    (data / "wav.scp").write_text("\n".join(lines) + "\n")
    os.unlink(data / "wav" / "spkA-u2.wav")
    with pytest.raises(DataError, match=r"wav.scp:2: file not found"):
        make_fbank(str(data), nj=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "utt2spk").write_text("")
    (empty / "wav.scp").write_text("")
    with pytest.raises(DataError, match="empty"):
        make_fbank(str(empty), nj=1)
    assert not (data / "feats.scp").exists() and not (empty / "feats.scp").exists()


def test_cli_help_and_bad_config(tmp_path, capsys):
    out = subprocess.run([sys.executable, "-m", "fhvae.bin.compute_fbank", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "examples:" in out.stdout and "--dither" in out.stdout
    from fhvae.bin.compute_fbank import main
    (tmp_path / "bad.yaml").write_text("dithr: 0.1\n")
    with pytest.raises(SystemExit) as e:
        main(["--config", str(tmp_path / "bad.yaml"), str(tmp_path)])
    assert e.value.code == 1
    assert "did you mean 'dither'" in capsys.readouterr().err
