"""Corpus recipes (egs/{timit,aurora4,ami,librispeech,voxceleb1}/v1) on tiny fake corpora.

For each corpus, tests/recipe_fakes.py writes a fake copy of the distributed layout and formats; the
recipe's local/data.sh prepares it (in a throw-away copy of the recipe dir) and the resulting data dirs
must validate and hold the expected speakers, utterances and labels; every wav.scp entry checked is
decoded. The slow tests then run ``run.sh --stage 2 --stop-stage 3`` (fbank and stats) on them.
"""
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest

import recipe_fakes as F
from fhvae.datadir import load_data_dir, validate_data_dir
from fhvae.errors import DataError
from fhvae.eval.labels import read_ctm, read_phone_classes
from fhvae.io.audio import read_wav_entry, slice_segment
from fhvae.io.tables import read_kv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPORA = ("timit", "aurora4", "ami", "librispeech", "voxceleb1")
SETS = ("train", "dev", "test")


def load_local(corpus, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "egs", corpus, "v1", "local", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recipe_copy(root, corpus):
    """A writable copy of egs/<corpus>/v1 under root/repo, whose utils/ and tools/ link to the real ones."""
    repo = os.path.join(root, "repo")
    os.makedirs(repo, exist_ok=True)
    for name in ("utils", "tools"):
        if not os.path.exists(os.path.join(repo, name)):
            os.symlink(os.path.join(REPO, name), os.path.join(repo, name))
    dst = os.path.join(repo, "egs", corpus, "v1")
    shutil.copytree(os.path.join(REPO, "egs", corpus, "v1"), dst, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "exp", "fbank", "db.sh", "__pycache__"))
    return dst


def run(cmd, cwd, check=True):
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


