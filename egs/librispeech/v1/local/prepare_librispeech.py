#!/usr/bin/env python3
"""LibriSpeech (openslr.org/12, as distributed) -> Kaldi data dirs ``train``, ``dev``, ``test``.

Expects ``<dir>/<subset>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac`` with ``<spk>-<chapter>.trans.txt``
beside them and ``<dir>/SPEAKERS.TXT``; ``<dir>`` is the ``LibriSpeech/`` directory the tarballs unpack
to (or a directory holding it). Each output set is the union of the given subsets, e.g.

    train   train-clean-100 (up to all 960 h: train-clean-100 train-clean-360 train-other-500)
    dev     dev-clean
    test    test-clean

Ids are LibriSpeech's own: speaker ``103``, utterance ``103-1240-0000`` (speakers are readers, not
reader-chapter pairs as in Kaldi's ASR recipe, so that s-vectors are per speaker). Files: wav.scp
(``sox FILE.flac -t wav - |``), utt2spk, spk2utt, text, spk2gender (SPEAKERS.TXT); dev and test also
get trials: every pair among at most ``--trial-utts-per-spk`` utterances of each speaker (a seeded
random choice; test-clean: 40 speakers x 20 -> 319,600 trials).
"""
import argparse
import logging
import os
import shlex
import shutil
import sys

from fhvae.bin import run_cli
from fhvae.datadir import make_trials, sample_utts_per_speaker, validate_data_dir, write_trials
from fhvae.errors import DataError
from fhvae.io.tables import utt2spk_to_spk2utt, write_kv

log = logging.getLogger("prepare_librispeech")

SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
           "test-other")


def find_base(corpus_dir):
    """The LibriSpeech/ directory: ``corpus_dir`` itself or ``corpus_dir/LibriSpeech``."""
    for d in (corpus_dir, os.path.join(corpus_dir, "LibriSpeech")):
        if os.path.isfile(os.path.join(d, "SPEAKERS.TXT")):
            return d
    if not os.path.isdir(corpus_dir):
        raise DataError(f"{corpus_dir}: LibriSpeech directory not found")
    raise DataError(f"{corpus_dir}: not a LibriSpeech directory: no SPEAKERS.TXT in it or in "
                    f"{os.path.join(corpus_dir, 'LibriSpeech')} (expected the LibriSpeech/ dir the "
                    f"openslr.org/12 tarballs unpack to)")


def read_speakers(path):
    """SPEAKERS.TXT (``ID | SEX | SUBSET | MINUTES | NAME``, ';' comments) -> {speaker: 'm'|'f'}."""
    genders = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith(";") or not line.strip():
                continue
            fields = [x.strip() for x in line.split("|", 4)]
            if len(fields) < 3 or not fields[0].isdigit() or fields[1].lower() not in ("m", "f"):
                raise DataError(f"{path}:{lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line.strip()!r}")
            genders[fields[0]] = fields[1].lower()
    return genders


