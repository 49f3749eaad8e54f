"""RESULTS.md of a recipe run, generated from the files the stages wrote (never typed by hand).

Collects exp/<tag>/sv/**/results.json (EERs, minDCF, by the trials, vectors and backend each
records), probes/probes.md, abx/*/results.json (ABX), asr/*/results.json (WER by condition), the
last metrics.jsonl line (dev bound), and embeds the PNGs (training curve, t-SNE grid,
recombination), with the command and the git commit that produced them.
"""
import datetime
import json
import os
import shutil
import subprocess

from fhvae.io.atomic import atomic_write_text


def _commit(path=os.path.dirname(os.path.abspath(__file__))):
    """Short commit of the git checkout holding ``path`` (default: this code's, wherever the report
    goes), with a note if tracked files were changed; "unknown" outside a checkout."""
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _short(path, *roots):
    """``path`` relative to the first of ``roots`` that holds it, else as it is."""
    for root in roots:
        rel = os.path.relpath(path, root)
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return rel
    return path


def _sv_table(exp_dir, base):
    """Markdown table of every exp/sv/**/results.json, by the trials, vectors and backend each records.

    Trial lists are shown relative to ``base`` (the report's directory) or else the current
    directory (the recipe's), vectors relative to ``exp_dir`` first.
    """
    sv = os.path.join(exp_dir, "sv")
    rows = []
    for root, _, files in os.walk(sv):
        if "results.json" not in files:
            continue
        with open(os.path.join(root, "results.json")) as f:
            r = json.load(f)
        backend = r["backend"] + (f" (LDA {r['lda_dim']})" if "lda_dim" in r else "")
        inputs = r["inputs"]
        key = (_short(inputs["trials"], base, os.getcwd()), _short(inputs["vectors"], exp_dir, base, os.getcwd()),
               backend)
        rows.append((key, f"| {' | '.join(key)} | {r['eer']:.2f} | {r['eer_interp']:.2f} | {r['mindcf_p0.01']:.3f} | "
                          f"{r['mindcf_p0.001']:.3f} | {r['n_target']} / {r['n_nontarget']} |"))
    if not rows:
        return None
    head = ("| trials | vectors | backend | EER % (Kaldi compute-eer) | EER % (interpolated) | minDCF p=0.01 | "
            "minDCF p=0.001 | target / nontarget |\n|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(row for _, row in sorted(rows))


def _results(exp_dir, sub):
    """{name: results.json} of every exp_dir/<sub>/<name>/results.json, sorted by name."""
    d = os.path.join(exp_dir, sub)
    out = {}
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        path = os.path.join(d, name, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


def _abx_table(exp_dir):
    rows = [f"| {n} | {r['within']:.2f} | {r['across']:.2f} | {r['n_items']} |"
            for n, r in _results(exp_dir, "abx").items() if r.get("within") is not None]
    if not rows:
        return None
    return ("| features | ABX within speaker % | ABX across speakers % | items |\n|---|---:|---:|---:|\n"
            + "\n".join(rows))


def _asr_table(exp_dir):
    res = _results(exp_dir, "asr")
    conds = sorted({c for r in res.values() for c in r.get("per_cond", {})})
    if not res:
        return None
    rows = [f"| {n} | " + " | ".join(f"{r['per_cond'][c]['wer']:.1f}" if c in r.get("per_cond", {}) else "-"
                                     for c in conds) + f" | {r['wer']:.1f} |" for n, r in res.items()]
    return ("| features | " + " | ".join(f"WER {c} %" for c in conds) + " | WER all % |\n|---|"
            + "---:|" * (len(conds) + 1) + "\n" + "\n".join(rows))


def write_report(exp_dir, out_path, command, title="Results", assets_dir=None):
    """Write ``out_path`` (Markdown) from the outputs of ``exp_dir``; image links are relative.

    With ``assets_dir`` the PNGs are copied there (e.g. to commit them next to RESULTS.md, since
    exp/ is not kept in git) and the links point at the copies.
    """
    exp_dir = os.path.abspath(exp_dir)
    base = os.path.dirname(os.path.abspath(out_path))

    def rel(p):
        if assets_dir:
            os.makedirs(assets_dir, exist_ok=True)
            dst = os.path.join(assets_dir, os.path.basename(p))
            shutil.copyfile(p, dst)
            p = dst
        return os.path.relpath(p, base)
    lines = [f"# {title}", "",
             f"Produced by `{command}` at commit {_commit()} on "
             f"{datetime.date.today().isoformat()}; this file is written by `fhvae-report` from the run's outputs.",
             ""]
    metrics = os.path.join(exp_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            recs = [json.loads(x) for x in f if x.strip()]
        if recs:
            first, last = recs[0], recs[-1]
            lines += ["## Training", "",
                      f"{last['step']} steps ({last['epoch']} epochs of {last['step'] // last['epoch']} steps). "
                      f"Dev segment lower bound (nats/segment): {first['dev']['bound']:.1f} after epoch 1, "
                      f"{last['dev']['bound']:.1f} after epoch {last['epoch']}.", ""]
            done = os.path.join(exp_dir, "done")
            if os.path.isfile(done):
                with open(done) as f:
                    d = json.load(f)
                lines += [f"Best dev bound {d['best_dev_bound']:.1f} at step {d['best_step']}.", ""]
    if os.path.isfile(os.path.join(exp_dir, "training_curve.png")):
        lines += [f"![training curve]({rel(os.path.join(exp_dir, 'training_curve.png'))})", ""]
    sv = _sv_table(exp_dir, base)
    if sv:
        lines += ["## Speaker verification", "",
                  "s-vectors (MAP mu2 per utterance) against per-utterance fbank mean+std vectors, scored by "
                  "the same backend on the same trials. EER (Kaldi compute-eer): sort target and nontarget "
                  "scores, first target position p where nontarget[N-1-floor(N p / T)] < target[p], EER = p/T. "
                  "Interpolated EER: the ROC crossing. minDCF: Cmiss = Cfa = 1, normalized.", "", sv, ""]
    probes = os.path.join(exp_dir, "probes", "probes.md")
    if os.path.isfile(probes):
        with open(probes) as f:
            lines += ["## Linear probes (accuracy on held-out segments)", "",
                      "Logistic regression on frozen inputs: trained on segments of the training set, tested on "
                      "the dev set. z1 should predict phones and not speaker/channel; z2 the opposite.", "",
                      f.read().strip(), ""]
    abx = _abx_table(exp_dir)
    if abx:
        lines += ["## ABX phone discriminability (`fhvae-abx`, test set)", "",
                  "Triphone-context ABX error on frames (angular distance, DTW normalised by path length); "
                  "lower is better. Within: A, B, X of one speaker; across: X of another speaker.", "", abx, ""]
    asr = _asr_table(exp_dir)
    if asr:
        lines += ["## Downstream ASR (`fhvae-asr`, stage 8)", "",
                  "CTC on BPE units trained on the clean-condition training utterances, greedy decoding, "
                  "word error rate on the test set by channel condition.", "", asr, ""]
    plots = os.path.join(exp_dir, "plots")
    for name, caption in (("tsne_grid.png", "t-SNE of z1 (top) and z2 (bottom) test segments, coloured by "
                                            "speaker, channel condition and phone class (paper Fig. 3)"),
                          ("recombination.png", "Recombination: decoding z1 of row A with z2 of column B "
                                                "(paper Fig. 4)")):
        p = os.path.join(plots, name)
        if os.path.isfile(p):
            lines += [f"## {caption.split(':')[0].split(' of ')[0]}", "", caption + ".", "",
                      f"![{name}]({rel(p)})", ""]
    atomic_write_text(out_path, "\n".join(lines))
    return out_path
