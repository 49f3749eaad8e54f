"""Qualitative disentanglement checks (paper Sec. 5.2) and decoding of recombined latents.

- t-SNE (Fig. 3): z1 and z2 of sampled segments, taken from an export at the segments' centre
  frames, projected to 2-D (one embedding per latent) and coloured by each factor in turn.
  A disentangled model clusters speaker/condition in z2 but not z1, and phone classes in z1 only.
- Recombination (Fig. 4): segments decoded from [z1 of segment A_i, z2 of segment B_j].
- Conversion: whole utterances decoded with their sequence-level factor replaced by a target
  speaker's (see ``convert``).

Figures are drawn on matplotlib ``Figure`` objects (no pyplot state) and written atomically.
"""
import logging
import os

import numpy as np
import torch

from fhvae import infer
from fhvae.errors import DataError
from fhvae.eval.labels import SetLabels, centre_frame, sample_segments
from fhvae.eval.probes import read_segments, utt2frames
from fhvae.io.ark import FeatReader
from fhvae.io.atomic import atomic_open
from fhvae.datadir import load_data_dir

log = logging.getLogger(__name__)

TSNE_FACTORS = ("speaker", "condition", "phone_class")
_FILE_NAME = {"speaker": "speaker", "condition": "condition", "phone_class": "phone"}


def _save(fig, path, dpi=110):
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")


def _figure(w, h):
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h))


# ------------------------------------------------------------------------------------------ t-SNE

def tsne_embed(x, seed=0):
    """t-SNE of x (N, d) -> (N, 2): PCA init, fixed seed, perplexity min(30, (N - 1) / 3)."""
    from sklearn.manifold import TSNE
    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    return TSNE(2, init="pca", random_state=seed, perplexity=perplexity,
                learning_rate="auto").fit_transform(np.asarray(x, dtype=np.float64))


def _colors(n):
    import matplotlib
    if n <= 10:
        return matplotlib.colormaps["tab10"](np.arange(n))
    if n <= 20:
        return matplotlib.colormaps["tab20"](np.arange(n))
    # many classes: spread over a rainbow, neighbours in label order far apart in colour
    order = np.argsort(np.random.default_rng(0).permutation(n))
    return matplotlib.colormaps["turbo"](order / (n - 1))


