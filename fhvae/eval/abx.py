"""ABX phone discriminability (ZeroSpeech 2017-2021 / libri-light ``ABX`` style), on any frame-level scp.

Items are the phone occurrences of ``phones.ctm`` with their triphone context (previous phone, next
phone). SIL is never a centre phone but may be a context; phones at an utterance edge (no previous or
next phone) are skipped. An item's frames are those whose centre ``t * shift + FRAME_WIN / 2`` falls
in ``[start, end)`` (the convention of :mod:`fhvae.eval.labels`); a phone shorter than that gets the
single frame whose centre is nearest its midpoint.

Distances. Frames are L2-normalised; the frame distance is the angle between them divided by pi,
``arccos(clamp(cos, -1, 1)) / pi`` in [0, 1] (libri-light's 'cosine' mode). The item distance is DTW
over the frame-distance matrix with steps (1,0), (0,1), (1,1): the cumulative cost of the cheapest
path from (0, 0) to (N-1, M-1), divided by the number of cells (frame pairs) on that path. Among
predecessors of equal cumulative cost the diagonal wins, then (i, j-1), then (i-1, j).

ABX. For A and X of phone a, B of phone b != a, all in one context: error 1 if d(A,X) > d(B,X),
0.5 if equal, 0 if smaller. Within-speaker: A, B, X of one speaker (X != A). Across-speaker: A and B
of one speaker, X of another. Averaging follows libri-light's ``eval_ABX.py`` (ZeroSpeech 2021):

- within: a cell is (a, b, context, speaker), its error the mean over its (A, B, X); the cells of an
  (a, b, speaker) are averaged over contexts, those means over speakers, then over phone pairs;
- across: a cell is (a, b, context, speaker of A and B, speaker of X); the cells of an
  (a, b, A-speaker) are averaged over (context, X-speaker) together, then over A-speakers, then
  over phone pairs.

Phone pairs are ordered: (a, b) and (b, a) are two pairs. Only cells holding a triplet count at each
level (a NaN-mean over the empty ones). Reported in percent. Unlike libri-light (which samples at
most ``max_x_across`` = 5 X-speakers per A), every X-speaker is used.

Cap: each (context, phone, speaker) cell keeps at most ``max_items_per_cell`` items, a seeded random
sample (numpy ``default_rng(seed)``, cells visited in sorted order), which bounds a within cell at
n * (n - 1) * n and an across cell at n ** 3 triplets.
"""
import collections
import json
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from fhvae.datadir import load_data_dir
from fhvae.errors import ConfigError, DataError
from fhvae.eval.dtw import l2_normalise, pair_distances
from fhvae.eval.labels import FRAME_WIN, read_ctm
from fhvae.io.ark import FeatReader
from fhvae.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

SIL = "SIL"
MAX_FRAME_MISMATCH = 2  # frames a feature matrix may differ from the CTM's extent (truncated to the shorter)
_EPS = 1e-6             # as in fhvae.eval.labels: printed times must not round a frame away


@dataclass(frozen=True)
class Item:
    """One phone occurrence: frames [lo, hi) of utterance ``utt`` (before truncation to the features)."""
    utt: str
    speaker: str
    phone: str
    context: tuple  # (previous phone, next phone)
    lo: int
    hi: int


def item_frames(start, end, shift=0.01, win=FRAME_WIN):
    """Frames [lo, hi) whose centres t * shift + win / 2 fall in [start, end) seconds; at least one
    frame (the one whose centre is nearest the midpoint) -> (lo, hi) ints, lo >= 0."""
    lo = max(0, math.ceil((start - win / 2) / shift - _EPS))
    hi = math.ceil((end - win / 2) / shift - _EPS)
    if hi <= lo:
        lo = max(0, int(round(((start + end) / 2 - win / 2) / shift)))
        hi = lo + 1
    return lo, hi


