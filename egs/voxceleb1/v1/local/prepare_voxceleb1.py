#!/usr/bin/env python3
"""VoxCeleb1 (as distributed) -> Kaldi data dirs ``train``, ``dev``, ``test`` and the official trials.

Expects the audio as ``wav/<id1xxxx>/<video>/<nnnnn>.wav`` (vox1_dev_wav.zip and vox1_test_wav.zip both
unzip to ``wav/``: one shared ``<dir>/wav/`` or ``<dir>/dev/wav/`` + ``<dir>/test/wav/``), plus
``vox1_meta.csv`` (``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set``; tab- or comma-separated)
and the cleaned official trial list ``veri_test2.txt`` (``1 id10270/x6uYqmx31kE/00001.wav
id10270/8jEAjG6SegY/00008.wav``, 1 = same speaker), both in ``<dir>`` unless given.

    train   the VoxCeleb1 dev speakers (Set 'dev', 1211), minus the held-out utterances
    dev     --dev-percent of the dev speakers' utterances (seeded random), for the FHVAE dev bound
    test    the 40 test speakers (Set 'test'); trials = veri_test2.txt as 'enroll test target|nontarget'

Ids: speaker ``id10270``, utterance ``id10270-x6uYqmx31kE-00001`` (as Kaldi's egs/voxceleb).
Files: wav.scp (the 16 kHz WAV files), utt2spk, spk2utt, spk2gender; test/trials.
"""
import argparse
import csv
import logging
import os
import random
import shutil
import sys

from fhvae.bin import run_cli
from fhvae.datadir import validate_data_dir, write_trials
from fhvae.errors import DataError
from fhvae.io.tables import utt2spk_to_spk2utt, write_kv

log = logging.getLogger("prepare_voxceleb1")