def _scatter(ax, xy, labels, title):
    """Points of xy coloured by label (unlabelled points are not drawn); legend if <= 12 classes."""
    keep = np.array([y is not None for y in labels], dtype=bool)
    classes = sorted(set(labels[keep].tolist()))
    for c, color in zip(classes, _colors(len(classes))):
        m = keep & (labels == c)
        ax.scatter(xy[m, 0], xy[m, 1], s=5, color=color, alpha=0.7, label=str(c), linewidths=0)
    ax.set_title(f"{title} ({len(classes)} classes, {int(keep.sum())} segments)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 12:
        ax.legend(fontsize=7, markerscale=2.5, loc="best", framealpha=0.7)


def read_export_at(export_dir, segments, seg_len):
    """z1, z2 of an export at the centre frames of ``segments`` [(utt, start)]: {latent: (N, dim)}."""
    out = {}
    for z in ("z1", "z2"):
        rows = []
        with FeatReader(os.path.join(export_dir, f"{z}.scp")) as reader:
            cur, m = None, None
            for u, s in segments:
                if u != cur:
                    cur, m = u, reader[u]
                rows.append(m[centre_frame(s, seg_len)])
        out[z] = np.stack(rows)
    return out


def plot_tsne(data_dir, export_dir, out_dir, *, seg_len=20, phone_classes=None, max_segments=2000,
              seed=0):
    """t-SNE of exported z1 and z2 of up to ``max_segments`` segments of ``data_dir``.

    Writes tsne_{z1,z2}_{speaker,condition,phone}.png (phone = phone class) for the factors whose
    labels exist, and tsne_grid.png (rows z1, z2; columns speaker, condition, phone class).
    Returns the paths written.
    """
    scp = os.path.join(export_dir, "z1.scp")
    if not os.path.isfile(scp):
        raise DataError(f"{scp}: not found (run fhvae-export --data-dir {data_dir} --out-dir {export_dir})")
    labels = SetLabels(data_dir, phone_classes)
    with FeatReader(scp) as reader:
        frames = {u: reader.shape(u)[0] for u in labels.utt_labels["speaker"] if u in reader}
    if not frames:
        raise DataError(f"{scp}: no utterance of {data_dir}/utt2spk (export of another set?)")
    segs = sample_segments(frames, seg_len, max_segments, seed)
    y = labels.segment_labels(segs, seg_len)
    factors = [f for f in TSNE_FACTORS if f in y]
    z = read_export_at(export_dir, segs, seg_len)
    xy = {}
    for name in ("z1", "z2"):
        log.info("t-SNE of %s: %d segments", name, len(segs))
        xy[name] = tsne_embed(z[name], seed)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name in ("z1", "z2"):
        for f in factors:
            fig = _figure(5, 5)
            _scatter(fig.add_subplot(), xy[name], y[f], f"{name} / {f}")
            path = os.path.join(out_dir, f"tsne_{name}_{_FILE_NAME[f]}.png")
            _save(fig, path)
            written.append(path)
    fig = _figure(15, 10)
    axes = fig.subplots(2, len(TSNE_FACTORS))
    for i, name in enumerate(("z1", "z2")):
        for j, f in enumerate(TSNE_FACTORS):
            if f in y:
                _scatter(axes[i, j], xy[name], y[f], f"{name} / {f}")
            else:
                axes[i, j].set_axis_off()
                axes[i, j].text(0.5, 0.5, f"{name} / {f}: no labels", ha="center", va="center")
    path = os.path.join(out_dir, "tsne_grid.png")
    _save(fig, path)
    written.append(path)
    log.info("wrote %s", ", ".join(os.path.basename(p) for p in written))
    return written


# ------------------------------------------------------------------------------- decoding latents

def pick_diverse(segments, utt_labels, n, rng):
    """n segments of different utterances, greedily covering new (speaker, condition) values first.

    segments [(utt, start)]; utt_labels {"speaker": {utt: spk}, "condition": {utt: cond}}."""
    order = rng.permutation(len(segments))
    spk, cond = utt_labels["speaker"], utt_labels["condition"]
    chosen, seen_spk, seen_cond, used = [], set(), set(), set()
    for need_new_spk, need_new_cond in ((True, True), (True, False), (False, True), (False, False)):
        for i in order:
            u = segments[i][0]
            if len(chosen) == n:
                return chosen
            if u in used or (need_new_spk and spk[u] in seen_spk) or (need_new_cond and cond.get(u) in seen_cond):
                continue
            chosen.append(segments[i])
            used.add(u)
            seen_spk.add(spk[u])
            seen_cond.add(cond.get(u))
    return chosen


def recombine(model, xa, xb):
    """Normalized segments xa (n_a, L, F), xb (n_b, L, F) -> (n_a, n_b, L, F): cell (i, j) is the
    decoder mean given [z1 of xa_i, z2 of xb_j] (posterior means)."""
    L = xa.shape[1]
    z1a, z2b = infer.encode(model, xa)["z1_mu"], infer.encode(model, xb)["z2_mu"]
    ii, jj = np.meshgrid(np.arange(len(xa)), np.arange(len(xb)), indexing="ij")
    return infer.decode(model, z1a[ii.ravel()], z2b[jj.ravel()], L).reshape(len(xa), len(xb), L, -1)


def plot_recombination(exp_dir, data_dir, out_path, *, n=4, seed=0, which="best", device="cpu"):
    """Fig. 4: cell (i, j) is decoded from [z1 of A_i, z2 of B_j] (posterior means); the left column
    shows the A segments, the top row the B segments. 2n segments of distinct utterances, covering
    as many speakers/conditions as possible, taken from the middle of their utterances (n is
    reduced, with a warning, when the set has fewer than 2n utterances)."""
    model, cfg, stats = infer.load_model(exp_dir, which, device)
    L = cfg.data.seg_len
    dd = load_data_dir(data_dir)
    utt_labels = {"speaker": dd.utt2spk, "condition": dd.utt2cond or {}}
    frames = utt2frames(data_dir)
    mid = [(u, (t - L) // 2) for u, t in sorted(frames.items()) if t >= L]
    if len(mid) < 2:
        raise DataError(f"{data_dir}: recombination needs 2 utterances of at least {L} frames, found {len(mid)}")
    if len(mid) < 2 * n:
        log.warning("%s: only %d utterances of at least %d frames: recombining %d x %d segments instead of "
                    "%d x %d", data_dir, len(mid), L, len(mid) // 2, len(mid) // 2, n, n)
        n = len(mid) // 2
    picks = pick_diverse(mid, utt_labels, 2 * n, np.random.default_rng(seed))
    a, b = picks[0::2], picks[1::2]
    x = read_segments(os.path.join(data_dir, "feats.scp"), a + b, L, stats)
    orig = stats.unnormalize(x)
    dec = stats.unnormalize(recombine(model, x[:n], x[n:]))
    vmin, vmax = np.percentile(orig, [1, 99])

    def name(seg):
        u = seg[0]
        c = utt_labels["condition"].get(u)
        return utt_labels["speaker"][u] + (f"/{c}" if c else "")

    fig = _figure(1.6 * (n + 1), 1.9 * (n + 1))
    axes = fig.subplots(n + 1, n + 1)
    for r in range(n + 1):
        for c in range(n + 1):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c == 0:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "row: z1 of A\ncolumn: z2 of B", ha="center", va="center", fontsize=8)
                continue
            img = orig[r - 1] if c == 0 else orig[n + c - 1] if r == 0 else dec[r - 1, c - 1]
            ax.imshow(img.T, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
            if c == 0:
                ax.set_ylabel(f"A{r}: {name(a[r - 1])}", fontsize=7)
                ax.spines[:].set_color("red")
            if r == 0:
                ax.set_title(f"B{c}: {name(b[c - 1])}", fontsize=7)
                ax.spines[:].set_color("red")
    fig.suptitle(f"decoded [z1 of A, z2 of B] ({exp_dir}, {data_dir})", fontsize=9)
    _save(fig, out_path)
    log.info("wrote %s (A: %s; B: %s)", out_path, " ".join(u for u, _ in a), " ".join(u for u, _ in b))
    return out_path


def plot_training_curve(exp_dir):
    """exp_dir/training_curve.png: train loss and dev bound against steps (from metrics.jsonl)."""
    from fhvae.train.expdir import read_metrics
    recs = read_metrics(exp_dir)
    steps = [r["step"] for r in recs]
    fig = _figure(10, 3.5)
    ax = fig.subplots(1, 2)
    ax[0].plot(steps, [r["train"].get("loss", np.nan) for r in recs], marker=".")
    ax[0].set(title="train loss (-bound - alpha*disc)", xlabel="step")
    ax[1].plot(steps, [r["dev"]["bound"] for r in recs], marker=".", color="C1")
    ax[1].set(title="dev segment lower bound (nats)", xlabel="step")
    fig.tight_layout()
    _save(fig, os.path.join(exp_dir, "training_curve.png"), dpi=100)
