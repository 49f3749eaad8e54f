"""FHVAE objective (Hsu & Glass 2018, Eqs. 2-5): segment lower bound and discriminative term.

All log-densities and KL divergences are in nats, summed over dimensions (and frames), one value
per segment. Shapes: B segments, T frames, F feature dims, D = z2_dim, K cache rows (sequences).
Priors: p(z1) = N(0, I), p(z2 | mu2) = N(mu2, prior_var I), p(mu2) = N(0, I).
"""
import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def log_gauss(x, mu, logvar):
    """log N(x; mu, exp(logvar)) of diagonal Gaussians, summed over all but the first dim -> (B,).

    x, mu, logvar: (B, ...) broadcastable to each other (e.g. (B, T, F) frames of a segment).
    """
    lp = -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar))
    return lp.expand(torch.broadcast_shapes(x.shape, mu.shape, logvar.shape)).flatten(1).sum(1)


def kl_gauss(q_mu, q_logvar, p_mu, p_logvar):
    """KL(N(q_mu, exp(q_logvar)) || N(p_mu, exp(p_logvar))), diagonal, summed over dims -> (B,).

    q_mu, q_logvar: (B, D); p_mu, p_logvar: tensors or floats broadcastable to (B, D).
    """
    p_logvar = torch.as_tensor(p_logvar, dtype=q_mu.dtype, device=q_mu.device)
    kl = 0.5 * (p_logvar - q_logvar + (torch.exp(q_logvar) + (q_mu - p_mu) ** 2) * torch.exp(-p_logvar) - 1.0)
    return kl.sum(-1)


def kl_z1(z1_mu, z1_logvar):
    """KL(q(z1|x,z2) || N(0, I)): z1_mu, z1_logvar (B, z1_dim) -> (B,)."""
    return kl_gauss(z1_mu, z1_logvar, 0.0, 0.0)


def kl_z2(z2_mu, z2_logvar, mu2, prior_var=0.25):
    """KL(q(z2|x) || N(mu2, prior_var I)): z2_mu, z2_logvar, mu2 (B, D) -> (B,)."""
    return kl_gauss(z2_mu, z2_logvar, mu2, math.log(prior_var))


def log_p_mu2(mu2):
    """log N(mu2; 0, I): mu2 (B, D) -> (B,)."""
    return -0.5 * (LOG_2PI + mu2 ** 2).sum(-1)


def map_mu2(z2_mu_sum, n, prior_var=0.25):
    """MAP estimate of mu2 (the s-vector) from n segments of one sequence: sum / (n + prior_var).

    z2_mu_sum: (..., D) sum of the posterior means of z2 over the n segments; n: number of segments,
    a number or a tensor broadcastable to z2_mu_sum (e.g. (K, 1)). It maximizes
    sum_n log N(zbar2_n; mu2, prior_var I) + log N(mu2; 0, I).
    """
    return z2_mu_sum / (n + prior_var)


def discriminative(z2_mu, cache, idx, prior_var=0.25):
    """log p(i | zbar2) = log softmax_j(-||zbar2 - cache_j||^2 / (2 prior_var)) at j = idx -> (B,).

    z2_mu: (B, D) posterior means of z2; cache: (K, D) mu2 of the K sequences (gradients flow into
    it); idx: (B,) long, each segment's row in the cache. Uses ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2
    with a (B, K) matrix only; ||a||^2 is the same for every j and cancels in the softmax, so it is
    left out (exactly, values and gradients).
    """
    logits = (z2_mu @ cache.t() - 0.5 * (cache ** 2).sum(1)) / prior_var  # (B, K)
    return -F.cross_entropy(logits, idx, reduction="none")


def segment_terms(out, x, mu2, n_segs, prior_var=0.25, kl1=None):
    """Segment lower bound (Eq. 3) and its terms, each (B,) in nats.

    out: FHVAE.forward dict; x: (B, T, F) segments; mu2: (B, D) prior mean of each segment's
    sequence (its cache row); n_segs: (B,) number of segments N_i of each segment's sequence.
    Terms: log_px = log p(x|z1,z2), kl_z1, kl_z2, log_pmu2 = log p(mu2) / N_i, and
    bound = log_px - kl_z1 - kl_z2 + log_pmu2. kl1 (B,), if given, is kl_z1 (a non-Gaussian z1
    posterior, e.g. vq: log K).
    """
    t = {
        "log_px": log_gauss(x, out["x_mu"], out["x_logvar"]),
        "kl_z1": kl_z1(out["z1_mu"], out["z1_logvar"]) if kl1 is None else kl1,
        "kl_z2": kl_z2(out["z2_mu"], out["z2_logvar"], mu2, prior_var),
        "log_pmu2": log_p_mu2(mu2) / n_segs,
    }
    t["bound"] = t["log_px"] - t["kl_z1"] - t["kl_z2"] + t["log_pmu2"]
    return t


def fhvae_loss(out, x, cache, idx, n_segs, alpha=10.0, prior_var=0.25, kl1=None):
    """Per-segment training loss -(bound + alpha * disc) (B,) (Eq. 5, Algorithm 1 line 10; its mean
    is minimized) and its terms, each (B,): log_px, kl_z1, kl_z2, log_pmu2, disc, bound.

    out: FHVAE.forward dict; x: (B, T, F); cache: (K, D) trainable mu2 of the K sequences of the
    block (hierarchical) or of all M sequences (flat); idx: (B,) long cache row of each segment;
    n_segs: (B,) N_i of each segment's sequence; kl1: see segment_terms.
    """
    terms = segment_terms(out, x, cache[idx], n_segs, prior_var, kl1)
    terms["disc"] = discriminative(out["z2_mu"], cache, idx, prior_var)
    return -(terms["bound"] + alpha * terms["disc"]), terms
