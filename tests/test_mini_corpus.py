"""Mini corpus recipe (egs/mini/v1/local/data.sh): a tiny corpus, checked file by file."""
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import threading
import wave

import numpy as np
import pytest
from scipy.io import wavfile

from fhvae.errors import FhvaeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(REPO, "egs", "mini", "v1", "local")
DATA_SH = os.path.join(LOCAL, "data.sh")
TINY = ["--num-train-spk", "3", "--num-test-spk", "2", "--utts-per-spk", "4", "--num-dev-utts", "2"]
SETS = ("train", "dev", "test")
FILES = ("wav.scp", "utt2spk", "spk2utt", "text", "utt2cond", "spk2gender", "phones.ctm")

spec = importlib.util.spec_from_file_location("make_mini_corpus", os.path.join(LOCAL, "make_mini_corpus.py"))
mmc = importlib.util.module_from_spec(spec)
sys.modules["make_mini_corpus"] = mmc  # so that a worker pool can pickle its functions
spec.loader.exec_module(mmc)


def run_data_sh(corpus, data, *opts, env=None):
    p = subprocess.run(["bash", DATA_SH, *TINY, *opts, str(corpus), str(data)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout + p.stderr


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def table(path):
    return dict(line.split(None, 1) for line in lines(path))


def snapshot(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    log = run_data_sh(root / "corpus", root / "data", "--seed", "1", "--nj", "2")
    return root, log


def test_data_dirs_are_kaldi_valid(corpus):
    root, _ = corpus
    for s in SETS:
        d = root / "data" / s
        for name in FILES:
            keys = [line.split()[0] for line in lines(d / name)]
            assert keys, f"{s}/{name} is empty"
            if name != "phones.ctm":
                assert keys == sorted(keys, key=lambda k: k.encode()), f"{s}/{name} not in C order"
                assert len(set(keys)) == len(keys), f"{s}/{name} has duplicate keys"
        utt2spk = table(d / "utt2spk")
        for name in ("wav.scp", "text", "utt2cond"):
            assert list(table(d / name)) == list(utt2spk), f"{s}/{name} keys differ from utt2spk"
        assert all(u.startswith(spk + "-") for u, spk in utt2spk.items())
        spk2utt = {k: v.split() for k, v in table(d / "spk2utt").items()}
        assert spk2utt == {spk: sorted(u for u in utt2spk if utt2spk[u] == spk) for spk in set(utt2spk.values())}
        gender = table(d / "spk2gender")
        assert list(gender) == list(spk2utt)
        assert all(g == spk[-1] and g in "mf" for spk, g in gender.items())
        assert all(len(t.split()) >= 3 for t in table(d / "text").values())
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in table(d / "wav.scp").values())
    try:
        from fhvae.datadir import validate_data_dir
    except ImportError:
        return
    for s in SETS:
        validate_data_dir(str(root / "data" / s))


def test_sizes_and_speaker_split(corpus):
    root, _ = corpus
    spks = {s: set(table(root / "data" / s / "spk2utt")) for s in SETS}
    utts = {s: set(table(root / "data" / s / "utt2spk")) for s in SETS}
    assert len(spks["train"]) == 3 and len(spks["test"]) == 2
    assert spks["dev"] == spks["train"]
    assert not spks["test"] & spks["train"], "test speakers must be disjoint from train"
    assert not utts["dev"] & utts["train"], "dev utterances must be held out of train"
    assert len(utts["train"]) == 3 * 4 and len(utts["dev"]) == 3 * 2 and len(utts["test"]) == 2 * 4
    assert {spk[-1] for spk in spks["train"]} == {"m", "f"}


def test_wavs_are_16k_int16_mono_and_match_ctm(corpus):
    root, _ = corpus
    for s in SETS:
        d = root / "data" / s
        ctm = {}
        for line in lines(d / "phones.ctm"):
            utt, ch, start, dur, phone = line.split()
            assert ch == "1"
            ctm.setdefault(utt, []).append((float(start), float(dur), phone))
        assert list(ctm) == list(table(d / "utt2spk")), "phones.ctm must list every utterance, in order"
        for utt, path in table(d / "wav.scp").items():
            with wave.open(path) as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            rate, x = wavfile.read(path)
            assert x.dtype == np.int16 and x.ndim == 1
            dur = len(x) / rate
            assert 1.5 <= dur <= 4.0
            phones = ctm[utt]
            assert phones[0][0] == 0.0
            for (s0, d0, _), (s1, _, _) in zip(phones, phones[1:]):
                assert d0 > 0 and s1 == pytest.approx(s0 + d0, abs=1e-6), f"{utt}: phones must tile the audio"
            assert phones[-1][0] + phones[-1][1] == pytest.approx(dur, abs=1e-6)


def test_conditions_and_phone_classes(corpus):
    root, _ = corpus
    classes = dict(line.split() for line in lines(os.path.join(LOCAL, "phone_classes.txt")))
    assert set(classes.values()) == {"SON", "OBS", "SIL"}
    for s in ("train", "test"):
        d = root / "data" / s
        utt2spk, utt2cond = table(d / "utt2spk"), table(d / "utt2cond")
        assert set(utt2cond.values()) == set(mmc.CONDITIONS)
        for spk in set(utt2spk.values()):  # condition is not confounded with speaker
            assert {utt2cond[u] for u in utt2spk if utt2spk[u] == spk} == set(mmc.CONDITIONS)
    seen = {line.split()[4] for s in SETS for line in lines(root / "data" / s / "phones.ctm")}
    assert seen <= set(classes), f"phones without a class: {seen - set(classes)}"
    assert {classes[p] for p in seen} == {"SON", "OBS", "SIL"}


def _band_power(x, lo, hi, rate=16000):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


def test_audio_matches_condition_and_alignment(corpus):
    """Leading SIL (padding) vs the rest: clean ~50 dB down, noise ~15 dB down (SNR 15 dB);
    telephone: no energy outside 200-4000 Hz."""
    root, _ = corpus
    for s in SETS:
        d = root / "data" / s
        wavs, conds = table(d / "wav.scp"), table(d / "utt2cond")
        first = {}
        for line in lines(d / "phones.ctm"):
            utt, _, _, dur, phone = line.split()
            first.setdefault(utt, (phone, float(dur)))
        for utt, path in wavs.items():
            x = wavfile.read(path)[1].astype(np.float64)
            phone, dur = first[utt]
            assert phone == "SIL" and dur >= 0.1
            n = round(dur * 16000) - 160  # 10 ms off the first phone
            ratio_db = 10 * np.log10(np.mean(x[:n] ** 2) / np.mean(x[n + 160:] ** 2))
            if conds[utt] == "noise":
                assert -22 < ratio_db < -8, (utt, ratio_db)
            else:
                assert ratio_db < -40, (utt, ratio_db)
            if conds[utt] == "telephone":
                assert _band_power(x, 4000, 8000) < 1e-3, utt
                assert _band_power(x, 0, 200) < 1e-3, utt


def test_trials(corpus):
    root, _ = corpus
    utt2spk = table(root / "data" / "test" / "utt2spk")
    trials = [line.split() for line in lines(root / "data" / "test" / "trials")]
    pairs = [(a, b) for a, b, _ in trials]
    assert len(set(pairs)) == len(pairs)
    for a, b, label in trials:
        assert a != b and a in utt2spk and b in utt2spk
        assert label == ("target" if utt2spk[a] == utt2spk[b] else "nontarget")
    n_target = sum(1 for *_, lab in trials if lab == "target")
    assert n_target == 2 * 6  # all same-speaker pairs of 2 speakers x 4 utterances
    assert len(trials) - n_target == n_target


def test_make_trials_large_pool_samples_without_repeats():
    utt2spk = {f"s{s:02d}-u{u:02d}": f"s{s:02d}" for s in range(20) for u in range(3)}
    trials = [line.split() for line in mmc.make_trials(utt2spk, seed=5)]
    assert len({(a, b) for a, b, _ in trials}) == len(trials) == 2 * 20 * 3
    assert all((utt2spk[a] == utt2spk[b]) == (lab == "target") and a < b for a, b, lab in trials)
    assert mmc.make_trials(utt2spk, seed=5) == mmc.make_trials(utt2spk, seed=5)
    assert mmc.make_trials(utt2spk, seed=5) != mmc.make_trials(utt2spk, seed=6)


def test_tile_phones_maps_times_through_vtl_and_padding():
    events = [(0, "D"), (50, "@"), (100, "_:"), (150, "k"), (200, "_")]
    n22 = mmc.ESPEAK_RATE * 200 // 1000  # 200 ms of espeak audio
    assert mmc.tile_phones(events, n22, 1.0, 100, 500) == [
        (0, 100, "SIL"), (100, 150, "D"), (150, 200, "@"), (200, 250, "SIL"), (250, 300, "k"), (300, 500, "SIL")]
    # vtl 2: espeak time halves; a late first event leaves leading silence; same-time events drop the first
    events = [(20, "D"), (20, "d"), (60, "@"), (200, "_")]
    assert mmc.tile_phones(events, n22, 2.0, 10, 200) == [
        (0, 20, "SIL"), (20, 40, "d"), (40, 110, "@"), (110, 200, "SIL")]


def test_deterministic_skip_and_seed(corpus, tmp_path):
    root, log = corpus
    assert "nothing to do" not in log
    # same seed, other --nj, same paths: byte-identical audio and data dirs
    work = tmp_path / "w"
    work.mkdir()
    shutil.move(str(root / "corpus"), str(work / "a_corpus"))
    shutil.move(str(root / "data"), str(work / "a_data"))
    try:
        run_data_sh(root / "corpus", root / "data", "--seed", "1", "--nj", "1")
        assert snapshot(root / "corpus") == snapshot(work / "a_corpus")
        assert snapshot(root / "data") == snapshot(work / "a_data")
        # complete outputs: skipped, nothing rewritten
        mtimes = {p: os.stat(os.path.join(root, "data", p)).st_mtime_ns for p in snapshot(root / "data")}
        assert "nothing to do" in run_data_sh(root / "corpus", root / "data", "--seed", "1")
        assert mtimes == {p: os.stat(os.path.join(root, "data", p)).st_mtime_ns for p in snapshot(root / "data")}
        # another seed: regenerated (the marker is stale), different text and audio
        other = tmp_path / "seed2"
        run_data_sh(other / "corpus", other / "data", "--seed", "2")
        assert lines(other / "data" / "train" / "text") != lines(root / "data" / "train" / "text")
        a = snapshot(root / "corpus" / "wav")
        b = snapshot(other / "corpus" / "wav")
        assert all(a[k] != b[k] for k in set(a) & set(b))
        assert open(other / "corpus" / "speakers.txt").read() != open(root / "corpus" / "speakers.txt").read()
    finally:  # leave the module fixture as it was
        shutil.rmtree(root / "corpus", ignore_errors=True)
        shutil.rmtree(root / "data", ignore_errors=True)
        shutil.move(str(work / "a_corpus"), str(root / "corpus"))
        shutil.move(str(work / "a_data"), str(root / "data"))


# Digest of the tiny corpus (TINY, seed 1): its audio, speakers.txt and every data-dir table but
# wav.scp (absolute paths). The same on every machine with the pinned Debian espeak-ng
# (1.51+dfsg-10+deb12u2) and Python packages, whatever the x86 CPU's SIMD features (checked below by
# switching numpy's AVX-512 loops and libm's FMA / AVX variants off); change it only with VERSION in
# make_mini_corpus.py.
TINY_DIGEST = "48d521743129160359661da0af199bc1"


def corpus_digest(root):
    """(md5 over the sorted per-file md5s, {relative path: md5}) of corpus/ and data/ under root."""
    files = {}
    for top in ("corpus", "data"):
        for rel, data in snapshot(root / top).items():
            if os.path.basename(rel) not in ("wav.scp", ".mini_corpus.done"):
                files[f"{top}/{rel}"] = hashlib.md5(data).hexdigest()
    return hashlib.md5("".join(f"{k} {v}\n" for k, v in sorted(files.items())).encode()).hexdigest(), files


def test_corpus_bytes_are_pinned(corpus):
    """Catches a machine (package version, voice data, CPU) that synthesizes another corpus."""
    digest, files = corpus_digest(corpus[0])
    assert digest == TINY_DIGEST, (
        "the tiny mini corpus differs from the pinned one (espeak-ng: "
        + subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "espeak-ng"], capture_output=True, text=True).stdout
        + "); per-file md5:\n" + "\n".join(f"{v} {k}" for k, v in sorted(files.items())))