def abx_items_from_ctm(ctm, utt2spk, shift=0.01, win=FRAME_WIN):
    """ABX items of a CTM: ctm {utt: [(start_s, end_s, phone)] sorted} (see read_ctm), utt2spk
    {utt: spk} -> [Item] in utterance then time order. Utterances without a speaker are skipped
    (logged); SIL centres and phones at utterance edges are not items."""
    items, no_spk = [], []
    for utt in sorted(ctm):
        if utt not in utt2spk:
            no_spk.append(utt)
            continue
        iv = ctm[utt]
        for k in range(1, len(iv) - 1):
            start, end, phone = iv[k]
            if phone == SIL:
                continue
            lo, hi = item_frames(start, end, shift, win)
            items.append(Item(utt, utt2spk[utt], phone, (iv[k - 1][2], iv[k + 1][2]), lo, hi))
    if no_spk:
        log.warning("%d utterance(s) of the CTM have no speaker in utt2spk (e.g. %r): skipped",
                    len(no_spk), no_spk[0])
    return items


def sample_items(items, max_items_per_cell, seed=0):
    """Keep at most ``max_items_per_cell`` items per (context, phone, speaker) cell (None: all): a
    seeded random sample, cells in sorted order. Returns the kept items in their input order."""
    if max_items_per_cell is None:
        return list(items)
    cells = collections.defaultdict(list)
    for k, it in enumerate(items):
        cells[(it.context, it.phone, it.speaker)].append(k)
    rng = np.random.default_rng(seed)
    keep = []
    for key in sorted(cells):
        ks = cells[key]
        if len(ks) > max_items_per_cell:
            ks = [ks[i] for i in rng.choice(len(ks), size=max_items_per_cell, replace=False)]
        keep.extend(ks)
    return [items[k] for k in sorted(keep)]


# ----------------------------------------------------------------------------- scores

def _step_error(d_ax, d_bx):
    """1 where d(A,X) > d(B,X), 0.5 where equal, 0 else."""
    return (d_ax > d_bx) + 0.5 * (d_ax == d_bx)


def _mean_of_means(scores):
    """scores {(a, b): {speaker: [cell errors]}} -> mean over phone pairs (a, b) of the mean over
    speakers of the mean of that speaker's cells (None if empty). Within, a speaker's cells are its
    contexts; across, the speaker is A's and its cells are the (context, X-speaker) pairs."""
    if not scores:
        return None
    return float(np.mean([np.mean([np.mean(v) for v in by_spk.values()]) for by_spk in scores.values()]))


def abx_scores(phones, speakers, contexts, dist):
    """Within- and across-speaker ABX errors (fractions) from item labels and distances.

    phones, speakers, contexts: (n_items,) labels (contexts hashable); dist: {context: (k, k) array of
    item distances, rows/cols the items of that context in index order}. Returns
    {within: {error, cells, triplets, phone_pairs}, across: {...}} (error None where no cell).

    Averaging (libri-light ``eval_ABX.py``): within, over contexts, then speakers, then ordered phone
    pairs; across, over (context, X-speaker), then A-speakers, then ordered phone pairs.
    """
    by_ctx = collections.defaultdict(list)
    for k, c in enumerate(contexts):
        by_ctx[c].append(k)
    res = {}
    within = collections.defaultdict(lambda: collections.defaultdict(list))
    across = collections.defaultdict(lambda: collections.defaultdict(list))
    counts = {"within": [0, 0], "across": [0, 0]}  # cells, triplets
    for c in sorted(by_ctx):
        ks = by_ctx[c]
        D = dist[c]
        groups = collections.defaultdict(lambda: collections.defaultdict(list))  # spk -> phone -> local idx
        for local, k in enumerate(ks):
            groups[speakers[k]][phones[k]].append(local)
        for s1, ph1 in groups.items():
            ph1 = {p: np.array(v) for p, v in ph1.items()}
            for pa, A in ph1.items():
                for pb, B in ph1.items():
                    if pb == pa:
                        continue
                    if len(A) >= 2:  # within: X ranges over A, X != A
                        e = _step_error(D[np.ix_(A, A)][:, None, :], D[np.ix_(B, A)][None, :, :])
                        e = e[np.broadcast_to(~np.eye(len(A), dtype=bool)[:, None, :], e.shape)]
                        within[(pa, pb)][s1].append(e.mean())
                        counts["within"][0] += 1
                        counts["within"][1] += e.size
                    for s2, ph2 in groups.items():
                        if s2 == s1 or pa not in ph2:
                            continue
                        X = np.array(ph2[pa])
                        e = _step_error(D[np.ix_(A, X)][:, None, :], D[np.ix_(B, X)][None, :, :])
                        across[(pa, pb)][s1].append(e.mean())  # pools (c, s2)
                        counts["across"][0] += 1
                        counts["across"][1] += e.size
    for name, scores in (("within", within), ("across", across)):
        res[name] = {"error": _mean_of_means(scores), "cells": counts[name][0],
                     "triplets": counts[name][1], "phone_pairs": len(scores)}
    return res


