"""ABX phone discriminability: distances, DTW, items, scoring and averaging, the driver and the CLI."""
import itertools
import json
import logging
import math
import os
import warnings

import kaldiio
import numpy as np
import pytest

from fhvae.bin.abx import main as abx_main
from fhvae.errors import DataError
from fhvae.eval.abx import abx, abx_items_from_ctm, abx_scores, item_frames, sample_items
from fhvae.eval.dtw import angular_distances, dtw_normalised, dtw_normalised_batch, pair_distances
from fhvae.eval.labels import frame_labels
from fhvae.io.ark import ArkScpWriter

DUR = 0.03  # seconds per phone in the synthetic corpora (3 frames)


# ---------------------------------------------------------------- distances and DTW


def test_angular_distances_known_vectors():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    # angles / pi: [0, 1/4, 1, 1/2 (zero row: cosine 0)], [1/2, 1/4, 1/2, 1/2]
    np.testing.assert_allclose(angular_distances(x, y), [[0, 0.25, 1, 0.5], [0.5, 0.25, 0.5, 0.5]], atol=1e-12)


def test_dtw_2x3_hand_computed():
    d = np.array([[0.1, 0.5, 0.9],
                  [0.7, 0.2, 0.3]])
    # cumulative cost C[i,j] = d[i,j] + min(C[i-1,j-1], C[i,j-1], C[i-1,j]):
    #   row 0: 0.1  0.6  1.5
    #   row 1: 0.8  0.2 + min(0.1, 0.8, 0.6) = 0.3   0.3 + min(0.6, 0.3, 1.5) = 0.6
    # best path (0,0) -> (1,1) -> (1,2): cost 0.6 over 3 cells -> 0.2
    assert dtw_normalised(d) == pytest.approx(0.2, abs=1e-12)
    assert dtw_normalised(d.T) == pytest.approx(0.2, abs=1e-12)


def test_dtw_longer_path_beats_the_diagonal():
    d = np.array([[1.0, 3.0, 3.0],
                  [1.0, 9.0, 3.0],
                  [3.0, 1.0, 1.0]])
    # C: row 0: 1 4 7; row 1: 2, 9 + min(1, 2, 4) = 10, 3 + min(4, 10, 7) = 7;
    #    row 2: 5, 1 + min(2, 5, 10) = 3, 1 + min(10, 3, 7) = 4
    # path (0,0) (1,0) (2,1) (2,2): cost 4 over 4 cells -> 1.0 (the diagonal costs 11 / 3)
    assert dtw_normalised(d) == pytest.approx(1.0, abs=1e-12)