def scan_subset(base, subset):
    """{utt: (speaker, flac path, words)} of one subset, from its trans.txt files."""
    sub = os.path.join(base, subset)
    if not os.path.isdir(sub):
        have = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
        raise DataError(f"{sub}: subset not found (found: {', '.join(have) or 'none'}; download it from "
                        f"openslr.org/12)")
    utts = {}
    for spk in sorted(os.listdir(sub)):
        spk_dir = os.path.join(sub, spk)
        if not os.path.isdir(spk_dir):
            continue
        for chapter in sorted(os.listdir(spk_dir)):
            trans = os.path.join(spk_dir, chapter, f"{spk}-{chapter}.trans.txt")
            if not os.path.isfile(trans):
                raise DataError(f"{trans}: transcript missing")
            with open(trans, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    fields = line.split(maxsplit=1)
                    if not fields:
                        continue
                    utt = fields[0]
                    if not utt.startswith(f"{spk}-{chapter}-"):
                        raise DataError(f"{trans}:{lineno}: utterance {utt!r} is not of {spk}-{chapter}")
                    flac = os.path.join(spk_dir, chapter, utt + ".flac")
                    if not os.path.isfile(flac):
                        raise DataError(f"{flac}: audio missing (listed in {trans}:{lineno})")
                    utts[utt] = (spk, flac, fields[1].strip() if len(fields) > 1 else "")
    if not utts:
        raise DataError(f"{sub}: no utterances (expected <spk>/<chapter>/<spk>-<chapter>.trans.txt)")
    return utts


def write_set(out_dir, utts, genders, *, trials_per_spk=None, seed=1):
    """Write one data dir from {utt: (spk, flac, words)}."""
    utt2spk = {u: v[0] for u, v in utts.items()}
    missing = sorted(set(utt2spk.values()) - set(genders))
    if missing:
        raise DataError(f"SPEAKERS.TXT: speaker {missing[0]} (of {out_dir}) not listed")
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun replaces the set (and its stale features)
    os.makedirs(out_dir)
    write_kv(os.path.join(out_dir, "utt2spk"), utt2spk)
    write_kv(os.path.join(out_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kv(os.path.join(out_dir, "wav.scp"), {u: f"sox {shlex.quote(v[1])} -t wav - |" for u, v in utts.items()})
    write_kv(os.path.join(out_dir, "text"), {u: v[2] for u, v in utts.items()})
    write_kv(os.path.join(out_dir, "spk2gender"), {s: genders[s] for s in set(utt2spk.values())})
    if trials_per_spk:
        write_trials(os.path.join(out_dir, "trials"), make_trials(sample_utts_per_speaker(utt2spk, trials_per_spk, seed)))
    validate_data_dir(out_dir, need_wav=True)


def prepare(corpus_dir, data_dir, sets, trials_per_spk=20, seed=1):
    """sets: {name: [subset, ...]}; trials for every set but 'train'. Returns {name: (spks, utts)}."""
    base = find_base(corpus_dir)
    genders = read_speakers(os.path.join(base, "SPEAKERS.TXT"))
    summary = {}
    for name, subsets in sets.items():
        if not subsets:
            raise DataError(f"no LibriSpeech subset given for the {name} set")
        utts = {}
        for subset in subsets:
            if subset not in SUBSETS:
                log.warning("%s is not a standard LibriSpeech subset (%s)", subset, ", ".join(SUBSETS))
            part = scan_subset(base, subset)
            dup = set(part) & set(utts)
            if dup:
                raise DataError(f"{os.path.join(base, subset)}: utterance {sorted(dup)[0]} is also in another "
                                f"subset of the {name} set")
            utts.update(part)
        out = os.path.join(data_dir, name)
        write_set(out, utts, genders, trials_per_spk=None if name == "train" else trials_per_spk, seed=seed)
        summary[name] = (len({v[0] for v in utts.values()}), len(utts))
        log.info("%s (%s): %d speakers, %d utterances", out, " ".join(subsets), *summary[name])
    return summary


def _main(argv):
    p = argparse.ArgumentParser(prog="prepare_librispeech.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subsets", default="train-clean-100",
                   help="training subsets, space-separated (default train-clean-100)")
    p.add_argument("--dev-subsets", default="dev-clean", help="space-separated (default dev-clean)")
    p.add_argument("--test-subsets", default="test-clean", help="space-separated (default test-clean)")
    p.add_argument("--trial-utts-per-spk", type=int, default=20,
                   help="utterances per speaker in the dev/test trials (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("corpus_dir", help="the LibriSpeech/ directory (or its parent)")
    p.add_argument("data_dir", help="output: <data-dir>/{train,dev,test}")
    a = p.parse_args(argv)
    sets = {"train": a.subsets.split(), "dev": a.dev_subsets.split(), "test": a.test_subsets.split()}
    prepare(a.corpus_dir, a.data_dir, sets, a.trial_utts_per_spk, a.seed)
    return 0


def main(argv=None):
    run_cli("prepare_librispeech.py", _main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
