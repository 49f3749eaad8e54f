"""EER (Kaldi-exact, interpolated) and minDCF on hand-computed cases."""
import numpy as np
import pytest

from fhvae.eval.metrics import eer_interp, eer_kaldi, min_dcf

# T = 4 targets, N = 6 nontargets; sorted:
# targets    0.1  0.35 0.4  0.8
# nontargets -0.1 0.0  0.05 0.2  0.3  0.5
TAR = [0.4, 0.1, 0.8, 0.35]
NON = [0.2, 0.3, 0.5, 0.0, -0.1, 0.05]


def test_eer_kaldi_hand_case():
    # p=0: k = 5, non[5]=0.5 < 0.1? no.  p=1: k = 5 - floor(6/4) = 4, non[4]=0.3 < 0.35 -> stop.
    eer, thr = eer_kaldi(TAR, NON)
    assert eer == 0.25
    assert thr == pytest.approx(0.35)


def test_eer_kaldi_uses_floor_of_n_p_over_t():
    # T=4, N=2. p=1: floor(2*1/4)=0 -> k=1, 2.5 < 2? no (ceil would give k=0 and stop at p=1).
    # p=2: floor(4/4)=1 -> k=0, 0 < 3 -> stop: EER = 2/4.
    eer, thr = eer_kaldi([1, 2, 3, 4], [0, 2.5])
    assert (eer, thr) == (0.5, 3.0)


def test_eer_kaldi_perfect_separation_is_zero():
    assert eer_kaldi([3, 4, 5], [0, 1, 2]) == (0.0, 3.0)


def test_eer_kaldi_reversed_scores_stop_at_t_minus_1():
    # Kaldi never tests the last target position: worst case is (T-1)/T, not 1.
    assert eer_kaldi([0, 1, 2], [3, 4, 5]) == (2 / 3, 2.0)
    assert eer_interp([0, 1, 2], [3, 4, 5]) == 1.0


def test_eer_ties_count_against_the_system():
    # All scores equal: never non[k] < tar[p].
    assert eer_kaldi([1, 1], [1, 1]) == (0.5, 1.0)
    # targets 1 1 2, nontargets 0 1: p=0,1 -> k=1, 1 < 1 false -> p=2, EER 2/3.
    assert eer_kaldi([1, 1, 2], [0, 1]) == (2 / 3, 2.0)
    # Interpolated: points (Pmiss, Pfa) at t=1: (0, 1/2), t=2: (2/3, 0); crossing at 2/7.
    assert eer_interp([1, 1, 2], [0, 1]) == pytest.approx(2 / 7)


def test_eer_kaldi_compares_as_float32():
    # 1 + 1e-9 == 1 in float32 (Kaldi BaseFloat): a tie, so no stop at p = 0.
    eer, _ = eer_kaldi([1.0 + 1e-9, 5.0], [1.0])
    assert eer == 0.5
    eer, _ = eer_kaldi([1.0 + 1e-6, 5.0], [1.0])
    assert eer == 0.0


def test_eer_interp_hand_cases():
    # Pmiss is 1/4 on both bracketing points (t=0.3: Pfa 2/6; t=0.35: Pfa 1/6).
    assert eer_interp(TAR, NON) == pytest.approx(0.25)
    assert eer_interp([3, 4, 5], [0, 1, 2]) == 0.0
    # Complete overlap: t=1 gives (Pmiss, Pfa) = (0, 1), t=2 gives (1/2, 1/2): exactly equal.
    assert eer_interp([1, 2], [1, 2]) == 0.5
    # Crossing between (Pmiss, Pfa) = (0, 1) at t=0 and (1, 0) at t=inf -> 1/2.
    assert eer_interp([0.0], [0.0]) == 0.5


def test_min_dcf_hand_cases():
    # P = 0.5: cost / 0.5 = Pmiss + Pfa; best at t = 0.35: 1/4 + 1/6.
    dcf, thr = min_dcf(TAR, NON, 0.5)
    assert dcf == pytest.approx(5 / 12)
    assert thr == 0.35
    # P = 0.1: normalized cost = Pmiss + 9 Pfa; best at t = 0.8: 3/4 + 0.
    dcf, thr = min_dcf(TAR, NON, 0.1)
    assert dcf == pytest.approx(0.75)
    assert thr == 0.8
    # P = 0.5, Cfa = 10: normalized cost = Pmiss + 10 Pfa -> t = 0.8 again (0.75 < 1 for reject all).
    dcf, thr = min_dcf(TAR, NON, 0.5, c_miss=1, c_fa=10)
    assert dcf == pytest.approx(0.75)
    assert thr == 0.8


def test_min_dcf_extremes():
    assert min_dcf([3, 4], [0, 1], 0.01) == (0.0, 3.0)
    # Overlap: accept all costs 0.99 / 0.01; rejecting all costs exactly 1.
    assert min_dcf([1, 1], [1, 1], 0.01) == (1.0, np.inf)
    # Reversed scores: nothing beats rejecting all.
    dcf, thr = min_dcf([0, 1], [2, 3], 0.001)
    assert (dcf, thr) == (1.0, np.inf)


def test_min_dcf_ties_are_not_split():
    # One target and one nontarget at 1.0: a threshold cannot accept one and reject the other.
    dcf, thr = min_dcf([1.0, 2.0], [1.0, 0.0], 0.5)
    # t=2: Pmiss 1/2, Pfa 0 -> 0.5 ; t=1: Pmiss 0, Pfa 1/2 -> 0.5 ; lowest threshold wins.
    assert dcf == pytest.approx(0.5)
    assert thr == 1.0


@pytest.mark.parametrize("seed,n_tar,n_non", [(0, 200, 2000), (1, 50, 5000), (2, 1000, 300)])
def test_eer_interp_agrees_with_kaldi_on_gaussian_scores(seed, n_tar, n_non):
    rng = np.random.default_rng(seed)
    tar = rng.normal(2.0, 1.0, n_tar)
    non = rng.normal(0.0, 1.0, n_non)
    k, _ = eer_kaldi(tar, non)
    e = eer_interp(tar, non)
    assert abs(k - e) <= 1.0 / n_tar + 1e-12
    # Both are near the theoretical EER Phi(-1) = 0.1587 of two unit Gaussians 2 apart.
    assert abs(e - 0.1587) < 0.08


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="target scores are empty"):
        eer_kaldi([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        eer_interp([1.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([1.0], [0.0], 0.0)


def _compute_eer_loop(tar, non):
    """Line-by-line transcription of Kaldi's ComputeEer (compute-eer.cc)."""
    tar = sorted(np.float32(tar))
    non = sorted(np.float32(non))
    pos, size = 0, len(tar)
    while pos + 1 < size:
        n = int(len(non) * pos * 1.0 / size)
        npos = max(len(non) - 1 - n, 0)
        if non[npos] < tar[pos]:
            break
        pos += 1
    return pos / size, float(tar[pos])


@pytest.mark.parametrize("seed", range(5))
def test_eer_kaldi_matches_the_cc_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_tar, n_non = rng.integers(1, 60, size=2)
    tar = np.round(rng.normal(1.0, 1.0, n_tar), 1)  # coarse rounding -> many ties
    non = np.round(rng.normal(0.0, 1.0, n_non), 1)
    assert eer_kaldi(tar, non) == _compute_eer_loop(tar, non)