def test_dtw_ties_prefer_the_diagonal_and_edges():
    # (1,1): all three predecessors cost 1; the diagonal wins: cost 2 over 2 cells = 1.0
    # (a path through (0,1) would also cost 2 but over 3 cells = 0.667)
    assert dtw_normalised([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(1.0, abs=1e-12)
    assert dtw_normalised([[1.0, 2.0, 3.0]]) == pytest.approx(2.0)       # 6 over 3 cells
    assert dtw_normalised([[4.0], [2.0]]) == pytest.approx(3.0)          # 6 over 2 cells
    assert dtw_normalised([[0.25]]) == 0.25


def test_dtw_batch_matches_the_reference_on_padded_matrices():
    rng = np.random.default_rng(1)
    sizes = [(1, 1), (1, 5), (4, 1), (3, 3), (6, 2), (2, 7), (7, 7), (5, 6)]
    N, M = 7, 7
    batch = rng.uniform(50, 100, size=(len(sizes), N, M))  # padding must not matter
    want = []
    for p, (n, m) in enumerate(sizes):
        d = rng.uniform(size=(n, m)).round(1)  # rounded: many ties, the tie-break must agree
        batch[p, :n, :m] = d
        want.append(dtw_normalised(d))
    n, m = np.array(sizes).T
    np.testing.assert_allclose(dtw_normalised_batch(batch, n, m), want, rtol=0, atol=1e-12)


def test_pair_distances_match_direct_computation():
    rng = np.random.default_rng(2)
    items = [rng.normal(size=(k, 3)) for k in (1, 4, 9, 2, 12)]
    normed = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in items]
    lengths = np.array([len(x) for x in items])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pairs = np.array([(i, j) for i in range(5) for j in range(5) if i != j])
    got = pair_distances(np.concatenate(normed), offsets, lengths, pairs, progress=False)
    want = [dtw_normalised(angular_distances(items[i], items[j])) for i, j in pairs]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- items


def test_item_frames():
    # frame t has its centre at t * 0.01 + 0.0125
    assert item_frames(0.121, 0.139) == (11, 13)        # centres 0.1225, 0.1325
    assert item_frames(0.0, 0.121) == (0, 11)
    assert item_frames(0.103, 0.108) == (9, 10)          # no centre inside: nearest to midpoint 0.1055
    assert item_frames(0.0, 0.005) == (0, 1)


def test_item_frames_agree_with_frame_labels():
    rng = np.random.default_rng(3)
    bounds = np.concatenate([[0], np.cumsum(rng.integers(20, 150, size=30) / 1000)])
    intervals = [(float(s), float(e), k) for k, (s, e) in enumerate(zip(bounds[:-1], bounds[1:]))]
    labels = frame_labels(intervals, 10_000)
    for s, e, k in intervals:
        lo, hi = item_frames(s, e)
        frames = np.flatnonzero(labels == k)
        if len(frames):
            assert (lo, hi) == (frames[0], frames[-1] + 1)


def test_items_from_ctm_contexts_and_sampling():
    ctm = {"s1-u1": [(0.0, 0.1, "SIL"), (0.1, 0.2, "a"), (0.2, 0.3, "SIL"), (0.3, 0.4, "b"), (0.4, 0.5, "c")],
           "s9-u1": [(0.0, 0.1, "SIL"), (0.1, 0.2, "a"), (0.2, 0.3, "SIL")]}
    items = abx_items_from_ctm(ctm, {"s1-u1": "s1"})
    # SIL is no centre; 'c' ends the utterance (no next phone); s9-u1 has no speaker
    assert [(it.phone, it.context, it.lo, it.hi) for it in items] == [
        ("a", ("SIL", "SIL"), 9, 19), ("b", ("SIL", "c"), 29, 39)]
    many = items[:1] * 10 + items[1:] * 3
    kept = sample_items(many, 2, seed=0)
    assert sorted(it.phone for it in kept) == ["a", "a", "b", "b"]
    assert kept == sample_items(many, 2, seed=0)
    assert sample_items(many, None) == many


# ---------------------------------------------------------------- scores and averaging


def test_abx_scores_hand_computed_with_a_tie():
    # items 0, 1: phone a of s1; 2: phone b of s1; 3: phone a of s2; one context
    d = np.zeros((4, 4))
    for (i, j), v in {(0, 1): 0.3, (0, 2): 0.2, (1, 2): 0.3, (0, 3): 0.4, (1, 3): 0.1, (2, 3): 0.4}.items():
        d[i, j] = d[j, i] = v
    r = abx_scores(["a", "a", "b", "a"], ["s1", "s1", "s1", "s2"], ["c"] * 4, {"c": d})
    # within (a, b), s1: (A=0, X=1): d01 .3 = d21 .3 -> 0.5; (A=1, X=0): d10 .3 > d20 .2 -> 1
    assert r["within"] == {"error": 0.75, "cells": 1, "triplets": 2, "phone_pairs": 1}
    # across (a, b), A, B of s1, X = 3 of s2: (A=0): d03 .4 = d23 .4 -> 0.5; (A=1): d13 .1 < .4 -> 0
    assert r["across"] == {"error": 0.25, "cells": 1, "triplets": 2, "phone_pairs": 1}


def _scores_of(layout):
    """abx_scores of layout {context: ([(speaker, phone)], {(i, j): distance})}, local item indices
    per context; distances not given are 0.5."""
    phones, speakers, contexts, dist = [], [], [], {}
    for ctx, (items, d) in layout.items():
        D = np.full((len(items), len(items)), 0.5)
        np.fill_diagonal(D, 0.0)
        for (i, j), v in d.items():
            D[i, j] = D[j, i] = v
        dist[ctx] = D
        speakers += [s for s, _ in items]
        phones += [p for _, p in items]
        contexts += [ctx] * len(items)
    return abx_scores(phones, speakers, contexts, dist)


def _within_cell(first, err_a1, err_a2):
    """Items a1, a2, b of one speaker from index `first`, d(a1, a2) = 0.5: the triplet (A=a2, X=a1)
    scores err_a1 and (A=a1, X=a2) err_a2 (1: d(b, X) = .1, 0.5: .5 (a tie), 0: .9)."""
    d = {1: 0.1, 0.5: 0.5, 0: 0.9}
    a1, a2, b = first, first + 1, first + 2
    return {(a1, a2): 0.5, (b, a1): d[err_a1], (b, a2): d[err_a2]}


def test_within_averages_contexts_then_speakers_then_phone_pairs():
    # unbalanced: (a, b) has s1 in 3 contexts and s2 in 1, (a, c) only s2; b, c are single items
    # (no within cell with b or c as A)
    s1, s2 = [("s1", "a"), ("s1", "a"), ("s1", "b")], [("s2", "a"), ("s2", "a"), ("s2", "b")]
    c1 = {**_within_cell(0, 1, 1), **_within_cell(3, 0, 0),  # (a, b): s1 1, s2 0
          (6, 3): 0.5, (6, 4): 0.9}                          # (a, c), s2: (.5 tie + 0) / 2 = .25
    r = _scores_of({"c1": (s1 + s2 + [("s2", "c")], c1),
                    "c2": (s1, _within_cell(0, 1, 0)),       # (a, b), s1: .5
                    "c3": (s1, _within_cell(0, 1, 1))})      # (a, b), s1: 1
    # (a, b): s1 over contexts (1 + .5 + 1) / 3 = 5/6, s2: 0 -> over speakers 5/12; (a, c): 1/4
    # -> over phone pairs (5/12 + 1/4) / 2 = 1/3
    assert r["within"]["error"] == pytest.approx(1 / 3, abs=1e-12)
    assert r["within"]["cells"] == 5 and r["within"]["triplets"] == 10 and r["within"]["phone_pairs"] == 2
    # the old order (speakers, then contexts, then pairs): (a, b) ((1 + 0) / 2 + .5 + 1) / 3 = 2/3,
    # (a, c) 1/4 -> 11/24; a flat mean over the 5 cells: 2.75 / 5
    assert abs(r["within"]["error"] - 11 / 24) > 0.1 and abs(r["within"]["error"] - 0.55) > 0.1


def test_across_averages_contexts_and_x_speakers_then_a_speakers_then_phone_pairs():
    # single items (no within cell); cells (a, b, context, A-speaker, X-speaker), X of phone a
    a1, b1, a2, a3, c1 = ("s1", "a"), ("s1", "b"), ("s2", "a"), ("s3", "a"), ("s1", "c")
    r = _scores_of({
        # A=0, B=1 of s1; X=2 (s2): d(A,X) .6 > d(B,X) .2 -> 1; X=3 (s3): .6 > .3 -> 1
        "c1": ([a1, b1, a2, a3], {(0, 2): 0.6, (1, 2): 0.2, (0, 3): 0.6, (1, 3): 0.3}),
        "c2": ([a1, b1, a2], {(0, 2): 0.2, (1, 2): 0.6}),                      # s1 | s2: 0
        "c3": ([("s2", "a"), ("s2", "b"), ("s1", "a")], {(0, 2): 0.4, (1, 2): 0.4}),  # s2 | s1: .5 (tie)
        "c4": ([a1, c1, a2], {(0, 2): 0.1, (1, 2): 0.7}),                      # (a, c), s1 | s2: 0
    })
    # (a, b): A-speaker s1 over (context, X) (1 + 1 + 0) / 3 = 2/3, s2: 1/2 -> 7/12; (a, c): 0
    # -> over phone pairs 7/24
    assert r["across"]["error"] == pytest.approx(7 / 24, abs=1e-12)
    assert r["across"]["cells"] == 5 and r["across"]["triplets"] == 5 and r["across"]["phone_pairs"] == 2
    assert r["within"]["error"] is None
    # the old order (speaker pairs, then contexts, then pairs): (a, b) ((1 + 1) / 2 + 0 + .5) / 3 = 1/2,
    # (a, c) 0 -> 1/4; a flat mean over the 5 cells: 2.5 / 5
    assert abs(r["across"]["error"] - 1 / 4) > 0.04 and abs(r["across"]["error"] - 0.5) > 0.04


def _libri_light_reduction(phones, speakers, contexts, dist):
    """libri-light eval_ABX.py written out: per-cell errors by brute force over triplets on dense
    NaN boards [A-speaker, phone a, phone b, context(, X-speaker)], then NaN-means over context
    (and X-speaker), over A-speaker, over the (a, b) pairs."""
    P, S, C = sorted(set(phones)), sorted(set(speakers)), sorted(set(contexts))
    within = np.full((len(S), len(P), len(P), len(C)), np.nan)
    across = np.full((len(S), len(P), len(P), len(C), len(S)), np.nan)
    local = {}
    for c in C:
        for n, k in enumerate([k for k in range(len(phones)) if contexts[k] == c]):
            local[k] = n

    def err(c, a, b, x):
        dax, dbx = dist[c][local[a], local[x]], dist[c][local[b], local[x]]
        return 1.0 if dax > dbx else 0.5 if dax == dbx else 0.0

    def members(c, s, p):
        return [k for k in range(len(phones)) if (contexts[k], speakers[k], phones[k]) == (c, s, p)]

    for (ic, c), (isa, sa), (ia, pa), (ib, pb) in itertools.product(enumerate(C), enumerate(S),
                                                                    enumerate(P), enumerate(P)):
        A, B = members(c, sa, pa), members(c, sa, pb)
        if pa == pb or not A or not B:
            continue
        e = [err(c, a, b, x) for a in A for b in B for x in A if x != a]
        if e:
            within[isa, ia, ib, ic] = np.mean(e)
        for isx, sx in enumerate(S):
            X = members(c, sx, pa)
            if sx != sa and X:
                across[isa, ia, ib, ic, isx] = np.mean([err(c, a, b, x) for a in A for b in B for x in X])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: empty cells
        w = np.nanmean(np.nanmean(within, axis=3), axis=0)
        x = np.nanmean(np.nanmean(across, axis=(3, 4)), axis=0)
        return {"within": float(np.nanmean(w)), "across": float(np.nanmean(x)),
                "within_pairs": int((~np.isnan(w)).sum()), "across_pairs": int((~np.isnan(x)).sum())}


@pytest.mark.parametrize("seed", range(6))
def test_abx_scores_match_libri_light_reduction_on_random_unbalanced_data(seed):
    rng = np.random.default_rng(100 + seed)
    phones, speakers, contexts, dist = [], [], [], {}
    for c in range(5):
        n0 = len(phones)
        for s in rng.choice(4, size=rng.integers(1, 5), replace=False):      # 1..4 speakers
            for p in rng.choice(4, size=rng.integers(1, 4), replace=False):  # 1..3 phones
                k = int(rng.integers(1, 4))                                  # 1..3 items
                phones += [f"p{p}"] * k
                speakers += [f"s{s}"] * k
                contexts += [f"c{c}"] * k
        n = len(phones) - n0
        d = rng.integers(0, 6, size=(n, n)) / 5  # coarse: ties happen
        dist[f"c{c}"] = np.triu(d, 1) + np.triu(d, 1).T
    got = abx_scores(phones, speakers, contexts, dist)
    want = _libri_light_reduction(phones, speakers, contexts, dist)
    for name in ("within", "across"):
        if want[f"{name}_pairs"]:
            assert got[name]["error"] == pytest.approx(want[name], abs=1e-12)
        else:
            assert got[name]["error"] is None
        assert got[name]["phone_pairs"] == want[f"{name}_pairs"]


# ---------------------------------------------------------------- synthetic corpora end to end


def _corpus(tmp_path, utts, frame_fn, *, n_frames=None, writer="fhvae"):
    """Data dir + feats.scp. utts {utt: (spk, [phones])}, phones DUR s each; frame_fn(utt, spk, k, phone)
    -> feature vector of the frames of the k-th phone of utt. Returns (feats_scp, data_dir)."""
    dd = tmp_path / "data"
    dd.mkdir(exist_ok=True)
    ctm, spk_lines, feats = [], [], {}
    for utt in sorted(utts):
        spk, phones = utts[utt]
        spk_lines.append(f"{utt} {spk}\n")
        intervals = []
        for k, p in enumerate(phones):
            ctm.append(f"{utt} 1 {k * DUR:.3f} {DUR:.3f} {p}\n")
            intervals.append((round(k * DUR, 3), round((k + 1) * DUR, 3), k))
        T = n_frames or 1 + int((len(phones) * DUR - 0.025) / 0.01 + 1e-6)  # snip-edges fbank count
        which = frame_labels(intervals, T)
        which[which == None] = len(phones) - 1  # noqa: E711  (the tail frame: last phone)
        feats[utt] = np.stack([frame_fn(utt, spk, k, phones[k]) for k in which]).astype(np.float32)
    (dd / "phones.ctm").write_text("".join(ctm))
    (dd / "utt2spk").write_text("".join(spk_lines))
    scp = str(tmp_path / "feats.scp")
    if writer == "fhvae":
        with ArkScpWriter(tmp_path / "feats.ark", scp) as w:
            for utt in sorted(feats):
                w.write(utt, feats[utt])
    else:
        kaldiio.save_ark(str(tmp_path / "feats.ark"), feats, scp=scp)
    return scp, str(dd)


def _angle(theta):
    return np.array([math.cos(theta), math.sin(theta)])


def test_abx_end_to_end_hand_computed(tmp_path):
    # one speaker, context (SIL, SIL); 3-frame items of constant direction, so item distance =
    # angle difference / pi: a1 0, a2 .1, b1 .15, b2 .5 (in units of pi)
    theta = {1: 0.0, 3: 0.1, 5: 0.15, 7: 0.5}
    utts = {"s1-u1": ("s1", ["SIL", "a", "SIL", "a", "SIL", "b", "SIL", "b", "SIL"])}
    scp, dd = _corpus(tmp_path, utts, lambda u, s, k, p: _angle(math.pi * theta.get(k, 1.0)))
    r = abx(scp, dd, max_items_per_cell=None, progress=False)
    # (a, b): (A=a1, X=a2): .1 > d(b1, a2) .05 -> 1, < d(b2, a2) .4 -> 0; (A=a2, X=a1): .1 < .15, .5 -> 0
    #   -> 1/4; (b, a): (A=b1, X=b2): .35 < .5, .4 -> 0; (A=b2, X=b1): .35 > .15, .05 -> 1, 1 -> 2/4
    assert r["within"] == pytest.approx(100 * (0.25 + 0.5) / 2)
    assert r["across"] is None                  # one speaker: no across cell
    assert r["n_items"] == 4 and r["n_cells"] == {"within": 2, "across": 0}
    assert r["n_triplets"] == {"within": 8, "across": 0}


def _repeated(n_spk, phones, reps, n_utts=2):
    """Utterances 'SIL p SIL q SIL ...' with every phone `reps` times per utterance (one context)."""
    rng = np.random.default_rng(0)
    utts = {}
    for s in range(n_spk):
        for u in range(n_utts):
            seq = list(rng.permutation(np.repeat(phones, reps)))
            utts[f"s{s}-u{u}"] = (f"s{s}", ["SIL"] + [x for p in seq for x in (str(p), "SIL")])
    return utts


def test_one_hot_features_give_zero_error(tmp_path):
    phones = ["a", "b", "c", "SIL"]
    utts = _repeated(3, phones[:3], 2)
    scp, dd = _corpus(tmp_path, utts, lambda u, s, k, p: np.eye(4)[phones.index(p)])
    r = abx(scp, dd, progress=False)
    assert r["within"] == 0.0 and r["across"] == 0.0
    assert r["n_cells"] == {"within": 3 * 6, "across": 3 * 2 * 6}  # speakers (pairs) x ordered phone pairs


def test_random_features_give_chance(tmp_path):
    rng = np.random.default_rng(5)
    utts = _repeated(4, ["a", "b", "c", "d"], 5)
    scp, dd = _corpus(tmp_path, utts, lambda u, s, k, p: rng.normal(size=8))
    r = abx(scp, dd, max_items_per_cell=None, progress=False)
    assert abs(r["within"] - 50) < 5 and abs(r["across"] - 50) < 5


def test_speaker_specific_codes_within_below_across(tmp_path):
    # every speaker codes the phones with its own random vectors: phones are separable within a
    # speaker but not across speakers
    rng = np.random.default_rng(6)
    codes = {(s, p): rng.normal(size=16) for s in range(4) for p in "abcd"}
    noise = np.random.default_rng(7)
    utts = _repeated(4, ["a", "b", "c", "d"], 3)
    scp, dd = _corpus(tmp_path, utts,
                      lambda u, s, k, p: codes[(int(s[1:]), p)] + 0.01 * noise.normal(size=16) if p != "SIL"
                      else noise.normal(size=16))
    r = abx(scp, dd, progress=False)
    assert r["within"] == 0.0
    assert r["across"] > 25


def test_bad_inputs(tmp_path, caplog):
    utts = _repeated(2, ["a", "b"], 2)
    scp, dd = _corpus(tmp_path, utts, lambda u, s, k, p: np.eye(3)[["a", "b", "SIL"].index(p)])
    # utterance without features: skipped with a count
    lines = open(scp).read().splitlines(True)
    short = str(tmp_path / "short.scp")
    open(short, "w").writelines(lines[1:])
    with caplog.at_level(logging.WARNING):
        r = abx(short, dd, progress=False)
    assert "1 utterance(s) of" in caplog.text and "s0-u0" in caplog.text
    assert r["counts"]["utterances_missing_features"] == 1 and r["within"] == 0.0
    # nothing left
    empty = str(tmp_path / "empty.scp")
    open(empty, "w").writelines([line.replace("s", "x", 1) for line in lines])
    with pytest.raises(DataError, match="nothing to evaluate"):
        abx(empty, dd, progress=False)
    # missing phones.ctm / utt2spk
    os.rename(os.path.join(dd, "phones.ctm"), os.path.join(dd, "ctm.bak"))
    with pytest.raises(DataError, match=r"data/phones.ctm: not found"):
        abx(scp, dd, progress=False)
    os.rename(os.path.join(dd, "ctm.bak"), os.path.join(dd, "phones.ctm"))
    os.rename(os.path.join(dd, "utt2spk"), os.path.join(dd, "u2s.bak"))
    with pytest.raises(DataError, match=r"data/utt2spk: missing"):
        abx(scp, dd, progress=False)


def test_nan_and_frame_mismatch_name_the_utterance(tmp_path):
    utts = _repeated(2, ["a", "b"], 2)
    f = lambda u, s, k, p: np.full(3, np.nan) if (u == "s1-u1" and k == 3) else np.ones(3)  # noqa: E731
    scp, dd = _corpus(tmp_path, utts, f, writer="kaldiio")
    with pytest.raises(DataError, match=r"feats.scp: utterance 's1-u1': features contain NaN"):
        abx(scp, dd, progress=False)
    # 9 phones of 30 ms: the CTM covers 26 frames; 24..28 feature frames are fine, 23 is not
    for n, ok in ((24, True), (28, True), (23, False)):
        sub = tmp_path / f"t{n}"
        sub.mkdir()
        scp, dd = _corpus(sub, _repeated(2, ["a", "b"], 2), lambda u, s, k, p: np.eye(3)[k % 3], n_frames=n)
        if ok:
            abx(scp, dd, progress=False)
        else:
            with pytest.raises(DataError, match=r"utterance 's0-u0': 23 frames, but .* covers 26 frames"):
                abx(scp, dd, progress=False)


def test_cli_writes_results(tmp_path, capsys):
    phones = ["a", "b", "c", "SIL"]
    scp, dd = _corpus(tmp_path, _repeated(2, phones[:3], 2), lambda u, s, k, p: np.eye(4)[phones.index(p)])
    out = tmp_path / "abx"
    with pytest.raises(SystemExit) as e:
        abx_main(["--feats", scp, "--data-dir", dd, "--out-dir", str(out), "--max-items-per-cell", "3",
                  "--seed", "1"])
    assert e.value.code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["within"] == 0.0 and res["across"] == 0.0
    assert res["options"]["max_items_per_cell"] == 3 and res["options"]["seed"] == 1
    md = (out / "results.md").read_text()
    assert "| features | ABX within (%) | ABX across (%) |" in md and "| 0.00 | 0.00 |" in md
    assert "ABX within 0.00%, across 0.00%" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["results.json", "results.md"]  # no temp files left
    with pytest.raises(SystemExit) as e:
        abx_main(["--feats", scp, "--data-dir", str(tmp_path / "nope"), "--out-dir", str(out)])
    assert e.value.code == 1
    assert "fhvae-abx: error:" in capsys.readouterr().err