def read_meta(path):
    """vox1_meta.csv -> {speaker: (gender 'm'|'f', set 'dev'|'test')}; tab or comma separated, with header."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{path}: empty")
    delim = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delim))
    head = [h.strip().lower() for h in rows[0]]
    try:
        i_id, i_gender, i_set = head.index("voxceleb1 id"), head.index("gender"), head.index("set")
    except ValueError:
        raise DataError(f"{path}:1: expected a header with 'VoxCeleb1 ID', 'Gender' and 'Set', "
                        f"got {lines[0]!r}") from None
    meta = {}
    for lineno, row in enumerate(rows[1:], 2):
        if not any(x.strip() for x in row):
            continue
        try:
            spk, gender, part = row[i_id].strip(), row[i_gender].strip().lower(), row[i_set].strip().lower()
        except IndexError:
            raise DataError(f"{path}:{lineno}: expected {len(head)} fields, got {len(row)}") from None
        if gender not in ("m", "f") or part not in ("dev", "test"):
            raise DataError(f"{path}:{lineno}: gender must be m/f and set dev/test, got {gender!r} {part!r}")
        meta[spk] = (gender, part)
    return meta


def find_wav_dirs(corpus_dir):
    """[wav dir, ...]: ``corpus_dir/wav`` or ``corpus_dir/dev/wav`` and ``corpus_dir/test/wav``."""
    if not os.path.isdir(corpus_dir):
        raise DataError(f"{corpus_dir}: VoxCeleb1 directory not found")
    split = [os.path.join(corpus_dir, p, "wav") for p in ("dev", "test")]
    dirs = [d for d in [os.path.join(corpus_dir, "wav")] + split if os.path.isdir(d)]
    if not dirs:
        raise DataError(f"{corpus_dir}: not a VoxCeleb1 directory: expected wav/<id>/<video>/<nnnnn>.wav "
                        f"(or dev/wav/ and test/wav/)")
    return dirs


def scan_audio(wav_dirs):
    """{utt: (speaker, path)} of every <id>/<video>/<nnnnn>.wav under the wav dirs."""
    utts = {}
    for wav_dir in wav_dirs:
        for spk in sorted(os.listdir(wav_dir)):
            spk_dir = os.path.join(wav_dir, spk)
            if not os.path.isdir(spk_dir):
                continue
            for video in sorted(os.listdir(spk_dir)):
                vid_dir = os.path.join(spk_dir, video)
                if not os.path.isdir(vid_dir):
                    continue
                for name in sorted(os.listdir(vid_dir)):
                    if name.endswith(".wav"):
                        utt = f"{spk}-{video}-{name[:-4]}"
                        if utt in utts:
                            raise DataError(f"{os.path.join(vid_dir, name)}: also at {utts[utt][1]}")
                        utts[utt] = (spk, os.path.join(vid_dir, name))
    if not utts:
        raise DataError(f"{', '.join(wav_dirs)}: no <id>/<video>/<nnnnn>.wav files")
    return utts


def path_to_utt(path):
    """'id10270/x6uYqmx31kE/00001.wav' -> 'id10270-x6uYqmx31kE-00001'; None if not of that form."""
    parts = path.split("/")
    if len(parts) != 3 or not parts[2].endswith(".wav"):
        return None
    return f"{parts[0]}-{parts[1]}-{parts[2][:-4]}"


def read_veri_trials(path, test_utts):
    """veri_test2.txt -> [(enroll, test, 'target'|'nontarget')] with our utterance ids (file order).

    Every utterance must be in ``test_utts``; errors name the line."""
    trials = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{lineno}"
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise DataError(f"{where}: expected '<1|0> <id>/<video>/<nnnnn>.wav <id>/<video>/<nnnnn>.wav', "
                                f"got {line.strip()!r}")
            pair = []
            for p in fields[1:]:
                utt = path_to_utt(p)
                if utt is None:
                    raise DataError(f"{where}: {p!r} is not <id>/<video>/<nnnnn>.wav")
                if utt not in test_utts:
                    raise DataError(f"{where}: {p} is not in the test audio (missing file, or not a test speaker "
                                    f"in vox1_meta.csv)")
                pair.append(utt)
            trials.append((pair[0], pair[1], "target" if fields[0] == "1" else "nontarget"))
    if not trials:
        raise DataError(f"{path}: no trials")
    return trials


def write_set(out_dir, utts, meta, trials=None):
    """One data dir from {utt: (spk, path)}."""
    utt2spk = {u: s for u, (s, _) in utts.items()}
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun replaces the set (and its stale features)
    os.makedirs(out_dir)
    write_kv(os.path.join(out_dir, "utt2spk"), utt2spk)
    write_kv(os.path.join(out_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kv(os.path.join(out_dir, "wav.scp"), {u: p for u, (_, p) in utts.items()})
    write_kv(os.path.join(out_dir, "spk2gender"), {s: meta[s][0] for s in set(utt2spk.values())})
    if trials is not None:
        write_trials(os.path.join(out_dir, "trials"), trials)
    validate_data_dir(out_dir, need_wav=True)
    log.info("%s: %d speakers, %d utterances", out_dir, len(set(utt2spk.values())), len(utt2spk))


def prepare(corpus_dir, data_dir, meta_path=None, trials_path=None, dev_percent=2.0, seed=1):
    """Write ``data_dir/{train,dev,test}``; returns {set: number of utterances}."""
    wav_dirs = find_wav_dirs(corpus_dir)
    meta = read_meta(meta_path or os.path.join(corpus_dir, "vox1_meta.csv"))
    utts = scan_audio(wav_dirs)
    unknown = sorted({s for s, _ in utts.values()} - set(meta))
    if unknown:
        raise DataError(f"{wav_dirs[0]}: speaker {unknown[0]} is not in vox1_meta.csv ({len(unknown)} unknown)")
    parts = {p: {u: v for u, v in utts.items() if meta[v[0]][1] == p} for p in ("dev", "test")}
    for p, found in parts.items():
        listed = {s for s, (_, q) in meta.items() if q == p}
        missing = listed - {s for s, _ in found.values()}
        if not found:
            raise DataError(f"{corpus_dir}: no audio of the VoxCeleb1 {p} speakers (unzip vox1_{p}_wav.zip)")
        if missing:
            log.warning("%s: %d of the %d %s speakers of vox1_meta.csv have no audio (e.g. %s)",
                        corpus_dir, len(missing), len(listed), p, sorted(missing)[0])
    trials = read_veri_trials(trials_path or os.path.join(corpus_dir, "veri_test2.txt"), parts["test"])
    dev_utts = sorted(parts["dev"])
    n_dev = max(1, round(len(dev_utts) * dev_percent / 100))
    held = set(random.Random(seed).sample(dev_utts, n_dev))
    sets = {"train": {u: v for u, v in parts["dev"].items() if u not in held},
            "dev": {u: parts["dev"][u] for u in held}, "test": parts["test"]}
    for name, s in sets.items():
        write_set(os.path.join(data_dir, name), s, meta, trials if name == "test" else None)
    return {name: len(s) for name, s in sets.items()}


def _main(argv):
    p = argparse.ArgumentParser(prog="prepare_voxceleb1.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", help="vox1_meta.csv (default <corpus-dir>/vox1_meta.csv)")
    p.add_argument("--trials", help="official trial list (default <corpus-dir>/veri_test2.txt)")
    p.add_argument("--dev-percent", type=float, default=2.0,
                   help="share of the dev speakers' utterances held out as the dev set (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("corpus_dir", help="VoxCeleb1 directory (wav/ or dev/wav + test/wav)")
    p.add_argument("data_dir", help="output: <data-dir>/{train,dev,test}")
    a = p.parse_args(argv)
    prepare(a.corpus_dir, a.data_dir, a.meta, a.trials, a.dev_percent, a.seed)
    return 0


def main(argv=None):
    run_cli("prepare_voxceleb1.py", _main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
