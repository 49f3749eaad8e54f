#!/usr/bin/env python3
"""Speaker-verification diagnostics of the mini recipe (the analyses behind EXPERIMENTS.md).

    local/sv_analysis.py baseline-variants [--data data]
        PLDA EER (%) of per-utterance fbank statistics: frame mean, frame std, mean + std (the
        recipe's baseline), trained on data/train, scored on data/test/{trials,trials_same_cond}.
    local/sv_analysis.py pairs --scores exp/fhvae/sv/trials/svector_plda/scores [--miss 0.1]
        For a scored trial list: the threshold that misses --miss of the target trials, the
        false-alarm rate of each pair of test speakers at that threshold (worst first) and the miss
        rate of each speaker. Shows whether an EER comes from a few confusable voices.

Run in egs/mini/v1 after stages 1-6 (``. ./path.sh`` first, or use tools/venv/bin/python).
"""
import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
from fhvae.bin import run_cli  # noqa: E402
from fhvae.errors import DataError  # noqa: E402
from fhvae.eval.backends import PLDABackend  # noqa: E402
from fhvae.eval.sv import baseline_vector, evaluate, read_trials, score_trials  # noqa: E402
from fhvae.features.stats import load_stats  # noqa: E402
from fhvae.io.ark import FeatReader  # noqa: E402
from fhvae.io.tables import read_kv  # noqa: E402

# Parts of the recipe's baseline vector [frame mean, frame std] (fhvae.eval.sv.baseline_vector).
PARTS = {"mean": lambda v: v[:v.size // 2], "std": lambda v: v[v.size // 2:], "mean+std": lambda v: v}


def baseline_variants(data):
    """Print a markdown table: fbank statistic -> PLDA EER on each trial list."""
    stats = load_stats(os.path.join(data, "train", "stats.npz"))
    std = np.sqrt(np.maximum(stats.var, 1e-10))
    vectors = {}
    for s in ("train", "test"):
        with FeatReader(os.path.join(data, s, "feats.scp")) as reader:
            vectors[s] = {u: baseline_vector((reader[u] - stats.mean) / std) for u in reader.keys()}
    utt2spk = read_kv(os.path.join(data, "train", "utt2spk"))
    lists = ("trials", "trials_same_cond")
    trials = {t: read_trials(os.path.join(data, "test", t)) for t in lists}
    keys = sorted(vectors["train"])
    print("| fbank statistic | dim | " + " | ".join(f"PLDA EER % ({t})" for t in lists) + " |")
    print("|---|---:|" + "---:|" * len(lists))
    for name, part in PARTS.items():
        train = np.stack([part(vectors["train"][k]) for k in keys])
        backend = PLDABackend().fit(train, np.array([utt2spk[k] for k in keys]))
        test = {u: part(v) for u, v in vectors["test"].items()}
        eers = [evaluate(score_trials(trials[t], test, backend), np.array([x[2] for x in trials[t]]))["eer"]
                for t in lists]
        print(f"| {name} | {train.shape[1]} | " + " | ".join(f"{e:.2f}" for e in eers) + " |")


def pairs(scores_path, trials_path, utt2spk_path, miss, top):
    """Print per-speaker-pair false alarms and per-speaker misses at the ``miss`` threshold."""
    utt2spk = read_kv(utt2spk_path)
    target = {(e, t): lab for e, t, lab in read_trials(trials_path)}
    rows = []
    with open(scores_path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) != 3 or tuple(fields[:2]) not in target:
                raise DataError(f"{scores_path}:{lineno}: expected 'enroll test score' of a trial in "
                                f"{trials_path}, got {line.strip()!r}")
            e, t = fields[:2]
            for u in (e, t):
                if u not in utt2spk:
                    raise DataError(f"{scores_path}:{lineno}: utterance {u!r} is not in {utt2spk_path}")
            rows.append((utt2spk[e], utt2spk[t], float(fields[2]), target[(e, t)]))
    tar = np.sort([s for _, _, s, lab in rows if lab])
    thr = tar[int(miss * len(tar))]
    fa, n_non = collections.Counter(), collections.Counter()
    missed, n_tar = collections.Counter(), collections.Counter()
    for a, b, s, lab in rows:
        if lab:
            n_tar[a] += 1
            missed[a] += s < thr
        else:
            k = tuple(sorted((a, b)))
            n_non[k] += 1
            fa[k] += s >= thr
    print(f"{scores_path}: threshold {thr:.4g} misses {miss:.0%} of {len(tar)} target trials")
    worst = sorted(n_non, key=lambda k: -fa[k] / n_non[k])[:top]
    print("false alarms by speaker pair: " + ", ".join(f"{a}/{b} {fa[(a, b)] / n_non[(a, b)]:.2f}" for a, b in worst))
    print("misses by speaker: " + ", ".join(f"{s} {missed[s] / n_tar[s]:.2f}" for s in sorted(n_tar)))


def _main(argv):
    p = argparse.ArgumentParser(prog="sv_analysis.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("baseline-variants", help="PLDA EER of fbank mean / std / mean+std")
    b.add_argument("--data", default="data")
    q = sub.add_parser("pairs", help="false alarms per speaker pair of a scored trial list")
    q.add_argument("--scores", required=True, help="'enroll test score' lines (fhvae-score-sv's DIR/scores)")
    q.add_argument("--trials", default="data/test/trials")
    q.add_argument("--utt2spk", default="data/test/utt2spk")
    q.add_argument("--miss", type=float, default=0.1, help="miss rate that sets the threshold (default 0.1)")
    q.add_argument("--top", type=int, default=6, help="speaker pairs to list (default 6)")
    args = p.parse_args(argv)
    if args.command == "baseline-variants":
        baseline_variants(args.data)
    else:
        pairs(args.scores, args.trials, args.utt2spk, args.miss, args.top)
    return 0


if __name__ == "__main__":
    run_cli("sv_analysis.py", _main)
