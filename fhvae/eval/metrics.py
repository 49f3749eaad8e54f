"""Detection metrics for speaker verification: EER (Kaldi-exact and interpolated) and minDCF.

Scores are "higher = more likely the same speaker". A decision at threshold t accepts a trial
when ``score >= t``. For a threshold, Pmiss = fraction of target scores rejected and
Pfa = fraction of nontarget scores accepted.

- ``eer_kaldi``: the EER exactly as Kaldi's ``compute-eer`` computes it (a step rule on the
  sorted scores; never returns more than (T-1)/T).
- ``eer_interp``: the ROC-crossing EER: the point where Pmiss = Pfa on the piecewise-linear
  curve through all operating points (one per distinct score, plus "reject all").
- ``min_dcf``: normalized minimum detection cost over all operating points.
"""
import numpy as np


def _as_scores(x, name):
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} scores are empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} scores contain NaN or inf")
    return x


def eer_kaldi(target_scores, nontarget_scores):
    """EER as Kaldi's compute-eer computes it; returns ``(eer_fraction, threshold)``.

    Both score lists are cast to float32 (Kaldi's BaseFloat) and sorted ascending.
    With T target and N nontarget scores, for target position p = 0, 1, ..., T-2 take
    k = N - 1 - floor(N * p / T) and stop at the first p where nontarget[k] < target[p];
    if no p stops, p = T - 1. Then EER = p / T and threshold = target[p].
    (Ties count against the system: the comparison is strict.)
    """
    tar = np.sort(_as_scores(target_scores, "target").astype(np.float32))
    non = np.sort(_as_scores(nontarget_scores, "nontarget").astype(np.float32))
    n_tar, n_non = tar.size, non.size
    p = np.arange(n_tar - 1, dtype=np.int64)
    # Kaldi computes floor(N * p * 1.0 / T) in double; integer floor division is identical
    # for any realistic N, T (the quotient is never within 2^-53 relative of an integer).
    k = np.maximum(n_non - 1 - (n_non * p) // n_tar, 0)
    stop = np.flatnonzero(non[k] < tar[p])
    pos = int(stop[0]) if stop.size else n_tar - 1
    return pos / n_tar, float(tar[pos])


def _operating_points(target_scores, nontarget_scores):
    """All operating points, thresholds ascending: ``(thresholds, p_miss, p_fa)``.

    Thresholds are the distinct scores (accept ``score >= t``) followed by +inf (reject all),
    so the curve runs from (Pmiss, Pfa) = (0, 1) to (1, 0).
    """
    tar = np.sort(_as_scores(target_scores, "target"))
    non = np.sort(_as_scores(nontarget_scores, "nontarget"))
    thresholds = np.append(np.unique(np.concatenate([tar, non])), np.inf)
    p_miss = np.searchsorted(tar, thresholds, side="left") / tar.size
    p_fa = 1.0 - np.searchsorted(non, thresholds, side="left") / non.size
    return thresholds, p_miss, p_fa


def eer_interp(target_scores, nontarget_scores):
    """ROC-crossing EER (fraction), linearly interpolated between adjacent operating points.

    Along increasing threshold, Pmiss - Pfa rises from -1 to 1; the EER is the value of
    Pmiss (= Pfa) where the straight segment between the two operating points that bracket
    the sign change crosses Pmiss = Pfa. For continuous scores it lies within 1/T of
    ``eer_kaldi`` (T = number of target scores).
    """
    _, p_miss, p_fa = _operating_points(target_scores, nontarget_scores)
    d = p_miss - p_fa
    i = int(np.argmax(d >= 0))  # d[-1] == 1, so some i exists; d[0] == -1, so i >= 1
    t = -d[i - 1] / (d[i] - d[i - 1])
    return float(p_miss[i - 1] + t * (p_miss[i] - p_miss[i - 1]))


def min_dcf(target_scores, nontarget_scores, p_target, c_miss=1.0, c_fa=1.0):
    """Normalized minimum detection cost; returns ``(min_dcf, threshold)``.

    minDCF = min over thresholds t of
    (Cmiss * Pmiss(t) * P + Cfa * Pfa(t) * (1 - P)) / min(Cmiss * P, Cfa * (1 - P)),
    over every distinct score (accept ``score >= t``) and t = +inf (reject all).
    Equal scores are never split by a threshold. On a tie in cost the lowest threshold wins.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    thresholds, p_miss, p_fa = _operating_points(target_scores, nontarget_scores)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    i = int(np.argmin(cost))
    return float(cost[i] / min(c_miss * p_target, c_fa * (1.0 - p_target))), float(thresholds[i])
