import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from fhvae.models import losses

D64 = torch.float64


def test_log_gauss_matches_torch_normal():
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(4, 5, 3, generator=g, dtype=D64), torch.randn(4, 5, 3, generator=g, dtype=D64)
    logvar = torch.randn(4, 5, 3, generator=g, dtype=D64)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum((1, 2))
    got = losses.log_gauss(x, mu, logvar)
    assert got.shape == (4,)
    torch.testing.assert_close(got, ref)


def test_log_gauss_broadcasts_scalar_logvar():
    x = torch.zeros(2, 3, 4, dtype=D64)
    got = losses.log_gauss(x, torch.zeros_like(x), torch.zeros(1, 1, 1, dtype=D64))
    torch.testing.assert_close(got, torch.full((2,), -0.5 * math.log(2 * math.pi) * 12, dtype=D64))


def _mc_kl(q_mu, q_logvar, p_mu, p_logvar, n, seed):
    """Monte Carlo estimate of KL(q||p) per row and its standard error."""
    g = torch.Generator().manual_seed(seed)
    z = q_mu + torch.exp(0.5 * q_logvar) * torch.randn(n, *q_mu.shape, generator=g, dtype=D64)
    q = torch.distributions.Normal(q_mu, torch.exp(0.5 * q_logvar))
    p = torch.distributions.Normal(p_mu, torch.exp(0.5 * torch.as_tensor(p_logvar, dtype=D64)))
    d = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (n, B)
    return d.mean(0), d.std(0) / math.sqrt(n)


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_gauss_matches_monte_carlo(seed):
    g = torch.Generator().manual_seed(seed)
    q_mu, p_mu = torch.randn(3, 4, generator=g, dtype=D64), torch.randn(3, 4, generator=g, dtype=D64)
    q_lv, p_lv = torch.randn(3, 4, generator=g, dtype=D64), torch.randn(3, 4, generator=g, dtype=D64)
    closed = losses.kl_gauss(q_mu, q_lv, p_mu, p_lv)
    mc, se = _mc_kl(q_mu, q_lv, p_mu, p_lv, 200_000, seed + 10)
    assert closed.shape == (3,)
    assert torch.all((closed - mc).abs() < 5 * se), (closed, mc, se)
    assert torch.all(closed > 0)


def test_kl_z1_is_kl_to_standard_normal_and_zero_at_prior():
    g = torch.Generator().manual_seed(2)
    mu, lv = torch.randn(5, 6, generator=g, dtype=D64), torch.randn(5, 6, generator=g, dtype=D64)
    mc, se = _mc_kl(mu, lv, torch.zeros(6, dtype=D64), 0.0, 200_000, 3)
    assert torch.all((losses.kl_z1(mu, lv) - mc).abs() < 5 * se)
    torch.testing.assert_close(losses.kl_z1(torch.zeros(2, 6), torch.zeros(2, 6)), torch.zeros(2))


def test_kl_z2_uses_prior_variance():
    g = torch.Generator().manual_seed(4)
    mu, lv, mu2 = (torch.randn(3, 5, generator=g, dtype=D64) for _ in range(3))
    for var in (0.25, 2.0):
        mc, se = _mc_kl(mu, lv, mu2, math.log(var), 200_000, 5)
        assert torch.all((losses.kl_z2(mu, lv, mu2, var) - mc).abs() < 5 * se)
    # q equal to the prior N(mu2, 0.25 I) gives zero
    torch.testing.assert_close(losses.kl_z2(mu2, torch.full_like(mu2, math.log(0.25)), mu2, 0.25),
                               torch.zeros(3, dtype=D64))


