"""TIMIT phones (fold 61 -> 48 -> 39, SON/OBS/SIL, the .PHN reader) and the recipes' trial-list builders."""
import importlib.util
import os

import pytest

from fhvae.errors import DataError
from fhvae.eval.labels import frame_labels, read_ctm, read_phone_classes
from fhvae.io.tables import utt2spk_to_spk2utt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMIT = os.path.join(REPO, "egs", "timit", "v1")


def load_local(corpus, name):
    """Import egs/<corpus>/v1/local/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "egs", corpus, "v1", "local", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = load_local("timit", "timit_phones")


# ----------------------------------------------------------------------------- folding and classes

def test_phone_set_sizes_and_the_39_set():
    assert len(P.TIMIT_PHONES) == 61 and "q" in P.TIMIT_PHONES
    assert len(P.phone_set(61)) == 61 and len(P.phone_set(48)) == 48 and len(P.phone_set(39)) == 39
    assert P.phone_set(39) == sorted(
        "aa ae ah aw ay b ch d dh dx eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh sil t th uh uw v w y z".split())


@pytest.mark.parametrize("phone,f48,f39", [
    ("ao", "ao", "aa"), ("ax-h", "ax", "ah"), ("axr", "er", "er"), ("bcl", "vcl", "sil"), ("kcl", "cl", "sil"),
    ("h#", "sil", "sil"), ("pau", "sil", "sil"), ("epi", "epi", "sil"), ("el", "el", "l"), ("em", "m", "m"),
    ("en", "en", "n"), ("eng", "ng", "ng"), ("nx", "n", "n"), ("hv", "hh", "hh"), ("ix", "ix", "ih"),
    ("ux", "uw", "uw"), ("zh", "zh", "sh"), ("iy", "iy", "iy"), ("q", None, None)])
def test_fold(phone, f48, f39):
    assert P.fold(phone, 48) == f48
    assert P.fold(phone, 39) == f39
    assert P.fold(phone, 61) == phone


def test_fold_rejects_unknown_phone_and_set_size():
    with pytest.raises(KeyError, match="xx"):
        P.fold("xx")
    with pytest.raises(ValueError, match="61, 48 or 39"):
        P.fold("aa", 40)


def test_fold_map_file_is_kaldis_format_and_matches_the_table():
    text = open(os.path.join(TIMIT, "conf", "phones.60-48-39.map")).read()
    assert text == P.fold_map_text()
    rows = [line.split() for line in text.splitlines()]
    assert len(rows) == 61 and ["q"] in rows
    for row in rows:
        if len(row) == 3:
            assert (P.fold(row[0], 48), P.fold(row[0], 39)) == (row[1], row[2])


@pytest.mark.parametrize("phone,cls", [
    ("iy", "SON"), ("ax-h", "SON"), ("l", "SON"), ("el", "SON"), ("m", "SON"), ("nx", "SON"), ("w", "SON"),
    ("s", "OBS"), ("b", "OBS"), ("dx", "OBS"), ("q", "OBS"), ("ch", "OBS"), ("hh", "OBS"), ("hv", "OBS"),
    ("h#", "SIL"), ("pau", "SIL"), ("epi", "SIL"), ("bcl", "SIL"), ("tcl", "SIL"), ("sil", "SIL"), ("vcl", "SIL"),
    ("cl", "SIL")])
def test_phone_class(phone, cls):
    assert P.phone_class(phone) == cls


def test_every_symbol_has_a_class_and_folding_keeps_the_class():
    for n in (61, 48, 39):
        for p in P.phone_set(n):
            assert P.phone_class(p) in ("SON", "OBS", "SIL")
    for p in P.TIMIT_PHONES:
        for n in (48, 39):
            if P.fold(p, n) is not None:
                assert P.phone_class(P.fold(p, n)) == P.phone_class(p), (p, n)
    with pytest.raises(KeyError):
        P.phone_class("zz")


def test_recipe_phone_class_file_is_readable_by_the_label_reader():
    path = os.path.join(TIMIT, "local", "phone_classes.txt")
    assert open(path).read() == P.phone_classes_text()
    classes = read_phone_classes(path)
    assert classes == P.PHONE_CLASS and set(P.TIMIT_PHONES) <= set(classes)


# ----------------------------------------------------------------------------- .PHN reader, CTM

def write(tmp_path, text, name="SI1573.PHN"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_read_phn_and_ctm(tmp_path):
    path = write(tmp_path, "0 3050 h#\n3050 4559 SH\n4559 5723 ix\n\n5723 37530 q\n37530 40000 h#\n")
    phones = P.read_phn(path)
    assert phones == [(0, 3050, "h#"), (3050, 4559, "sh"), (4559, 5723, "ix"), (5723, 37530, "q"),
                      (37530, 40000, "h#")]
    lines = P.phn_to_ctm("faks0_si1573", phones)
    assert lines[0] == "faks0_si1573 1 0 0.190625 h#\n"
    assert lines[4] == "faks0_si1573 1 2.345625 0.154375 h#\n"
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("".join(lines))
    got = read_ctm(str(ctm))["faks0_si1573"]
    assert [p for _, _, p in got] == ["h#", "sh", "ix", "q", "h#"]
    assert got[-1][1] == pytest.approx(2.5)
    # frames (25 ms windows every 10 ms) take the phone at their centre: frame 18 is centred at 0.1925 s
    labels = frame_labels(got, 20)
    assert labels[17] == "h#" and labels[18] == "sh"


@pytest.mark.parametrize("text,line,msg", [
    ("0 10 h#\n10 20\n", 2, "expected '<begin-sample> <end-sample> <phone>'"),
    ("0 10 h#\n10 2x0 s\n", 2, "must be integers"),
    ("0 10 h#\n30 20 s\n", 2, "need 0 <= begin <= end"),
    ("10 20 h#\n5 30 s\n", 2, "before the previous phone"),
    ("0 10 h#\n10 20 xyz\n", 2, "unknown TIMIT phone 'xyz'"),
])
def test_read_phn_errors_name_file_and_line(tmp_path, text, line, msg):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=msg) as e:
        P.read_phn(path)
    assert f"{path}:{line}:" in str(e.value)


def test_read_phn_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        P.read_phn(str(tmp_path / "nope.PHN"))
    with pytest.raises(DataError, match="empty .PHN"):
        P.read_phn(write(tmp_path, "\n"))


# ----------------------------------------------------------------------------- trial-list builders

def test_voxceleb_official_trials_are_converted_to_our_ids(tmp_path):
    vox = load_local("voxceleb1", "prepare_voxceleb1")
    assert vox.path_to_utt("id10270/x6uYqmx31kE/00001.wav") == "id10270-x6uYqmx31kE-00001"
    assert vox.path_to_utt("id10270/00001.wav") is None
    utts = {"id10270-x6uYqmx31kE-00001", "id10270-8jEAjG6SegY-00008", "id10271--1gtz_CUIyg-00002"}
    p = tmp_path / "veri_test2.txt"
    p.write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
                 "0 id10271/-1gtz_CUIyg/00002.wav id10270/x6uYqmx31kE/00001.wav\n")
    assert vox.read_veri_trials(str(p), utts) == [
        ("id10270-x6uYqmx31kE-00001", "id10270-8jEAjG6SegY-00008", "target"),
        ("id10271--1gtz_CUIyg-00002", "id10270-x6uYqmx31kE-00001", "nontarget")]


@pytest.mark.parametrize("line,msg", [
    ("2 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav", "expected '<1|0>"),
    ("1 id10270/x6uYqmx31kE/00001.wav", "expected '<1|0>"),
    ("1 id10270/x6uYqmx31kE/00001.wav id10270/00008.wav", "is not <id>/<video>/<nnnnn>.wav"),
    ("1 id10270/x6uYqmx31kE/00001.wav id10299/zzzzzzzzzzz/00001.wav", "not in the test audio"),
])
def test_voxceleb_trial_errors_name_the_line(tmp_path, line, msg):
    vox = load_local("voxceleb1", "prepare_voxceleb1")
    p = tmp_path / "veri_test2.txt"
    p.write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/x6uYqmx31kE/00002.wav\n" + line + "\n")
    utts = {"id10270-x6uYqmx31kE-00001", "id10270-x6uYqmx31kE-00002"}
    with pytest.raises(DataError, match=msg) as e:
        vox.read_veri_trials(str(p), utts)
    assert f"{p}:2:" in str(e.value)


def test_per_speaker_trial_utterances():
    from fhvae.datadir import sample_utts_per_speaker
    utt2spk = {f"{s}-{i:03d}": s for s, n in (("a", 30), ("b", 5), ("c", 12)) for i in range(n)}
    got = sample_utts_per_speaker(utt2spk, 10, seed=3)
    per = {s: len(u) for s, u in utt2spk_to_spk2utt(got).items()}
    assert per == {"a": 10, "b": 5, "c": 10}
    assert all(utt2spk[u] == s for u, s in got.items())
    assert got == sample_utts_per_speaker(utt2spk, 10, seed=3)
    assert got != sample_utts_per_speaker(utt2spk, 10, seed=4)


def test_ami_trial_utterances_never_pair_the_same_speech_on_two_mics():
    ami = load_local("ami", "prepare_ami")
    utt2spk, utt2seg = {}, {}
    for spk in ("FEE005", "MEE006"):
        for k in range(8):
            for mic in ("ihm", "sdm"):
                u = f"{spk}-ES2002a-{mic}-{k:07d}"
                utt2spk[u], utt2seg[u] = spk, f"ES2002a-{spk}-{k}"
    got = ami.trial_utts(utt2spk, utt2seg, 5, seed=1)
    segs = [utt2seg[u] for u in got]
    assert len(segs) == len(set(segs)) == 10
    assert {u.split("-")[2] for u in got} == {"ihm", "sdm"}  # both microphones get picked
    assert ami.trial_utts(utt2spk, utt2seg, 50, seed=1).keys() != got.keys()
    assert len(ami.trial_utts(utt2spk, utt2seg, 50, seed=1)) == 16
