#!/usr/bin/env python3
"""TIMIT (LDC93S1, as distributed) -> Kaldi data dirs ``train``, ``dev``, ``test`` (Kaldi's split).

Expects ``<timit>/TRAIN|TEST/DR1..DR8/<M|F><spk>/<utt>.WAV|.PHN|.TXT`` (any case; ``<timit>`` may also be
a directory holding ``TIMIT/``). The SA sentences are excluded, as in Kaldi's egs/timit/s5:

    train   every speaker of TRAIN (462 speakers, 3696 utterances)
    dev     the 50 speakers of conf/dev_spk.list, from TEST (400 utterances)
    test    the 24 core-test speakers of conf/test_spk.list, from TEST (192 utterances)

Each set gets utt2spk, spk2utt, wav.scp, text, spk2gender, phones.ctm; dev and test also get trials
(every pair of their utterances). Ids are lower case: speaker ``faks0``, utterance ``faks0_si1573``.
.WAV files are NIST SPHERE (read through ``sox -t sph FILE -t wav - |``); files that are already
RIFF WAV are used as they are. phones.ctm holds the 61 TIMIT phones of the .PHN files
(``<utt> 1 <start-s> <dur-s> <phone>``, sample indices / 16000).
"""
import argparse
import logging
import os
import shlex
import shutil
import sys

from fhvae.bin import run_cli
from fhvae.datadir import make_trials, validate_data_dir, write_trials
from fhvae.errors import DataError
from fhvae.io.atomic import atomic_write_text
from fhvae.io.tables import read_id_list, utt2spk_to_spk2utt, write_kv

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # timit_phones.py, next to this script
from timit_phones import SAMPLE_RATE, phn_to_ctm, read_phn  # noqa: E402

log = logging.getLogger("prepare_timit")

LAYOUT = "TRAIN/ and TEST/ (any case) holding DR1..DR8/<speaker>/<utt>.WAV|.PHN|.TXT"


def _entries(path):
    """{lower-cased name: real name} of a directory's entries (TIMIT copies differ in case)."""
    try:
        return {name.lower(): name for name in os.listdir(path)}
    except OSError as e:
        raise DataError(f"{path}: cannot list directory: {e.strerror or e}") from None


def find_parts(corpus_dir):
    """(train_dir, test_dir) of a TIMIT copy at ``corpus_dir`` or ``corpus_dir/timit``."""
    if not os.path.isdir(corpus_dir):
        raise DataError(f"{corpus_dir}: TIMIT directory not found (expected {LAYOUT})")
    for root in (corpus_dir, os.path.join(corpus_dir, _entries(corpus_dir).get("timit", "timit"))):
        names = _entries(root) if os.path.isdir(root) else {}
        if "train" in names and "test" in names:
            return os.path.join(root, names["train"]), os.path.join(root, names["test"])
    raise DataError(f"{corpus_dir}: not a TIMIT directory: expected {LAYOUT}, "
                    f"e.g. /export/corpora/LDC/LDC93S1/timit/TIMIT")


def scan_speakers(part_dir):
    """{speaker id (lower case): speaker dir} over the DR* dialect-region dirs of TRAIN or TEST."""
    speakers = {}
    for dr_low, dr in sorted(_entries(part_dir).items()):
        dr_path = os.path.join(part_dir, dr)
        if not (dr_low.startswith("dr") and os.path.isdir(dr_path)):
            continue
        for spk_low, spk in _entries(dr_path).items():
            if os.path.isdir(os.path.join(dr_path, spk)):
                if spk_low in speakers:
                    raise DataError(f"{os.path.join(dr_path, spk)}: speaker {spk_low} also in {speakers[spk_low]}")
                speakers[spk_low] = os.path.join(dr_path, spk)
    if not speakers:
        raise DataError(f"{part_dir}: no speaker directories under DR1..DR8 (expected {LAYOUT})")
    return speakers


def scan_utterances(spk_dir):
    """{utt name (lower case, no extension): {'.wav': path, '.phn': path, '.txt': path}}, SA excluded."""
    utts = {}
    for low, name in _entries(spk_dir).items():
        stem, ext = os.path.splitext(low)
        if ext in (".wav", ".phn", ".txt") and not stem.startswith("sa"):
            utts.setdefault(stem, {})[ext] = os.path.join(spk_dir, name)
    for stem, files in sorted(utts.items()):
        missing = [e.upper() for e in (".wav", ".phn", ".txt") if e not in files]
        if missing:
            base = os.path.splitext(next(iter(files.values())))[0]
            raise DataError(f"{base}: missing {' and '.join(missing)} "
                            f"(each TIMIT utterance has .WAV, .PHN and .TXT)")
    if not utts:
        raise DataError(f"{spk_dir}: no SI/SX utterances (.WAV/.PHN/.TXT) found")
    return utts


