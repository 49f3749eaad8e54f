"""Fault injection: SIGKILL during export and fbank, broken utterances during training.

Each test kills or breaks a real run and checks that (a) no scp ever names data that is not
there, (b) re-running the same command produces complete, correct outputs.
"""
import glob
import os
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import pytest

from fhvae.errors import DataError
from tests.fakedata import make_feats_dir, write_stats
from tests.test_trainer import train

ENV = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")


def _kill_when(proc, predicate, timeout=120):
    """SIGKILL ``proc`` as soon as predicate() holds; True if it was killed before finishing."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if predicate():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def _scp_consistent(scp):
    """Every entry of an scp is readable (its ark holds the data it names)."""
    for key, mat in kaldiio.load_scp_sequential(scp):
        assert np.isfinite(mat).all(), key


@pytest.fixture
def trained(tmp_path):
    train_set = make_feats_dir(str(tmp_path / "train"), n_spk=4, utts_per_spk=3, seed=0)
    make_feats_dir(str(tmp_path / "dev"), n_spk=2, utts_per_spk=2, seed=1)
    write_stats(str(tmp_path / "train" / "stats.npz"), train_set)
    make_feats_dir(str(tmp_path / "big"), n_spk=6, utts_per_spk=5, min_len=200, max_len=300, seed=2)
    train(tmp_path, str(tmp_path / "exp"), [("train.max_epochs", 1)])
    return tmp_path


@pytest.mark.slow
def test_sigkill_during_export_then_rerun(trained):
    d = str(trained)
    cmd = [sys.executable, "-m", "fhvae.bin.export", "--exp-dir", f"{d}/exp", "--data-dir", f"{d}/big",
           "--batch-windows", "32"]
    subprocess.run(cmd + ["--out-dir", f"{d}/ref"], check=True, env=ENV, capture_output=True)
    out = f"{d}/out"
    p = subprocess.Popen(cmd + ["--out-dir", out], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = _kill_when(p, lambda: len(glob.glob(f"{out}/.z1.ark.*.tmp")) > 0 and
                        os.path.getsize(glob.glob(f"{out}/.z1.ark.*.tmp")[0]) > 20000)
    assert killed, "export finished before it could be killed"
    # killed mid-write: no final scp/ark names exist
    assert not glob.glob(f"{out}/*.scp") and not glob.glob(f"{out}/*.ark")
    subprocess.run(cmd + ["--out-dir", out], check=True, env=ENV, capture_output=True)
    for name in ("z1", "z2", "svector", "spk_svector"):
        ref, got = kaldiio.load_scp(f"{d}/ref/{name}.scp"), kaldiio.load_scp(f"{out}/{name}.scp")
        assert ref.keys() == got.keys()
        for k in ref:
            np.testing.assert_array_equal(ref[k], got[k])
        _scp_consistent(f"{out}/{name}.scp")


def _wav_dir(path, n_spk=6, utts=4, seconds=3.0):
    """A data dir of noise wavs (16 kHz int16)."""
    import scipy.io.wavfile
    os.makedirs(f"{path}/wav", exist_ok=True)
    rng = np.random.default_rng(0)
    wav, u2s = [], []
    for s in range(n_spk):
        for u in range(utts):
            utt = f"spk{s}-u{u}"
            f = f"{path}/wav/{utt}.wav"
            scipy.io.wavfile.write(f, 16000, (rng.normal(size=int(16000 * seconds)) * 3000).astype(np.int16))
            wav.append(f"{utt} {f}\n")
            u2s.append(f"{utt} spk{s}\n")
    open(f"{path}/wav.scp", "w").writelines(sorted(wav))
    open(f"{path}/utt2spk", "w").writelines(sorted(u2s))
    spk2utt = {}
    for line in sorted(u2s):
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    open(f"{path}/spk2utt", "w").writelines(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items()))


@pytest.mark.slow
def test_sigkill_during_fbank_then_rerun(tmp_path, repo_root):
    d = str(tmp_path / "data")
    _wav_dir(d)
    cmd = [sys.executable, "-m", "fhvae.bin.compute_fbank", "--nj", "2", "--cmd", f"{repo_root}/utils/run.sh",
           d, f"{tmp_path}/log", f"{tmp_path}/fbank"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    killed = _kill_when(p, lambda: len(glob.glob(f"{tmp_path}/fbank/.*.tmp")) > 0)
    if killed:   # take the job processes down too, as a node crash would
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert not os.path.exists(f"{d}/feats.scp")
    subprocess.run(cmd, check=True, env=ENV, capture_output=True)
    feats = kaldiio.load_scp(f"{d}/feats.scp")
    assert len(feats) == 24
    n2f = dict(line.split() for line in open(f"{d}/utt2num_frames"))
    for k, v in feats.items():
        assert v.shape == (int(n2f[k]), 80) and v.shape[0] == 1 + (48000 - 400) // 160
    _scp_consistent(f"{d}/feats.scp")


def test_broken_utterances_are_skipped_then_too_many_stop(tmp_path):
    """NaN features: a few are skipped with a count; more than data.max_bad_utts stops training."""
    train_set = make_feats_dir(str(tmp_path / "train"), n_spk=4, utts_per_spk=5, seed=0)
    make_feats_dir(str(tmp_path / "dev"), n_spk=2, utts_per_spk=2, seed=1)
    write_stats(str(tmp_path / "train" / "stats.npz"), train_set)

    def poison(keys):
        """Rewrite train/feats.scp with NaNs in ``keys`` (kaldiio writes them; our writer refuses)."""
        d = str(tmp_path / "train")
        with kaldiio.WriteHelper(f"ark,scp:{d}/bad.ark,{d}/feats.scp") as w:
            for k in sorted(train_set):
                x = train_set[k].copy()
                if k in keys:
                    x[3, 2] = np.nan
                w(k, x)

    poison({"spk01-u02"})
    every = [("train.max_epochs", 1), ("data.max_bad_utts", 0.2), ("train.seq_batch_size", 20)]
    s = train(tmp_path, str(tmp_path / "exp1"), every)
    assert s["broken_utts"] == 1
    poison({"spk01-u02", "spk02-u00", "spk02-u01", "spk03-u04", "spk00-u00", "spk00-u01"})
    with pytest.raises(DataError, match="broken .*more than data.max_bad_utts=0.2.*NaN"):
        train(tmp_path, str(tmp_path / "exp2"), every)


def _sets(tmp_path, **kw):
    train_set = make_feats_dir(str(tmp_path / "train"), n_spk=4, utts_per_spk=3, seed=0, **kw)
    make_feats_dir(str(tmp_path / "dev"), n_spk=2, utts_per_spk=2, seed=1)
    write_stats(str(tmp_path / "train" / "stats.npz"), train_set)
    return train_set


def test_short_utterances_skipped_with_count(tmp_path, caplog):
    train_set = _sets(tmp_path, min_len=5, max_len=14)   # some shorter than the 10-frame segment
    n_short = sum(len(x) < 10 for x in train_set.values())
    assert 0 < n_short < len(train_set)
    with caplog.at_level("WARNING"):
        train(tmp_path, str(tmp_path / "exp"), [("train.max_epochs", 1)])
    assert f"skipping {n_short} of {len(train_set)} utterances shorter than one segment" in caplog.text


def test_segment_longer_than_every_utterance(tmp_path):
    _sets(tmp_path)
    with pytest.raises(DataError, match="no utterance is at least 100 frames"):
        train(tmp_path, str(tmp_path / "exp"), [("data.seg_len", 100)])


def test_feature_dim_differs_from_model(tmp_path):
    from fhvae.errors import ConfigError
    _sets(tmp_path)
    with pytest.raises(ConfigError, match="model.feat_dim=80 but .*stats.npz has dim 8"):
        train(tmp_path, str(tmp_path / "exp"), [("model.feat_dim", 80)])


@pytest.mark.slow
def test_soak_random_sigkills_then_same_model(tmp_path):
    """SIGKILL fhvae-train at random moments (seeded), many times in a row, restarting each time with
    the same command: the run completes with the same model as an uninterrupted one, and no
    checkpoint is ever read half-written (a corrupt one would fail the restart)."""
    import random

    from fhvae.train import checkpoint as ckpt
    from tests.test_trainer import TINY, assert_same_weights
    _sets(tmp_path)
    d = str(tmp_path)
    over = [a for k, v in TINY + [("train.max_epochs", 20)] for a in (f"--{k}", str(v))]
    base = [sys.executable, "-m", "fhvae.bin.train", "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev"]
    subprocess.run(base + ["--exp-dir", f"{d}/ref"] + over, check=True, env=ENV, capture_output=True)
    rng, kills, exp = random.Random(0), 0, f"{d}/soak"
    for _ in range(8):
        p = subprocess.Popen(base + ["--exp-dir", exp] + over, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            p.wait(timeout=rng.uniform(1.0, 4.0))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            continue
        assert p.returncode == 0, p.stderr.read().decode()[-2000:]
        break
    assert kills >= 3
    subprocess.run(base + ["--exp-dir", exp] + over, check=True, env=ENV, capture_output=True)
    assert_same_weights(ckpt.load_model_weights(f"{d}/ref"), ckpt.load_model_weights(exp))
    assert_same_weights(ckpt.load_model_weights(f"{d}/ref", "best"), ckpt.load_model_weights(exp, "best"))