LD_SO = "/lib64/ld-linux-x86-64.so.2"


def _older_cpu_env():
    """Environment that makes this x86 machine compute like an older one, or None if it cannot:
    numpy without its dispatched SIMD targets above x86-64-v3 (AVX-512: the SVML log1p / expm1 of the
    telephone channel), glibc's libm and string functions without AVX, AVX2, FMA and AVX-512 (the
    variants espeak-ng's math picks at load time). Both only switch features off, so the machine
    must have them for the environment to change anything."""
    if platform.machine() != "x86_64" or not os.path.exists(LD_SO):
        return None
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    above_v3 = [f for f in __cpu_dispatch__ if f not in ("X86_V2", "X86_V3") and __cpu_features__.get(f)]
    env = dict(os.environ, GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX")
    if above_v3:
        env["NPY_DISABLE_CPU_FEATURES"] = ",".join(above_v3)
    return env, above_v3


def _active_features(env):
    """The CPU feature words glibc's dynamic loader uses under env (its --list-diagnostics)."""
    out = subprocess.run([LD_SO, "--list-diagnostics"], env=env, capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ".active[" in ln]


def test_corpus_bytes_do_not_depend_on_cpu_features(tmp_path):
    """The pinned bytes on an older CPU: the same tiny corpus with numpy's AVX-512 loops and libm's
    FMA / AVX variants switched off (what a machine without them runs)."""
    got = _older_cpu_env()
    if got is None:
        pytest.skip("needs x86-64 Linux with glibc's ld.so")
    env, above_v3 = got
    glibc_changed = _active_features(os.environ) != _active_features(env)
    if not glibc_changed and not above_v3:
        pytest.skip("this CPU has none of the features the environment switches off")
    check = subprocess.run([sys.executable, "-c", "from numpy._core._multiarray_umath import __cpu_features__ as f; "
                            f"print(sum(f[k] for k in {above_v3!r}))"], env=env, capture_output=True, text=True)
    assert check.stdout.strip() == "0", check.stdout + check.stderr   # numpy really runs without them
    run_data_sh(tmp_path / "corpus", tmp_path / "data", "--seed", "1", "--nj", "2", env=env)
    digest, files = corpus_digest(tmp_path)
    assert digest == TINY_DIGEST, "\n".join(f"{v} {k}" for k, v in sorted(files.items()))


def test_an_utterance_alone_is_the_same_as_in_the_corpus(corpus, tmp_path):
    """Each utterance depends only on (seed, speaker, utterance): synthesized alone, in another
    order, it is byte-identical to the corpus's (libespeak-ng state does not leak between them)."""
    root, _ = corpus
    spk = mmc.make_speakers(1, 3, 2)[1]
    plan = mmc.utterance_plan(spk, 1, 4, 2)
    known = mmc.read_phone_classes(os.path.join(LOCAL, "phone_classes.txt"))
    jobs = [(spk, u, 1, str(tmp_path / "wav"), known) for u in reversed(plan[-3:])]
    recs = list(mmc.fork_each(mmc.synth_utterance, jobs, 1))
    assert sorted(r["utt"] for r in recs) == sorted(u[0] for u in plan[-3:])
    for rec in recs:
        with open(rec["wav"], "rb") as a, open(root / "corpus" / "wav" / spk.spk / f"{rec['utt']}.wav", "rb") as b:
            assert a.read() == b.read(), rec["utt"]


def test_missing_libespeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mmc, "LIBESPEAK", "libespeak-ng-missing.so.9")
    with pytest.raises(FhvaeError, match=r"make debian \(or sudo apt-get install espeak-ng sox\)"):
        mmc.make_corpus(tmp_path / "c", tmp_path / "d", num_train_spk=1, num_test_spk=2, utts_per_spk=3)