class Prepared:
    """A fake corpus prepared by its recipe's local/data.sh: .recipe, .corpus, .expected, .data(set)."""

    def __init__(self, root, corpus, make, data_opts=()):
        self.corpus_dir, self.expected = make(os.path.join(root, "corpora"))
        self.recipe = recipe_copy(root, corpus)
        run(["local/data.sh", *data_opts, self.corpus_dir, "data"], cwd=self.recipe)

    def data(self, name):
        return os.path.join(self.recipe, "data", name)

    def dd(self, name):
        return validate_data_dir(self.data(name), need_wav=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each corpus prepared once per test module (lazily)."""
    cache = {}
    makers = {"timit": (F.make_timit, ()), "aurora4": (F.make_aurora4, ()), "ami": (F.make_ami, ()),
              "librispeech": (F.make_librispeech, ()), "voxceleb1": (F.make_voxceleb1, ("--dev-percent", "30"))}

    def get(corpus):
        if corpus not in cache:
            make, opts = makers[corpus]
            cache[corpus] = Prepared(str(tmp_path_factory.mktemp(corpus)), corpus, make, opts)
        return cache[corpus]
    return get


def check_sets(p, expected_sets):
    """Every set validates and has the expected {name: (speakers, n_utts)}; returns the loaded dirs."""
    dirs = {}
    for name, (spks, n) in expected_sets.items():
        dd = p.dd(name)
        assert set(dd.spk2utt) == set(spks), name
        assert len(dd.utt2spk) == n, name
        dirs[name] = dd
    return dirs


def decode(dd, utts):
    """Decode the audio of ``utts`` (honouring segments) -> {utt: samples}."""
    out = {}
    for u in utts:
        if dd.segments:
            reco, start, end = dd.segments[u]
            out[u] = slice_segment(read_wav_entry(dd.wav_scp[reco], where=u), start, end)
        else:
            out[u] = read_wav_entry(dd.wav_scp[u], where=u)
    return out


# ----------------------------------------------------------------------------- TIMIT

def test_timit_data_prep(prepared):
    p = prepared("timit")
    e = p.expected
    dirs = check_sets(p, {s: e[s] for s in SETS})
    for name, dd in dirs.items():
        assert all(u == f"{s}_{u.split('_')[1]}" and not u.split("_")[1].startswith("sa")
                   for u, s in dd.utt2spk.items())
        assert dd.spk2gender == {s: s[0] for s in dd.spk2utt}
        assert all(v.startswith("sox -t sph ") and v.endswith(" -t wav - |") for v in dd.wav_scp.values())
        ctm = read_ctm(os.path.join(p.data(name), "phones.ctm"))
        assert set(ctm) == set(dd.utt2spk)
        assert all(len(v) == e["phones_per_utt"] for v in ctm.values())
        audio = decode(dd, sorted(dd.utt2spk)[:2])
        for u, x in audio.items():  # the last phone ends where the audio ends
            assert ctm[u][-1][1] == pytest.approx(len(x) / 16000)
            assert 0.2 < np.abs(x).max() < 0.6
        assert dd.text[sorted(dd.text)[0]] == "She had your dark suit."
    classes = read_phone_classes(os.path.join(p.recipe, "local", "phone_classes.txt"))
    ctm_phones = {ph for v in read_ctm(os.path.join(p.data("test"), "phones.ctm")).values() for _, _, ph in v}
    assert ctm_phones <= set(classes)
    trials = [line.split() for line in open(os.path.join(p.data("test"), "trials"))]
    n = e["test"][1]
    assert len(trials) == n * (n - 1) // 2
    assert sum(t[2] == "target" for t in trials) == len(e["test"][0])
    assert all((t[2] == "target") == (t[0][:5] == t[1][:5]) for t in trials)
    assert os.path.isfile(os.path.join(p.data("dev"), "trials"))
    assert not os.path.exists(os.path.join(p.data("train"), "trials"))


def test_timit_lower_case_copy_and_missing_parts(tmp_path):
    timit = load_local("timit", "prepare_timit")
    conf = os.path.join(REPO, "egs", "timit", "v1", "conf")
    corpus, e = F.make_timit(str(tmp_path / "c"), upper=False)
    lists = os.path.join(conf, "dev_spk.list"), os.path.join(conf, "test_spk.list")
    summary = timit.prepare(os.path.join(corpus, "timit"), str(tmp_path / "data"), *lists)
    assert summary == {s: (len(e[s][0]), e[s][1]) for s in SETS}
    spk_dir = os.path.join(corpus, "timit", "test", "dr1", "faks0")
    os.remove(os.path.join(spk_dir, sorted(f for f in os.listdir(spk_dir) if f.startswith("si"))[0][:-4] + ".phn"))
    with pytest.raises(DataError, match=r"faks0/si\d+: missing \.PHN"):
        timit.prepare(corpus, str(tmp_path / "data2"), *lists)
    shutil.rmtree(spk_dir)
    with pytest.raises(DataError, match="speaker\\(s\\) of .*dev_spk.list not found \\(e.g. FAKS0\\)"):
        timit.prepare(corpus, str(tmp_path / "data2"), *lists)
    with pytest.raises(DataError, match="not a TIMIT directory"):
        timit.prepare(str(tmp_path), str(tmp_path / "data2"), *lists)


# ----------------------------------------------------------------------------- Aurora-4

def test_aurora4_data_prep(prepared):
    p = prepared("aurora4")
    spks, n = p.expected["trainable"]
    dirs = check_sets(p, {"test": p.expected["test"]})
    train, dev = p.dd("train"), p.dd("dev")
    assert not set(train.utt2spk) & set(dev.utt2spk)
    assert len(train.utt2spk) + len(dev.utt2spk) == n and len(dev.utt2spk) == round(n * 0.1)
    assert set(train.spk2utt) == spks
    for dd in (train, dev, dirs["test"]):
        noise, mic = (read_kv(os.path.join(dd.path, f)) for f in ("utt2noise", "utt2mic"))
        for u, cond in dd.utt2cond.items():
            c = int(u.rsplit("-", 1)[1])
            assert mic[u] == ("primary" if c <= 7 else "secondary")
            assert noise[u] == F.AURORA_NOISES[(c - 1) % 7]
            assert cond == f"{noise[u]}-{mic[u]}"
    assert len(set(train.utt2cond.values()) | set(dev.utt2cond.values())) == 14
    assert train.utt2cond.get("330c0201-09", dev.utt2cond.get("330c0201-09")) == "car-secondary"
    # condition 14 of the dev lists sits where Kaldi's path rule puts it
    wav = {**train.wav_scp, **dev.wav_scp}
    assert "/devtest14_16k/devtest_14_16k/330/330c0201.wv2" in wav["330c0201-14"]
    x = decode(dirs["test"], ["440c0201-01"])["440c0201-01"]
    np.testing.assert_allclose(x * 32768, F.tone(0.3, 200, seed=100), atol=0.5)  # big-endian raw PCM read right
    trials = [line.split() for line in open(os.path.join(p.data("test"), "trials"))]
    assert trials and all((t[2] == "target") == (t[0][:3] == t[1][:3]) for t in trials)


def test_aurora4_missing_list(tmp_path):
    a4 = load_local("aurora4", "prepare_aurora4")
    corpus, _ = F.make_aurora4(str(tmp_path))
    os.remove(os.path.join(corpus, "lists", "test07_0330_16k.list"))
    with pytest.raises(DataError, match="test07_0330_16k.list: list not found"):
        a4.prepare(corpus, str(tmp_path / "data"))
    with pytest.raises(DataError, match="no lists/ directory"):
        a4.prepare(str(tmp_path), str(tmp_path / "data"))


# ----------------------------------------------------------------------------- AMI

def test_ami_data_prep(prepared):
    p = prepared("ami")
    dirs = check_sets(p, p.expected)
    for dd in dirs.values():
        mic = read_kv(os.path.join(dd.path, "utt2mic"))
        assert dd.utt2cond == mic
        assert sorted(mic.values()).count("ihm") == sorted(mic.values()).count("sdm") == len(mic) // 2
        for u, (reco, start, end) in dd.segments.items():
            assert end - start >= 0.1
            assert reco.endswith("-SDM") == (mic[u] == "sdm") and u.split("-")[2] == mic[u]
        assert set(dd.text.values()) == {"okay so"}  # punctuation dropped
        assert set(dd.spk2gender.values()) == {"f", "m"}
        assert dd.spk2gender == {s: s[0].lower() for s in dd.spk2utt}
    test = dirs["test"]
    assert set(test.wav_scp) == {"ES2004a-H00", "ES2004a-H01", "ES2004a-SDM"}
    utts = sorted(test.utt2spk)
    audio = decode(test, [utts[0], utts[-1]])
    assert all(len(x) == pytest.approx((test.segments[u][2] - test.segments[u][1]) * 16000, abs=1)
               for u, x in audio.items())
    seg = lambda u: u.replace("-ihm-", "-").replace("-sdm-", "-")  # noqa: E731
    trials = [line.split() for line in open(os.path.join(p.data("test"), "trials"))]
    assert trials and all(seg(a) != seg(b) for a, b, _ in trials)
    assert all((t[2] == "target") == (test.utt2spk[t[0]] == test.utt2spk[t[1]]) for t in trials)


def test_ami_missing_annotations_and_audio(tmp_path):
    ami = load_local("ami", "prepare_ami")
    conf = os.path.join(REPO, "egs", "ami", "v1", "conf")
    lists = os.path.join(conf, "dev_meetings.list"), os.path.join(conf, "test_meetings.list")
    corpus, _ = F.make_ami(str(tmp_path))
    os.remove(os.path.join(corpus, "annotations", "words", "ES2002a.B.words.xml"))  # MEE006's words
    summary = ami.prepare(corpus, str(tmp_path / "data"), *lists)
    assert summary["train"] == (1, 6) and summary["test"] == (2, 12)
    shutil.rmtree(os.path.join(corpus, "amicorpus", "ES2011a"))
    with pytest.raises(DataError, match="no dev utterance"):
        ami.prepare(corpus, str(tmp_path / "data"), *lists)
    shutil.rmtree(os.path.join(corpus, "annotations", "words"))
    with pytest.raises(DataError, match="annotations/words: not found"):
        ami.prepare(corpus, str(tmp_path / "data"), *lists)


# ----------------------------------------------------------------------------- LibriSpeech

def test_librispeech_data_prep(prepared):
    p = prepared("librispeech")
    dirs = check_sets(p, {s: p.expected[s] for s in SETS})
    for name, dd in dirs.items():
        assert dd.spk2gender == {s: p.expected["gender"][s] for s in dd.spk2utt}
        assert all(u.startswith(s + "-") for u, s in dd.utt2spk.items())
        assert all(v.startswith("sox ") and ".flac -t wav - |" in v for v in dd.wav_scp.values())
        assert dd.text[sorted(dd.text)[0]] == "HELLO WORLD NUMBER 0"
        u = sorted(dd.utt2spk)[0]
        spk = u.split("-")[0]
        k = list(F.LIBRI[{"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}[name]]).index(spk)
        np.testing.assert_allclose(decode(dd, [u])[u] * 32768, F.tone(0.3, 170 + 50 * k, seed=int(spk)), atol=0.5)
        assert os.path.isfile(os.path.join(dd.path, "trials")) == (name != "train")


def test_librispeech_subset_union_and_missing_subset(tmp_path):
    ls = load_local("librispeech", "prepare_librispeech")
    corpus, e = F.make_librispeech(str(tmp_path))
    sets = {"train": ["train-clean-100", "train-clean-360"], "dev": ["dev-clean"], "test": ["test-clean"]}
    data = str(tmp_path / "data")
    ls.prepare(corpus, data, {"train": ["train-clean-100"], "dev": ["dev-clean"], "test": ["test-clean"]})
    with open(os.path.join(data, "train", "feats.scp"), "w") as f:  # features of the first preparation
        f.write("103-1240-0000 /old/raw_fbank_train.1.ark:14\n")
    summary = ls.prepare(os.path.join(corpus, "LibriSpeech"), data, sets)
    assert summary["train"] == (3, e["train"][1] + 2)
    assert not os.path.exists(os.path.join(data, "train", "feats.scp"))  # a rerun replaces the set
    sets["train"].append("train-other-500")
    with pytest.raises(DataError, match="train-other-500: subset not found"):
        ls.prepare(corpus, str(tmp_path / "data"), sets)


# ----------------------------------------------------------------------------- VoxCeleb1

def test_voxceleb1_data_prep(prepared):
    p = prepared("voxceleb1")
    spks, n = p.expected["trainable"]
    dirs = check_sets(p, {"test": p.expected["test"]})
    train, dev = p.dd("train"), p.dd("dev")
    assert not set(train.utt2spk) & set(dev.utt2spk)
    assert len(train.utt2spk) + len(dev.utt2spk) == n and len(dev.utt2spk) == round(n * 0.3)
    for dd in (train, dev, dirs["test"]):
        assert dd.spk2gender == {s: p.expected["gender"][s] for s in dd.spk2utt}
    trials = [line.split() for line in open(os.path.join(p.data("test"), "trials"))]
    to_utt = lambda path: path[:-4].replace("/", "-")  # noqa: E731
    assert trials == [[to_utt(a), to_utt(b), "target" if lab else "nontarget"] for lab, a, b in F.VOX_TRIALS]
    u = "id10272--Zk0ZdvNj9Y-00004"
    np.testing.assert_allclose(decode(dirs["test"], [u])[u] * 32768, F.tone(0.3, 160 + 40 * 5, seed=54), atol=0.5)


def test_voxceleb1_split_dir_layout_and_bad_trials(tmp_path):
    vox = load_local("voxceleb1", "prepare_voxceleb1")
    corpus, e = F.make_voxceleb1(str(tmp_path), split_dirs=True)
    counts = vox.prepare(corpus, str(tmp_path / "data"), dev_percent=30)
    assert counts["test"] == e["test"][1] and counts["train"] + counts["dev"] == e["trainable"][1]
    os.remove(os.path.join(corpus, "test", "wav", "id10271", "1gtz-CUIygI", "00002.wav"))
    with pytest.raises(DataError, match=r"veri_test2.txt:3: id10271/1gtz-CUIygI/00002.wav is not in the test audio"):
        vox.prepare(corpus, str(tmp_path / "data"))


def test_audio_formats_are_detected(tmp_path):
    timit = load_local("timit", "prepare_timit")
    a4 = load_local("aurora4", "prepare_aurora4")
    x = F.tone(0.1, 300)
    F.write_sphere(str(tmp_path / "a.wav"), x)
    F.write_wav(str(tmp_path / "b.wav"), x)
    (tmp_path / "c.wv1").write_bytes(x.astype(">i2").tobytes())
    for mod in (timit, a4):
        assert mod.wav_entry(str(tmp_path / "a.wav")).startswith("sox -t sph ")
        assert mod.wav_entry(str(tmp_path / "b.wav")) == str(tmp_path / "b.wav")
    entry = a4.wav_entry(str(tmp_path / "c.wv1"))
    np.testing.assert_allclose(read_wav_entry(entry) * 32768, x, atol=0.5)
    np.testing.assert_allclose(read_wav_entry(timit.wav_entry(str(tmp_path / "a.wav"))) * 32768, x, atol=0.5)
    with pytest.raises(DataError, match="neither NIST SPHERE nor RIFF WAV"):
        timit.wav_entry(str(tmp_path / "c.wv1"))


# ----------------------------------------------------------------------------- wrong corpus dir

@pytest.mark.parametrize("corpus", CORPORA)
def test_data_sh_names_a_wrong_corpus_dir(tmp_path, corpus):
    wrong = str(tmp_path / "no" / "such" / "corpus")
    proc = run([os.path.join(REPO, "egs", corpus, "v1", "local", "data.sh"), wrong, str(tmp_path / "data")],
               cwd=str(tmp_path), check=False)
    assert proc.returncode == 1
    assert wrong in proc.stderr and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    os.makedirs(wrong)  # exists but is not the corpus
    proc = run([os.path.join(REPO, "egs", corpus, "v1", "local", "data.sh"), wrong, str(tmp_path / "data")],
               cwd=str(tmp_path), check=False)
    assert proc.returncode == 1 and wrong in proc.stderr and "Traceback" not in proc.stderr


def test_run_sh_needs_a_corpus_dir(tmp_path):
    recipe = recipe_copy(str(tmp_path), "librispeech")
    proc = run(["./run.sh", "--stop-stage", "1"], cwd=recipe, check=False)
    assert proc.returncode == 1 and "--corpus-dir" in proc.stderr and "db.sh" in proc.stderr
    proc = run([os.path.join(recipe, "run.sh"), "--stop-stage", "1", "--corpus-dir", "nowhere"], cwd=str(tmp_path),
               check=False)
    assert proc.returncode != 0 and os.path.join(str(tmp_path), "nowhere") in proc.stderr
    with open(os.path.join(recipe, "db.sh"), "w") as f:
        f.write(f"corpus_dir={tmp_path}/from_db\n")
    proc = run(["./run.sh", "--stop-stage", "1"], cwd=recipe, check=False)
    assert proc.returncode != 0 and f"{tmp_path}/from_db" in proc.stderr
    proc = run(["./run.sh", "--no-such-option", "1"], cwd=recipe, check=False)
    assert proc.returncode != 0 and "invalid option --no-such-option" in proc.stderr


def test_run_sh_stage1_passes_the_corpus_options(tmp_path):
    corpus, e = F.make_librispeech(str(tmp_path / "c"))
    recipe = recipe_copy(str(tmp_path), "librispeech")
    rel = os.path.relpath(corpus, str(tmp_path))  # relative to the caller's cwd, not the recipe's
    proc = run([os.path.join(recipe, "run.sh"), "--stop-stage", "1", "--corpus-dir", rel,
                "--subsets", "train-clean-100 train-clean-360"], cwd=str(tmp_path))
    assert "run.sh: stage 1: data preparation" in proc.stdout
    dd = validate_data_dir(os.path.join(recipe, "data", "train"))
    assert set(dd.spk2utt) == e["train"][0] | {"14"}


# ----------------------------------------------------------------------------- stages 2-3

@pytest.mark.slow
@pytest.mark.parametrize("corpus", CORPORA)
def test_run_sh_fbank_and_stats(prepared, corpus):
    p = prepared(corpus)
    before = {s: sorted(load_data_dir(p.data(s)).utt2spk) for s in SETS}
    nj = "2" if corpus == "ami" else "1"  # AMI: segments split across two jobs
    proc = run(["./run.sh", "--stage", "2", "--stop-stage", "3", "--nj", nj], cwd=p.recipe)
    assert "stage 2: fbank features" in proc.stdout and "stage 3: global normalization stats" in proc.stdout
    for s in SETS:
        dd = validate_data_dir(p.data(s), need_feats=True)
        assert sorted(dd.feats_scp) == before[s]
        assert all(n >= 20 for n in dd.utt2num_frames.values())
    stats = np.load(os.path.join(p.data("train"), "stats.npz"))
    assert stats["mean"].shape == (80,) and np.all(stats["var"] > 0)
    assert int(stats["count"]) == sum(load_data_dir(p.data("train")).utt2num_frames.values())



@pytest.mark.parametrize("jobs", ["1", "2"])
def test_failing_export_fails_the_stage_naming_its_log(tmp_path, jobs):
    """Stage 5 with a set whose data dir is missing: run_stages.sh exits non-zero; with --jobs 2 the
    other set's export still runs and the message names the failed one's log."""
    recipe = recipe_copy(str(tmp_path), "mini")
    env = ["env", f"PATH={os.path.join(REPO, 'tools', 'venv', 'bin')}:{os.environ['PATH']}"]
    proc = run(env + ["utils/run_stages.sh", "--stage", "5", "--stop-stage", "5", "--exp", "exp/none",
                      "--sets", "train test", "--jobs", jobs], cwd=recipe, check=False)
    assert proc.returncode != 0
    if jobs == "2":
        assert "failed: see exp/none/log/export.train.log" in proc.stderr
        assert "failed: see exp/none/log/export.test.log" in proc.stderr
        assert os.path.getsize(os.path.join(recipe, "exp", "none", "log", "export.test.log")) > 0


@pytest.mark.parametrize("opts, message", [
    (["--stop-stage", "8", "--svectors-only-sets", "train"],
     "stage 8 trains the ASR (--asr-train-set) on the frame-level z1 of train, which --svectors-only-sets"),
    (["--stop-stage", "8", "--asr-train-set", "train_clean"],
     "stage 8 trains the ASR (--asr-train-set) on the frame-level z1 of train_clean, which is not in --sets"),
    (["--stop-stage", "7", "--svectors-only-sets", "train test"],
     "stage 7 plots and scores ABX on the frame-level z1 of test, which --svectors-only-sets"),
])
def test_stages_that_read_z1_of_an_svectors_only_set_fail_before_training(tmp_path, opts, message):
    """e.g. the TIMIT recipe (train exported as s-vectors only) run with --stop-stage 8: the error comes
    at the start, not after stages 2-7."""
    recipe = recipe_copy(str(tmp_path), "mini")
    env = ["env", f"PATH={os.path.join(REPO, 'tools', 'venv', 'bin')}:{os.environ['PATH']}"]
    proc = run(env + ["utils/run_stages.sh", "--stage", "2", "--exp", "exp/none", "--sets", "train dev test",
                      *opts], cwd=recipe, check=False)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(recipe, "exp", "make_fbank")), "a stage ran before the check"
