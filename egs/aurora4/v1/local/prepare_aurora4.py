#!/usr/bin/env python3
"""Aurora-4, 16 kHz (as distributed) -> Kaldi data dirs ``train``, ``dev``, ``test`` with condition labels.

Reads the corpus's own file lists, as Kaldi's egs/aurora4 does: ``<dir>/lists/devtest<NN>_0330_16k.list``
(the development set, 330 sentences in each of 14 conditions = 4620 utterances) and
``<dir>/lists/test<NN>_0330_16k.list`` (eval92: 330 x 14). Each list line is a file path relative to
``<dir>``; for the devtest lists Kaldi also tries ``<dir>/<a><b>_<c>/<line>`` when the line's first
directory is ``<a>_<b>_<c>``, and so does this script. Conditions ``NN``:

    01-07  primary microphone (Sennheiser, .wv1): clean, car, babble, restaurant, street, airport, train
    08-14  secondary microphone (.wv2): the same seven noise types

Following the paper (and Hsu et al. 2017) the FHVAE is trained on the development set ("multi-
condition", noise and channel known): ``train`` = 90 % of its utterances, ``dev`` = the other
``--dev-percent`` (seeded random choice), ``test`` = eval92 with trials (every pair among at most
``--trial-utts-per-spk`` utterances of each speaker). Ids: speaker = the WSJ speaker (first 3 characters
of the file name), utterance ``<file name>-<NN>`` (``330c0201-03``). Files: wav.scp (a sox pipe: the
.wv1/.wv2 files are headerless big-endian 16-bit PCM as Kaldi reads them; NIST SPHERE or RIFF
files are detected and read as such), utt2spk, spk2utt, utt2cond (``<noise>-<mic>``, 14 values),
utt2noise, utt2mic (``primary``|``secondary``).
"""
import argparse
import logging
import os
import random
import shlex
import shutil
import sys

from fhvae.bin import run_cli
from fhvae.datadir import make_trials, sample_utts_per_speaker, validate_data_dir, write_trials
from fhvae.errors import DataError
from fhvae.io.tables import utt2spk_to_spk2utt, write_kv

log = logging.getLogger("prepare_aurora4")

NOISES = ("clean", "car", "babble", "restaurant", "street", "airport", "train")
# condition NN -> (noise, microphone, file extension)
CONDITIONS = {f"{i + 1:02d}": (NOISES[i % 7], "primary" if i < 7 else "secondary", "wv1" if i < 7 else "wv2")
              for i in range(14)}


def kaldi_dev_path(root, line):
    """Kaldi's devtest path: first directory ``a_b_c`` -> ``<root>/ab_c/<line>`` (None if not of that form)."""
    b = line.split("/", 1)[0].split("_")
    return os.path.join(root, f"{b[0]}{b[1]}_{b[2]}", line) if len(b) >= 3 and "/" in line else None