def wav_entry(path):
    """wav.scp value for a TIMIT .WAV: a sox pipe for NIST SPHERE, the path itself for RIFF WAV."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if head.startswith(b"NIST_1A"):
        return f"sox -t sph {shlex.quote(path)} -t wav - |"
    if head.startswith(b"RIFF"):
        return path
    raise DataError(f"{path}: neither NIST SPHERE nor RIFF WAV (starts with {head!r})")


def read_txt(path):
    """Words of a TIMIT .TXT file (``<begin> <end> <sentence>``)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            fields = f.read().split()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(fields) < 3 or not (fields[0].isdigit() and fields[1].isdigit()):
        raise DataError(f"{path}:1: expected '<begin-sample> <end-sample> <sentence>'")
    return " ".join(fields[2:])


def write_set(out_dir, speakers, *, trials):
    """Write one data dir for {spk: speaker dir}; returns the number of utterances."""
    utt2spk, wav, text, ctm = {}, {}, {}, []
    for spk, spk_dir in sorted(speakers.items()):
        for stem, files in sorted(scan_utterances(spk_dir).items()):
            utt = f"{spk}_{stem}"
            utt2spk[utt] = spk
            wav[utt] = wav_entry(files[".wav"])
            text[utt] = read_txt(files[".txt"])
            ctm += phn_to_ctm(utt, read_phn(files[".phn"]), SAMPLE_RATE)
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun replaces the set (and its stale features)
    os.makedirs(out_dir)
    write_kv(os.path.join(out_dir, "utt2spk"), utt2spk)
    write_kv(os.path.join(out_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kv(os.path.join(out_dir, "wav.scp"), wav)
    write_kv(os.path.join(out_dir, "text"), text)
    write_kv(os.path.join(out_dir, "spk2gender"), {s: s[0] for s in speakers})
    ctm.sort(key=lambda line: (line.split()[0].encode(), float(line.split()[2])))  # C order, then time
    atomic_write_text(os.path.join(out_dir, "phones.ctm"), "".join(ctm))
    if trials:
        write_trials(os.path.join(out_dir, "trials"), make_trials(utt2spk))
    validate_data_dir(out_dir, need_wav=True)
    return len(utt2spk)


def prepare(corpus_dir, data_dir, dev_spk_list, test_spk_list):
    """Write ``data_dir/{train,dev,test}``; returns {set: (speakers, utterances)}."""
    train_dir, test_dir = find_parts(corpus_dir)
    train_spks = scan_speakers(train_dir)
    test_spks = scan_speakers(test_dir)
    bad = [s for s in train_spks if s[0] not in "mf"]
    if bad:
        raise DataError(f"{train_spks[bad[0]]}: speaker directory must start with M or F (the gender)")
    sets = {"train": train_spks}
    for name, list_path in (("dev", dev_spk_list), ("test", test_spk_list)):
        wanted = [s.lower() for s in read_id_list(list_path)]
        missing = [s for s in wanted if s not in test_spks]
        if missing:
            raise DataError(f"{test_dir}: {len(missing)} speaker(s) of {list_path} not found "
                            f"(e.g. {missing[0].upper()}); is this a complete TIMIT copy?")
        sets[name] = {s: test_spks[s] for s in wanted}
    overlap = set(sets["dev"]) & set(sets["test"])
    if overlap:
        raise DataError(f"{dev_spk_list} and {test_spk_list} share speaker(s) {sorted(overlap)}")
    unused = len(test_spks) - len(sets["dev"]) - len(sets["test"])
    log.info("%s: %d TEST speakers outside the dev and core-test lists are not used (Kaldi's split)",
             test_dir, unused)
    summary = {}
    for name, spks in sets.items():
        n = write_set(os.path.join(data_dir, name), spks, trials=name != "train")
        summary[name] = (len(spks), n)
        log.info("%s: %d speakers, %d utterances", os.path.join(data_dir, name), len(spks), n)
    return summary


def _main(argv):
    p = argparse.ArgumentParser(prog="prepare_timit.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-spk", required=True, help="dev speaker list (conf/dev_spk.list)")
    p.add_argument("--test-spk", required=True, help="core-test speaker list (conf/test_spk.list)")
    p.add_argument("corpus_dir", help="TIMIT directory (holds TRAIN/ and TEST/)")
    p.add_argument("data_dir", help="output: <data-dir>/{train,dev,test}")
    a = p.parse_args(argv)
    prepare(a.corpus_dir, a.data_dir, a.dev_spk, a.test_spk)
    return 0


def main(argv=None):
    run_cli("prepare_timit.py", _main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
