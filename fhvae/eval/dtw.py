"""Item distances of ABX (libri-light's definitions): the frame distance is the angular distance
``arccos(clamp(cos, -1, 1)) / pi`` in [0, 1] (its 'cosine' mode); the item distance is DTW with steps
(1, 0), (0, 1), (1, 1), the path's summed frame distances divided by its length. Batched over item
pairs of similar lengths (numpy)."""
import math

import numpy as np
from tqdm import tqdm

_CELL_BUDGET = 1 << 20  # padded (pair, i, j) cells per DTW batch
_FEAT_BUDGET = 1 << 23  # gathered (pair, frame, dim) values per DTW batch


def angular_distances(x, y):
    """Frame distances: x (N, D), y (M, D) -> (N, M) float64 ``arccos(cos) / pi`` in [0, 1].

    Rows are L2-normalised first (a zero row has cosine 0 with everything: distance 0.5).
    """
    return _angular(l2_normalise(x), l2_normalise(y))


def l2_normalise(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _angular(xn, yn):
    """Angular distance of already normalised rows; batched (..., N, D) x (..., M, D) -> (..., N, M)."""
    return np.arccos(np.clip(xn @ np.swapaxes(yn, -1, -2), -1.0, 1.0)) / math.pi


def dtw_normalised(dist):
    """DTW of one frame-distance matrix dist (N, M) -> float: cost of the cheapest path from (0, 0)
    to (N-1, M-1) with steps (1,0), (0,1), (1,1), divided by the number of cells on that path.

    Ties between predecessors of equal cost: diagonal, then (i, j-1), then (i-1, j).
    """
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"expected a non-empty (N, M) matrix, got shape {d.shape}")
    n, m = d.shape
    cost = np.zeros((n, m))
    length = np.zeros((n, m), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                best_cost, best_len = 0.0, 0
            else:
                preds = [(i - 1, j - 1), (i, j - 1), (i - 1, j)]  # tie-break order
                best_cost, best_len = math.inf, 0
                for pi, pj in preds:
                    if pi >= 0 and pj >= 0 and cost[pi, pj] < best_cost:
                        best_cost, best_len = cost[pi, pj], length[pi, pj]
            cost[i, j] = d[i, j] + best_cost
            length[i, j] = best_len + 1
    return float(cost[-1, -1] / length[-1, -1])


def dtw_normalised_batch(dist, n, m):
    """Same as :func:`dtw_normalised` for P padded matrices at once, sweeping anti-diagonals.

    dist (P, N, M) float; n, m (P,) true sizes (padding beyond them is ignored) -> (P,) float64.
    """
    dist = np.asarray(dist, dtype=np.float64)
    P, N, M = dist.shape
    cost = np.empty((P, N, M))
    length = np.empty((P, N, M), dtype=np.int32)
    cost[:, 0, 0] = dist[:, 0, 0]
    length[:, 0, 0] = 1
    rows = np.arange(P)[:, None]
    for s in range(1, N + M - 1):
        i = np.arange(max(0, s - M + 1), min(N, s + 1))
        j = s - i
        im, jm = np.maximum(i - 1, 0), np.maximum(j - 1, 0)
        # candidates in tie-break order: diagonal, (i, j-1), (i-1, j); invalid ones cost inf
        cand = np.stack([np.where((i > 0) & (j > 0), cost[:, im, jm], np.inf),
                         np.where(j > 0, cost[:, i, jm], np.inf),
                         np.where(i > 0, cost[:, im, j], np.inf)])
        lens = np.stack([length[:, im, jm], length[:, i, jm], length[:, im, j]])
        k = np.argmin(cand, axis=0)  # first minimum: the tie-break order above
        cost[rows, i, j] = dist[:, i, j] + np.take_along_axis(cand, k[None], 0)[0]
        length[rows, i, j] = np.take_along_axis(lens, k[None], 0)[0] + 1
    n, m = np.asarray(n) - 1, np.asarray(m) - 1
    return cost[np.arange(P), n, m] / length[np.arange(P), n, m]


def _bucket(n):
    """Padded length for n frames: exact up to 8, then steps of ~25%."""
    if n <= 8:
        return n
    b = 8
    while b < n:
        b += max(2, b // 4)
    return b


def pair_distances(frames, offsets, lengths, pairs, *, progress=True):
    """DTW distances of item pairs.

    frames (F, D): L2-normalised frames of all items concatenated; offsets, lengths (n_items,): where
    each item's frames are; pairs (P, 2) int item indices -> (P,) float64, item pairs[p, 0] along the
    rows of the frame-distance matrix. Pairs are batched by padded lengths.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs))
    if not len(pairs):
        return out
    offsets, lengths = np.asarray(offsets), np.asarray(lengths)
    pad_row = len(frames)
    frames = np.concatenate([np.asarray(frames, dtype=np.float64), np.zeros((1, frames.shape[1]))])
    la, lb = lengths[pairs[:, 0]], lengths[pairs[:, 1]]
    ba = np.array([_bucket(x) for x in range(int(lengths.max()) + 1)])
    key = ba[la] * (ba.max() + 1) + ba[lb]
    order = np.argsort(key, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(key[order])) + 1)
    bar = tqdm(total=len(pairs), desc="abx dtw", unit="pair", mininterval=2.0, disable=not progress)
    dim = frames.shape[1]
    for g in groups:
        N, M = int(la[g].max()), int(lb[g].max())
        step = max(1, min(_CELL_BUDGET // (N * M), _FEAT_BUDGET // ((N + M) * dim)))
        for c in range(0, len(g), step):
            idx = g[c:c + step]
            fa = _gather(frames, offsets[pairs[idx, 0]], la[idx], N, pad_row)
            fb = _gather(frames, offsets[pairs[idx, 1]], lb[idx], M, pad_row)
            out[idx] = dtw_normalised_batch(_angular(fa, fb), la[idx], lb[idx])
            bar.update(len(idx))
    bar.close()
    return out


def _gather(frames, offsets, lengths, width, pad_row):
    """(P, width, D) frames of P items, rows past an item's length taken from the zero pad row."""
    t = np.arange(width)[None, :]
    return frames[np.where(t < lengths[:, None], offsets[:, None] + t, pad_row)]


# ----------------------------------------------------------------------------- items