def read_list(root, list_path, cond, devtest):
    """[(file name stem, path)] of one condition list; files not on disk are skipped with a warning."""
    if not os.path.isfile(list_path):
        raise DataError(f"{list_path}: list not found (is {root} the Aurora-4 16 kHz corpus with lists/?)")
    ext = CONDITIONS[cond][2]
    out, missing = [], []
    with open(list_path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            fields = raw.split()
            if not fields or fields[0].startswith(";"):
                continue
            line = fields[0]
            stem, e = os.path.splitext(os.path.basename(line))
            if e.lower() != "." + ext:
                raise DataError(f"{list_path}:{lineno}: condition {cond} is the {CONDITIONS[cond][1]} microphone "
                                f"(.{ext}), got {line!r}")
            cands = [os.path.join(root, line)] + ([kaldi_dev_path(root, line)] if devtest else [])
            path = next((c for c in cands if c and os.path.isfile(c)), None)
            if path is None:
                missing.append(f"{list_path}:{lineno}: {' or '.join(c for c in cands if c)}")
            else:
                out.append((stem.lower(), path))
    if not out:
        raise DataError(f"{list_path}: none of its files found, e.g. {missing[0] if missing else 'empty list'}")
    if missing:
        log.warning("%d file(s) of %s not on disk, left out; first: %s", len(missing), list_path, missing[0])
    return out


def wav_entry(path):
    """wav.scp value: sox pipe for raw big-endian PCM (the distributed .wv1/.wv2) or NIST SPHERE; RIFF as is."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    q = shlex.quote(path)
    if head.startswith(b"NIST_1A"):
        return f"sox -t sph {q} -t wav - |"
    if head.startswith(b"RIFF"):
        return path
    return f"sox -B -r 16000 -e signed -b 16 -c 1 -t raw {q} -t wav - |"


def collect(root, kind):
    """{utt: (spk, path, cond)} over the 14 condition lists of ``kind`` ('devtest' or 'test')."""
    utts = {}
    for cond in CONDITIONS:
        for stem, path in read_list(root, os.path.join(root, "lists", f"{kind}{cond}_0330_16k.list"), cond,
                                    kind == "devtest"):
            utt = f"{stem}-{cond}"
            if utt in utts:
                raise DataError(f"{path}: {stem} listed twice in condition {cond} ({utts[utt][1]})")
            utts[utt] = (stem[:3], path, cond)
    return utts


def write_set(out_dir, utts, *, trials_per_spk=None, seed=1):
    """One data dir from {utt: (spk, path, cond)}."""
    utt2spk = {u: v[0] for u, v in utts.items()}
    shutil.rmtree(out_dir, ignore_errors=True)  # a rerun replaces the set (and its stale features)
    os.makedirs(out_dir)
    write_kv(os.path.join(out_dir, "utt2spk"), utt2spk)
    write_kv(os.path.join(out_dir, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_kv(os.path.join(out_dir, "wav.scp"), {u: wav_entry(v[1]) for u, v in utts.items()})
    noise = {u: CONDITIONS[v[2]][0] for u, v in utts.items()}
    mic = {u: CONDITIONS[v[2]][1] for u, v in utts.items()}
    write_kv(os.path.join(out_dir, "utt2cond"), {u: f"{noise[u]}-{mic[u]}" for u in utts})
    write_kv(os.path.join(out_dir, "utt2noise"), noise)
    write_kv(os.path.join(out_dir, "utt2mic"), mic)
    if trials_per_spk:
        write_trials(os.path.join(out_dir, "trials"), make_trials(sample_utts_per_speaker(utt2spk, trials_per_spk, seed)))
    validate_data_dir(out_dir, need_wav=True)
    log.info("%s: %d speakers, %d utterances", out_dir, len(set(utt2spk.values())), len(utt2spk))


def prepare(corpus_dir, data_dir, dev_percent=10.0, trials_per_spk=20, seed=1):
    """Write ``data_dir/{train,dev,test}``; returns {set: number of utterances}."""
    if not os.path.isdir(corpus_dir):
        raise DataError(f"{corpus_dir}: Aurora-4 directory not found")
    if not os.path.isdir(os.path.join(corpus_dir, "lists")):
        raise DataError(f"{corpus_dir}: not the Aurora-4 corpus: no lists/ directory (expected "
                        f"lists/devtest01_0330_16k.list ... lists/test14_0330_16k.list)")
    devtest = collect(corpus_dir, "devtest")
    test = collect(corpus_dir, "test")
    names = sorted(devtest)
    held = set(random.Random(seed).sample(names, max(1, round(len(names) * dev_percent / 100))))
    sets = {"train": {u: v for u, v in devtest.items() if u not in held},
            "dev": {u: devtest[u] for u in held}, "test": test}
    for name, utts in sets.items():
        write_set(os.path.join(data_dir, name), utts, trials_per_spk=trials_per_spk if name == "test" else None,
                  seed=seed)
    return {name: len(u) for name, u in sets.items()}


def _main(argv):
    p = argparse.ArgumentParser(prog="prepare_aurora4.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-percent", type=float, default=10.0,
                   help="share of the development-set utterances held out as dev (default 10)")
    p.add_argument("--trial-utts-per-spk", type=int, default=20, help="utterances per speaker in the test trials")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("corpus_dir", help="Aurora-4 16 kHz directory (holds lists/)")
    p.add_argument("data_dir", help="output: <data-dir>/{train,dev,test}")
    a = p.parse_args(argv)
    prepare(a.corpus_dir, a.data_dir, a.dev_percent, a.trial_utts_per_spk, a.seed)
    return 0


def main(argv=None):
    run_cli("prepare_aurora4.py", _main, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
