#!/usr/bin/env python3
"""Table of the seed systems (local/seed_systems.sh) from their result files -> markdown.

Per system exp/<s>: metrics.jsonl (last epoch: steps, dev bound, dev KL(z1), vq codebook usage),
abx/z1/results.json (fhvae-abx), probes/probes.json (fhvae-probe), asr/z1/results.json (fhvae-asr);
fbank rows from exp/fbank/{abx,asr}. Missing results are '-'.

Usage: local/seed_table.py --exp exp --systems "gauss vq ..." --out exp/seed_systems.md
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", ".."))
from fhvae.io.atomic import atomic_write_text  # noqa: E402

CONDS = ("clean", "noise", "telephone")


def load(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def last_metrics(exp):
    path = os.path.join(exp, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    return recs[-1] if recs else None


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def rows(exp_root, systems):
    train_rows, eval_rows = [], []
    for s in ["fbank"] + systems:
        d = os.path.join(exp_root, s)
        m = last_metrics(d) if s != "fbank" else None
        abx = load(os.path.join(d, "abx", "results.json" if s == "fbank" else "z1/results.json"))
        probes = load(os.path.join(d, "probes", "probes.json"))
        asr = load(os.path.join(d, "asr", "results.json" if s == "fbank" else "z1/results.json"))
        if m is not None:
            dv, tr = m["dev"], m["train"]
            usage = (f"{tr['vq_usage']:.2f} / {tr['vq_perplexity']:.0f} / {tr['vq_used']}"
                     if "vq_usage" in tr else "-")
            train_rows.append(f"| {s} | {m['step']} | {dv['bound']:.1f} | {dv['log_px']:.1f} | {dv['kl_z1']:.2f} "
                              f"| {dv['kl_z2']:.2f} | {usage} |")
        p = probes or {}
        ph = p.get("phone_class", {}).get("z1")
        sp_z1 = p.get("speaker", {}).get("z1")
        sp_z2 = p.get("speaker", {}).get("z2")
        cond_z1 = p.get("condition", {}).get("z1")
        wer = asr["per_cond"] if asr else {}
        cells = [s if s != "fbank" else "fbank (input)",
                 fmt(abx and abx["within"], ".2f"), fmt(abx and abx["across"], ".2f"),
                 fmt(ph and 100 * ph), fmt(sp_z1 and 100 * sp_z1), fmt(sp_z2 and 100 * sp_z2),
                 fmt(cond_z1 and 100 * cond_z1)]
        cells += [fmt(wer.get(c, {}).get("wer")) for c in CONDS] + [fmt(asr and asr["wer"])]
        eval_rows.append("| " + " | ".join(cells) + " |")
    return train_rows, eval_rows


def all_metrics(exp):
    path = os.path.join(exp, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def plot(exp_root, systems, out):
    """PNG: vq codebook perplexity per epoch (vq systems), dev KL(z1) and dev bound per epoch (all)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fhvae.io.atomic import atomic_open

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for s in systems:
        recs = all_metrics(os.path.join(exp_root, s))
        if not recs:
            continue
        steps = [r["step"] for r in recs]
        if "vq_perplexity" in recs[0]["train"]:
            ax[0].plot(steps, [r["train"]["vq_perplexity"] for r in recs], marker=".", label=s)
        else:
            ax[1].plot(steps, [r["dev"]["kl_z1"] for r in recs], marker=".", label=s)
        ax[2].plot(steps, [r["dev"]["bound"] for r in recs], marker=".", label=s)
    ax[0].set(title="vq codebook perplexity (train batches, K = 256)", xlabel="step")
    ax[1].set(title="dev KL(z1) (nats / segment; vq: log K)", xlabel="step")
    ax[2].set(title="dev segment lower bound (nats)", xlabel="step", ylim=(None, None))
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", default="exp")
    p.add_argument("--systems", default="gauss jitter jitter_s2 vq vq_plain ar ar_zf")
    p.add_argument("--out", required=True)
    p.add_argument("--plot", help="also write this PNG (codebook perplexity, KL(z1), dev bound per epoch)")
    a = p.parse_args(argv)
    if a.plot:
        plot(a.exp, a.systems.split(), a.plot)
    train_rows, eval_rows = rows(a.exp, a.systems.split())
    text = ("Training (last epoch; dev terms in nats per 20-frame segment; vq codebook usage on the last "
            "epoch's training batches: entropy / ln K, perplexity, codes used of 256)\n\n"
            "| system | steps | dev bound | dev log p(x) | dev KL(z1) | dev KL(z2) | vq usage / perplexity / used |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(train_rows) + "\n\n"
            "Evaluation: ABX error (%, test, z1 frames; fbank row: the input features), linear-probe accuracy "
            "(%, dev segments: phone class from z1, speaker from z1 and z2, condition from z1), "
            "ASR WER (%, CTC trained on clean train utterances, by test condition)\n\n"
            "| system | ABX within | ABX across | phone class z1 | speaker z1 | speaker z2 | condition z1 "
            "| WER clean | WER noise | WER telephone | WER all |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(eval_rows) + "\n")
    atomic_write_text(a.out, text)
    print(text)


if __name__ == "__main__":
    main()