def test_log_p_mu2_is_standard_normal_density():
    mu2 = torch.randn(7, 32, dtype=D64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(mu2).sum(1)
    torch.testing.assert_close(losses.log_p_mu2(mu2), ref)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_map_mu2_maximizes_posterior(n):
    rng = np.random.default_rng(n)
    zbar = rng.normal(1.5, 1.0, size=(n, 3))
    var = 0.25

    def neg_log_post(mu):  # -(sum_n log N(zbar_n; mu, var I) + log N(mu; 0, I)), constants dropped
        return ((zbar - mu) ** 2).sum() / (2 * var) + (mu ** 2).sum() / 2

    best = minimize(neg_log_post, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    got = losses.map_mu2(torch.from_numpy(zbar.sum(0)), n, var).numpy()
    np.testing.assert_allclose(got, best, atol=1e-6)
    # shrinks towards 0 compared with the plain mean
    assert np.all(np.abs(got) < np.abs(zbar.mean(0)))


def test_map_mu2_broadcasts_counts_per_row():
    sums = torch.tensor([[2.0, 4.0], [3.0, 3.0]])
    n = torch.tensor([[1.0], [3.0]])
    torch.testing.assert_close(losses.map_mu2(sums, n, 0.25),
                               torch.tensor([[2 / 1.25, 4 / 1.25], [3 / 3.25, 3 / 3.25]]))


def _disc_explicit(z2_mu, cache, idx, var):
    d2 = ((z2_mu[:, None, :] - cache[None, :, :]) ** 2).sum(-1)  # (B, K) via (B, K, D)
    return torch.log_softmax(-d2 / (2 * var), dim=1).gather(1, idx[:, None])[:, 0]


def test_discriminative_matches_explicit_distances_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    z2 = torch.randn(6, 4, generator=g, dtype=D64, requires_grad=True)
    cache = torch.randn(9, 4, generator=g, dtype=D64, requires_grad=True)
    idx = torch.tensor([0, 3, 3, 8, 1, 5])
    got = losses.discriminative(z2, cache, idx, 0.25)
    ref = _disc_explicit(z2, cache, idx, 0.25)
    assert got.shape == (6,)
    torch.testing.assert_close(got, ref)
    g1 = torch.autograd.grad(got.sum(), (z2, cache))
    g2 = torch.autograd.grad(ref.sum(), (z2, cache))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    # every cache row is in the denominator, so every row gets a gradient
    assert torch.all(g1[1].abs().sum(1) > 0)


def test_discriminative_is_stable_for_far_apart_points():
    z2 = torch.tensor([[100.0, 0.0], [0.0, -100.0]])
    cache = torch.tensor([[100.0, 0.0], [0.0, -100.0], [50.0, 50.0]])
    got = losses.discriminative(z2, cache, torch.tensor([0, 2]), 0.25)
    ref = _disc_explicit(z2.double(), cache.double(), torch.tensor([0, 2]), 0.25).float()
    assert torch.all(torch.isfinite(got))
    torch.testing.assert_close(got, ref)
    assert got[0] == 0.0 and got[1] < -1e4


def _out(B, T, F, Dz, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=D64, requires_grad=True)  # noqa: E731
    return {"x_mu": r(B, T, F), "x_logvar": r(B, T, F), "z1_mu": r(B, Dz), "z1_logvar": r(B, Dz),
            "z2_mu": r(B, Dz), "z2_logvar": r(B, Dz)}


def test_fhvae_loss_composes_the_terms():
    B, T, F, Dz, K = 5, 4, 3, 2, 7
    out = _out(B, T, F, Dz, 0)
    x = torch.randn(B, T, F, dtype=D64)
    cache = torch.randn(K, Dz, dtype=D64, requires_grad=True)
    idx = torch.tensor([1, 1, 4, 6, 0])
    n = torch.tensor([3.0, 3.0, 10.0, 1.0, 2.0], dtype=D64)
    loss, t = losses.fhvae_loss(out, x, cache, idx, n, alpha=10.0, prior_var=0.25)
    assert set(t) == {"log_px", "kl_z1", "kl_z2", "log_pmu2", "disc", "bound"}
    assert all(v.shape == (B,) for v in t.values())
    # independent reference: torch.distributions for the densities
    N = torch.distributions.Normal
    mu2 = cache[idx]
    log_px = N(out["x_mu"], torch.exp(0.5 * out["x_logvar"])).log_prob(x).sum((1, 2))
    kl1 = torch.distributions.kl_divergence(N(out["z1_mu"], torch.exp(0.5 * out["z1_logvar"])), N(0.0, 1.0)).sum(1)
    kl2 = torch.distributions.kl_divergence(N(out["z2_mu"], torch.exp(0.5 * out["z2_logvar"])), N(mu2, 0.5)).sum(1)
    lpm = N(0.0, 1.0).log_prob(mu2).sum(1) / n
    bound = log_px - kl1 - kl2 + lpm
    disc = _disc_explicit(out["z2_mu"], cache, idx, 0.25)
    torch.testing.assert_close(t["bound"], bound)
    torch.testing.assert_close(t["log_pmu2"], lpm)
    torch.testing.assert_close(t["disc"], disc)
    torch.testing.assert_close(loss, -(bound + 10.0 * disc))   # per segment


def test_fhvae_loss_gradient_reaches_cache():
    B, Dz, K = 4, 3, 6
    out = _out(B, 2, 2, Dz, 1)
    x = torch.randn(B, 2, 2, dtype=D64)
    idx = torch.tensor([0, 2, 2, 5])
    n = torch.full((B,), 4.0, dtype=D64)
    used = torch.zeros(K, dtype=torch.bool)
    used[idx] = True
    for alpha in (0.0, 10.0):
        cache = torch.randn(K, Dz, dtype=D64, requires_grad=True)
        loss, _ = losses.fhvae_loss(out, x, cache, idx, n, alpha=alpha)
        (g,) = torch.autograd.grad(loss.mean(), cache)
        assert torch.all(g[used].abs().sum(1) > 0)
        if alpha == 0:  # only the rows of the batch's sequences enter the bound
            assert torch.all(g[~used] == 0)
        else:  # the discriminative denominator reaches every row
            assert torch.all(g[~used].abs().sum(1) > 0)


def test_segment_terms_bound_is_term_sum():
    out = _out(3, 2, 2, 2, 2)
    x = torch.randn(3, 2, 2, dtype=D64)
    mu2 = torch.randn(3, 2, dtype=D64)
    t = losses.segment_terms(out, x, mu2, torch.tensor([1.0, 2.0, 4.0], dtype=D64), 0.25)
    torch.testing.assert_close(t["bound"], t["log_px"] - t["kl_z1"] - t["kl_z2"] + t["log_pmu2"])
    torch.testing.assert_close(t["log_pmu2"] * torch.tensor([1.0, 2.0, 4.0], dtype=D64), losses.log_p_mu2(mu2))