# ----------------------------------------------------------------------------- driver

def _load_items(feats_scp, data_dir, max_items_per_cell, seed, max_frame_mismatch):
    """Items with features: (kept items, frames (F, D) normalised, offsets, lengths, counts dict)."""
    ctm_path = os.path.join(data_dir, "phones.ctm")
    if not os.path.isfile(ctm_path):
        raise DataError(f"{ctm_path}: not found (ABX needs phone alignments '<utt> 1 <start> <dur> <phone>')")
    dd = load_data_dir(data_dir)  # DataError naming utt2spk if it is missing
    shift = dd.frame_shift or 0.01
    ctm = read_ctm(ctm_path)
    if not os.path.isfile(feats_scp):
        raise DataError(f"{feats_scp}: feature scp not found")
    reader = FeatReader(feats_scp)
    items = abx_items_from_ctm(ctm, dd.utt2spk, shift)
    n_all = len(items)
    missing = sorted({it.utt for it in items if it.utt not in reader})
    if missing:
        log.warning("%d utterance(s) of %s are not in %s (e.g. %r): their items are skipped",
                    len(missing), ctm_path, feats_scp, missing[0])
        items = [it for it in items if it.utt in reader]
    n_with_feats = len(items)
    items = sample_items(items, max_items_per_cell, seed)
    # a context needs two phones to hold any cell
    ctx_phones = collections.defaultdict(set)
    for it in items:
        ctx_phones[it.context].add(it.phone)
    items = [it for it in items if len(ctx_phones[it.context]) >= 2]
    if not items:
        raise DataError(f"{ctm_path}, {feats_scp}: no context holds two different phones with features: "
                        "nothing to evaluate")

    by_utt = collections.defaultdict(list)
    for k, it in enumerate(items):
        by_utt[it.utt].append(k)
    offsets = np.zeros(len(items), dtype=np.int64)
    lengths = np.zeros(len(items), dtype=np.int64)
    chunks, total = [], 0
    for utt in tqdm(sorted(by_utt), desc="abx read", unit="utt", mininterval=2.0):
        x = reader[utt]
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError(f"{feats_scp}: utterance {utt!r}: expected a (frames, dim) matrix, got {x.shape}")
        if chunks and x.shape[1] != chunks[0].shape[1]:
            raise DataError(f"{feats_scp}: utterance {utt!r}: dimension {x.shape[1]}, earlier utterances "
                            f"have {chunks[0].shape[1]}")
        if not np.isfinite(x).all():
            raise DataError(f"{feats_scp}: utterance {utt!r}: features contain NaN or inf")
        T = x.shape[0]
        ctm_frames = item_frames(ctm[utt][-1][0], ctm[utt][-1][1], shift)[1]
        if abs(T - ctm_frames) > max_frame_mismatch:
            raise DataError(f"{feats_scp}: utterance {utt!r}: {T} frames, but {ctm_path} covers {ctm_frames} "
                            f"frames ({ctm[utt][-1][1]:.3f} s at {shift} s shift); more than "
                            f"{max_frame_mismatch} frames apart")
        xn = l2_normalise(x)
        for k in by_utt[utt]:
            lo = min(items[k].lo, T - 1)
            hi = max(lo + 1, min(items[k].hi, T))
            chunks.append(xn[lo:hi])
            offsets[k], lengths[k] = total, hi - lo
            total += hi - lo
    reader.close()
    counts = {"items_in_ctm": n_all, "items_with_features": n_with_feats, "items": len(items),
              "utterances": len(by_utt), "utterances_missing_features": len(missing)}
    return items, np.concatenate(chunks), offsets, lengths, counts


