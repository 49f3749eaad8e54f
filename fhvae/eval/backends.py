"""Speaker-verification backends: cosine (optionally whitened) and LDA + two-covariance PLDA.

A backend has ``fit(train_vectors (n, D), spk_labels)``, ``transform(vectors (n, D)) -> (n, d)``
(per-utterance preprocessing) and ``score_transformed(enroll (n, d), test (n, d), n_enroll)``.
Speaker models (``spk2utt`` enrollment) are the mean of the *transformed* vectors of the
speaker's utterances: for PLDA that mean is exactly a sufficient statistic of n observations.
"""
import logging

import numpy as np
import scipy.linalg

from fhvae.errors import DataError

log = logging.getLogger(__name__)


def length_normalize(x):
    """Scale each row of ``x`` (n, d) to unit Euclidean norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class CosineBackend:
    """Cosine scoring: subtract the training mean, optionally whiten, length-normalize.

    Without ``fit`` no mean is subtracted.
    """

    name = "cosine"

    def __init__(self, whiten=False):
        self.whiten = whiten
        self.mean = None
        self.proj = None

    def fit(self, train_vectors, spk_labels=None):
        """Estimate the mean (and whitening matrix) from ``train_vectors`` (n, D); labels unused."""
        x = np.asarray(train_vectors, dtype=np.float64)
        self.mean = x.mean(axis=0)
        if self.whiten:
            w, v = np.linalg.eigh(np.cov(x - self.mean, rowvar=False))
            self.proj = v / np.sqrt(np.maximum(w, 1e-10 * w.max()))
        return self

    def transform(self, vectors):
        """(n, D) -> (n, d) unit-norm vectors."""
        x = np.asarray(vectors, dtype=np.float64)
        if self.mean is not None:
            x = x - self.mean
        if self.proj is not None:
            x = x @ self.proj
        return length_normalize(x)

    def score_transformed(self, enroll, test, n_enroll=None):
        """Cosine similarity of rows (enroll rows may be speaker-model means); ``n_enroll`` unused."""
        return np.sum(length_normalize(enroll) * test, axis=1)

    def score(self, enroll_vectors, test_vectors):
        """Cosine scores (n,) of raw single-utterance vectors ``(n, D)`` x ``(n, D)``."""
        return self.score_transformed(self.transform(enroll_vectors), self.transform(test_vectors))


def _class_stats(x, labels):
    """Per-class ``(means (S, d), counts (S,), index (n,))`` of ``x`` (n, d)."""
    _, index, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, index, x)
    return sums / counts[:, None], counts, index


def lda(x, labels, dim):
    """LDA projection (D, dim): top generalized eigenvectors of S_b v = l S_w v.

    S_w is the pooled within-class covariance, S_b the count-weighted covariance of the class
    means. Columns are scaled so that the projected within-class covariance is identity.
    A tiny ridge (1e-6 of the mean variance) keeps S_w invertible when D > n - #classes.
    """
    means, counts, index = _class_stats(x, labels)
    mu = x.mean(axis=0)
    dev = x - means[index]
    s_w = dev.T @ dev / len(x)
    dm = means - mu
    s_b = (dm * counts[:, None]).T @ dm / len(x)
    s_w += 1e-6 * np.trace(s_w) / len(s_w) * np.eye(len(s_w))
    _, v = scipy.linalg.eigh(s_b, s_w)
    return v[:, ::-1][:, :dim]


class PLDA:
    """Two-covariance PLDA: x = y + e, speaker variable y ~ N(m, B), residual e ~ N(0, W).

    ``fit`` runs EM (initialized by moment estimates) for the maximum-likelihood m, B, W.
    ``llr`` scores same vs different speaker in closed form, via the simultaneous
    diagonalization A W A^T = I, A B A^T = diag(psi).
    """

    def __init__(self, n_iter=10):
        self.n_iter = n_iter
        self.mean = self.between = self.within = self.psi = self.transform = None

    def fit(self, x, labels):
        """Estimate m (d,), B (d, d), W (d, d) from ``x`` (n, d) with speaker ``labels`` (n,)."""
        x = np.asarray(x, dtype=np.float64)
        means, counts, index = _class_stats(x, labels)
        n, d = x.shape
        s = len(counts)
        if s < 2 or counts.max() < 2:
            raise DataError(f"PLDA needs at least 2 speakers and a speaker with 2 or more "
                            f"utterances, got {s} speakers with at most {counts.max()} each")
        # Moment estimates: pooled within-class scatter, and the scatter of speaker means
        # minus its expected within-class part W / n_s.
        dev = x - means[index]
        w = dev.T @ dev / max(n - s, 1)
        m = means.mean(axis=0)
        b = np.cov(means, rowvar=False, bias=True).reshape(d, d) - w * np.mean(1.0 / counts)
        ev, evec = np.linalg.eigh(b)
        b = (evec * np.maximum(ev, 1e-3 * max(ev.max(), np.trace(w) / d))) @ evec.T
        sums = means * counts[:, None]
        xx = x.T @ x
        for _ in range(self.n_iter):
            # E-step: y_s | data ~ N(yhat_s, C_{n_s}), C_n = (B^-1 + n W^-1)^-1.
            b_inv, w_inv = np.linalg.inv(b), np.linalg.inv(w)
            yhat = np.empty_like(means)
            cov_sum = np.zeros((d, d))
            cov_weighted = np.zeros((d, d))
            for n_s in np.unique(counts):
                sel = counts == n_s
                c = np.linalg.inv(b_inv + n_s * w_inv)
                yhat[sel] = (b_inv @ m + sums[sel] @ w_inv) @ c
                cov_sum += sel.sum() * c
                cov_weighted += sel.sum() * n_s * c
            # M-step.
            m = yhat.mean(axis=0)
            dy = yhat - m
            b = (cov_sum + dy.T @ dy) / s
            cross = sums.T @ yhat
            w = (xx - cross - cross.T + (yhat * counts[:, None]).T @ yhat + cov_weighted) / n
            b, w = (b + b.T) / 2, (w + w.T) / 2
        return self.set_params(m, b, w)

    def set_params(self, mean, between, within):
        """Set m (d,), B (d, d), W (d, d) and precompute the simultaneous diagonalization."""
        self.mean, self.between, self.within = (np.asarray(a, dtype=np.float64)
                                                for a in (mean, between, within))
        try:
            self.psi, v = scipy.linalg.eigh(self.between, self.within)
        except np.linalg.LinAlgError:
            raise DataError(
                "PLDA: within-speaker covariance is singular (too few utterances per speaker?)"
            ) from None
        self.transform = v.T  # rows a: a W a^T = 1, a B a^T = psi
        return self

    def llr(self, enroll, test, n_enroll=1):
        """Log-likelihood ratio (n,): same vs different speaker.

        ``enroll`` (n, d) is the mean of ``n_enroll`` (scalar or (n,)) observations of the enrolled
        speaker, ``test`` (n, d) one observation. Per diagonalized dimension with u, v the
        enroll and test coordinates: same speaker (u, v) ~ N(0, [[psi + 1/n, psi], [psi, psi + 1]]),
        different speakers (u, v) ~ N(0, diag(psi + 1/n, psi + 1)).
        """
        u = (np.asarray(enroll, dtype=np.float64) - self.mean) @ self.transform.T
        v = (np.asarray(test, dtype=np.float64) - self.mean) @ self.transform.T
        inv_n = 1.0 / np.broadcast_to(np.asarray(n_enroll, dtype=np.float64), (len(u),))[:, None]
        psi = self.psi
        a, b = psi + inv_n, psi + 1.0
        det = a * b - psi * psi
        same = -0.5 * (b * u * u - 2.0 * psi * u * v + a * v * v) / det - 0.5 * np.log(det)
        diff = -0.5 * (u * u / a + v * v / b) - 0.5 * np.log(a * b)
        return np.sum(same - diff, axis=1)


def _warn_small_training_set(n, n_spk, d_in, want):
    """Log what is wrong, and what to do, when ``n`` training vectors of ``n_spk`` speakers (dim
    ``d_in``; LDA to ``want`` dims asked) are too few for a sound LDA + PLDA fit."""
    if n_spk - 1 < want:
        log.warning("PLDA backend: only %d training speakers, so LDA keeps %d dims, not %d (LDA needs "
                    "more speakers than dims); lower --lda-dim to %d or train on more speakers",
                    n_spk, n_spk - 1, want, n_spk - 1)
    dof = n - n_spk   # within-speaker degrees of freedom
    if dof < d_in:
        log.warning("PLDA backend: %d vectors of %d speakers leave %d within-speaker degrees of freedom for "
                    "%d-dim vectors: the within-speaker covariance is singular, LDA picks directions with "
                    "no within-speaker variation and the scores are meaningless (huge negative LLRs). "
                    "Train on at least %d vectors (more speakers and utterances per speaker), or use "
                    "--backend cosine", n, n_spk, dof, d_in, 2 * d_in + n_spk)
    elif dof < 2 * d_in:
        log.warning("PLDA backend: %d vectors of %d speakers for %d-dim vectors (%.1f within-speaker "
                    "degrees of freedom per dim): the covariances are poorly estimated and scores badly "
                    "calibrated; train on at least %d vectors", n, n_spk, d_in,
                    dof / d_in, 2 * d_in + n_spk)


class PLDABackend:
    """Mean subtraction, LDA to ``lda_dim`` (capped at #speakers - 1 and D), length
    normalization, then two-covariance PLDA log-likelihood-ratio scoring."""

    name = "plda"

    def __init__(self, lda_dim=200, n_iter=10):
        self.lda_dim = lda_dim
        self.plda = PLDA(n_iter)
        self.mean = self.lda = None

    def fit(self, train_vectors, spk_labels):
        """Train on ``train_vectors`` (n, D) with speaker ``spk_labels`` (n,)."""
        x = np.asarray(train_vectors, dtype=np.float64)
        n_spk = len(set(spk_labels))
        if n_spk < 2:
            raise DataError(f"PLDA needs training vectors of at least 2 speakers, got {n_spk}")
        dim = min(self.lda_dim, n_spk - 1, x.shape[1])
        _warn_small_training_set(len(x), n_spk, x.shape[1], min(self.lda_dim, x.shape[1]))
        self.mean = x.mean(axis=0)
        self.lda = lda(x - self.mean, spk_labels, dim)
        log.info("PLDA backend: LDA %d -> %d dims, %d speakers, %d vectors",
                 x.shape[1], dim, n_spk, len(x))
        self.plda.fit(self.transform(x), spk_labels)
        return self

    def transform(self, vectors):
        """(n, D) -> (n, lda_dim) centered, LDA-projected, unit-norm vectors."""
        return length_normalize((np.asarray(vectors, dtype=np.float64) - self.mean) @ self.lda)

    def score_transformed(self, enroll, test, n_enroll=None):
        """PLDA LLR (n,); ``enroll`` rows are means of ``n_enroll`` transformed vectors (default 1)."""
        return self.plda.llr(enroll, test, 1 if n_enroll is None else n_enroll)

    def score(self, enroll_vectors, test_vectors):
        """PLDA LLR (n,) of raw single-utterance vectors ``(n, D)`` x ``(n, D)``."""
        return self.score_transformed(self.transform(enroll_vectors), self.transform(test_vectors))