def test_data_sh_usage_errors(tmp_path):
    p = subprocess.run(["bash", DATA_SH, str(tmp_path)], capture_output=True, text=True)
    assert p.returncode != 0 and "Usage" in p.stderr
    p = subprocess.run(["bash", DATA_SH, "--bogus", "1", "a", "b"], capture_output=True, text=True)
    assert p.returncode != 0 and "--bogus" in p.stderr


def test_speakers_are_distinct_and_reproducible():
    a = mmc.make_speakers(3, 24, 8)
    assert a == mmc.make_speakers(3, 24, 8)
    assert len({s.voice for s in a}) == len(a)
    assert [s.part for s in a].count("test") == 8
    assert all(0.85 <= s.vtl <= 1.15 for s in a)
    assert len({(s.pitch, s.rate, s.vtl_up) for s in a}) == len(a)
    assert [s.spk for s in a] == sorted(s.spk for s in a)


def _job_pid(job):
    if job == "fail":
        raise FhvaeError("job says no")
    if job == "die":
        os._exit(3)
    return job, os.getpid()


def test_fork_each_forks_every_job_from_the_main_thread(monkeypatch):
    """The lead of the one unexplained corpus difference was a worker forked from a pool's handler
    thread in one run and from the main thread in the other: fork_each forks all from the caller."""
    forks = []
    real_fork = os.fork

    def fork():
        forks.append(threading.current_thread() is threading.main_thread())
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    out = list(mmc.fork_each(_job_pid, list(range(7)), 2))
    assert sorted(j for j, _ in out) == list(range(7))
    assert len({pid for _, pid in out}) == 7 and os.getpid() not in {pid for _, pid in out}  # fresh processes
    assert forks == [True] * 7


def test_fork_each_reports_a_failed_or_dead_job():
    with pytest.raises(FhvaeError, match="job says no"):
        list(mmc.fork_each(_job_pid, [1, "fail", 2, 3], 2))
    with pytest.raises(FhvaeError, match="exited with code 3 without a result for job 'die'"):
        list(mmc.fork_each(_job_pid, [1, "die", 2], 1))