def abx(feats_scp, data_dir, *, max_items_per_cell=5, seed=0, max_frame_mismatch=MAX_FRAME_MISMATCH,
        progress=True):
    """ABX errors of the features in ``feats_scp`` on the phones of ``data_dir/phones.ctm``.

    Returns {within, across: error in percent (None if no cell), n_items, n_cells: {within, across},
    n_triplets, n_phone_pairs, n_contexts, counts: {...}}. See the module doc for the definitions.
    """
    if max_items_per_cell is not None and max_items_per_cell < 1:
        raise ConfigError(f"max_items_per_cell must be at least 1 (or None), got {max_items_per_cell}")
    feats_scp, data_dir = os.fspath(feats_scp), os.fspath(data_dir)
    items, frames, offsets, lengths, counts = _load_items(feats_scp, data_dir, max_items_per_cell, seed,
                                                          max_frame_mismatch)
    by_ctx = collections.defaultdict(list)
    for k, it in enumerate(items):
        by_ctx[it.context].append(k)
    pairs, where = [], []
    for c in sorted(by_ctx):
        ks = by_ctx[c]
        iu = np.triu_indices(len(ks), 1)
        pairs.append(np.asarray(ks)[np.stack(iu, 1)])
        where.append((c, len(ks), iu))
    pairs = np.concatenate(pairs)
    log.info("%d items in %d contexts: %d DTW pairs", len(items), len(by_ctx), len(pairs))
    d = pair_distances(frames, offsets, lengths, pairs, progress=progress)
    dist, pos = {}, 0
    for c, n, iu in where:
        D = np.zeros((n, n))
        D[iu] = d[pos:pos + len(iu[0])]
        dist[c] = D + D.T
        pos += len(iu[0])
    s = abx_scores([it.phone for it in items], [it.speaker for it in items], [it.context for it in items], dist)
    pct = lambda e: None if e is None else 100.0 * e  # noqa: E731
    for name in ("within", "across"):
        if s[name]["error"] is None:
            log.warning("no %s-speaker ABX cell (too few items per speaker and context)", name)
    if s["within"]["error"] is None and s["across"]["error"] is None:
        raise DataError(f"{data_dir}: no ABX triplet could be formed")
    return {
        "within": pct(s["within"]["error"]), "across": pct(s["across"]["error"]),
        "n_items": len(items),
        "n_cells": {k: s[k]["cells"] for k in ("within", "across")},
        "n_triplets": {k: s[k]["triplets"] for k in ("within", "across")},
        "n_phone_pairs": {k: s[k]["phone_pairs"] for k in ("within", "across")},
        "n_contexts": len(by_ctx), "n_dtw_pairs": int(len(pairs)),
        "counts": counts,
    }


def format_table(results, name):
    """One-row markdown table of ABX errors (percent)."""
    f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return ("| features | ABX within (%) | ABX across (%) | items | contexts |\n"
            "|---|---:|---:|---:|---:|\n"
            f"| {name} | {f(results['within'])} | {f(results['across'])} | {results['n_items']} | "
            f"{results['n_contexts']} |\n")


def run_abx(feats_scp, data_dir, out_dir, *, max_items_per_cell=5, seed=0, progress=True):
    """Compute :func:`abx` and write ``out_dir/results.json`` and ``out_dir/results.md`` atomically."""
    r = abx(feats_scp, data_dir, max_items_per_cell=max_items_per_cell, seed=seed, progress=progress)
    r["options"] = {"max_items_per_cell": max_items_per_cell, "seed": seed,
                    "distance": "angular (arccos(cos) / pi), DTW normalised by path length"}
    r["inputs"] = {"feats": os.path.abspath(feats_scp), "data_dir": os.path.abspath(data_dir)}
    r["definitions"] = {
        "within": "percent; A, B, X of one speaker; mean over cells, then speakers, contexts, phone pairs",
        "across": "percent; A, B of one speaker, X of another; mean over cells, then speaker pairs, "
                  "contexts, phone pairs",
    }
    cap = "all" if max_items_per_cell is None else f"at most {max_items_per_cell}"
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(r, indent=2) + "\n")
    atomic_write_text(os.path.join(out_dir, "results.md"),
                      f"ABX phone discriminability on {data_dir} (triphone contexts, {cap} items per "
                      f"context/phone/speaker, seed {seed})\n\n"
                      + format_table(r, feats_scp))
    f = lambda v: "n/a" if v is None else f"{v:.2f}%"  # noqa: E731
    log.info("ABX within %s, across %s (%d items, %d/%d within/across cells) -> %s", f(r["within"]),
             f(r["across"]), r["n_items"], r["n_cells"]["within"], r["n_cells"]["across"], out_dir)
    return r
