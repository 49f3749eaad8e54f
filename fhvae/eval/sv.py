"""Speaker verification: trials, scoring backends (cosine, LDA + PLDA), evaluation, baseline vectors.

Works on any Kaldi vector scp (``FV`` entries): our s-vectors, Kaldi x-vectors or i-vectors.

A backend has ``fit(train_vectors (n, D), spk_labels)``, ``transform(vectors (n, D)) -> (n, d)``
(per-utterance preprocessing) and ``score_transformed(enroll (n, d), test (n, d), n_enroll)``.
Speaker models (``spk2utt`` enrollment) are the mean of the *transformed* vectors of the
speaker's utterances: for PLDA that mean is exactly a sufficient statistic of n observations.
"""
import json
import logging
import os

import numpy as np
import scipy.linalg

from fhvae.errors import ConfigError, DataError
from fhvae.eval.metrics import eer_interp, eer_kaldi, min_dcf
from fhvae.io.ark import ArkScpWriter, FeatReader
from fhvae.io.atomic import atomic_write_text
from fhvae.io.tables import read_kv, read_table, scan_table

log = logging.getLogger(__name__)

_LABELS = {"target": True, "nontarget": False}


def read_trials(path):
    """Read a Kaldi trials file (``enroll test target|nontarget``) -> [(enroll, test, is_target)]."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: trials file not found")
    trials = []
    for lineno, fields, _ in scan_table(path, 3, 3, unique=False):
        if fields[2] not in _LABELS:
            raise DataError(f"{path}:{lineno}: label must be 'target' or 'nontarget', got {fields[2]!r}")
        trials.append((fields[0], fields[1], _LABELS[fields[2]]))
    if not trials:
        raise DataError(f"{path}: no trials")
    return trials


def read_vectors(scp):
    """Read a Kaldi vector scp -> ``{key: float32 (D,)}``; all vectors must have one dimension.

    A ``1 x D`` matrix is accepted as a vector; anything else is a DataError naming the scp.
    """
    scp = os.fspath(scp)
    if not os.path.isfile(scp):
        raise DataError(f"{scp}: vector scp not found")
    reader = FeatReader(scp)
    vectors, dim = {}, None
    with reader:
        for key in reader.keys():
            v = reader[key]
            if v.ndim == 2 and v.shape[0] == 1:
                v = v[0]
            if v.ndim != 1:
                raise DataError(f"{scp}: {key!r} is a {v.shape} matrix, not a vector")
            if dim is None:
                dim = v.shape[0]
            elif v.shape[0] != dim:
                raise DataError(f"{scp}: {key!r} has dimension {v.shape[0]}, earlier vectors {dim}")
            vectors[key] = v
    if not vectors:
        raise DataError(f"{scp}: no vectors")
    return vectors


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


def _require(keys, available, what, trials_path):
    missing = sorted(set(k for k in keys if k not in available))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{trials_path}: {len(missing)} {what} have no vector: {shown}")


def score_trials(trials, vectors, backend, enroll_vectors=None, enroll_spk2utt=None,
                 trials_path="trials", chunk=100000):
    """Score ``trials`` [(enroll, test, is_target)] -> float64 array (n_trials,).

    Test ids are keys of ``vectors``. Enroll ids are utterance keys of ``enroll_vectors``
    (default ``vectors``), or speakers of ``enroll_spk2utt`` ({spk: [utt, ...]}), whose model is
    the mean of their utterances' transformed vectors (PLDA scores it with n_enroll = #utts).
    Missing vectors or speakers raise DataError naming ``trials_path``.
    """
    enroll_src = vectors if enroll_vectors is None else enroll_vectors
    enroll_ids = sorted(set(t[0] for t in trials))
    test_ids = sorted(set(t[1] for t in trials))
    _require(test_ids, vectors, "test utterance(s)", trials_path)
    if enroll_spk2utt is None:
        _require(enroll_ids, enroll_src, "enroll utterance(s)", trials_path)
        models = backend.transform(np.stack([enroll_src[k] for k in enroll_ids]))
        n_enroll = np.ones(len(enroll_ids))
    else:
        missing = sorted(set(enroll_ids) - set(enroll_spk2utt))
        if missing:
            raise DataError(f"{trials_path}: {len(missing)} enroll speaker(s) are not in the "
                            f"enrollment spk2utt: {', '.join(missing[:5])}")
        utts = [u for s in enroll_ids for u in enroll_spk2utt[s]]
        _require(utts, enroll_src, "enrollment utterance(s) (from spk2utt)", trials_path)
        x = backend.transform(np.stack([enroll_src[u] for u in utts]))
        n_enroll = np.array([len(enroll_spk2utt[s]) for s in enroll_ids], dtype=np.float64)
        starts = np.concatenate([[0], np.cumsum(n_enroll)[:-1]]).astype(np.int64)
        models = np.add.reduceat(x, starts, axis=0) / n_enroll[:, None]
    tests = backend.transform(np.stack([vectors[k] for k in test_ids]))
    e_pos = {k: i for i, k in enumerate(enroll_ids)}
    t_pos = {k: i for i, k in enumerate(test_ids)}
    ei = np.array([e_pos[t[0]] for t in trials])
    ti = np.array([t_pos[t[1]] for t in trials])
    scores = np.empty(len(trials))
    for lo in range(0, len(trials), chunk):
        e, t = ei[lo:lo + chunk], ti[lo:lo + chunk]
        scores[lo:lo + chunk] = backend.score_transformed(models[e], tests[t], n_enroll[e])
    return scores


def evaluate(scores, labels):
    """Metrics of ``scores`` (n,) with boolean ``labels`` (n,): EERs in percent, minDCF normalized.

    ``eer``: Kaldi compute-eer (exact); ``eer_interp``: ROC-crossing EER; ``mindcf_p0.01`` /
    ``mindcf_p0.001``: minDCF with Cmiss = Cfa = 1 at P_target 0.01 / 0.001.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    tar, non = scores[labels], scores[~labels]
    if tar.size == 0 or non.size == 0:
        raise DataError(f"need target and nontarget trials, got {tar.size} target and "
                        f"{non.size} nontarget")
    return {
        "eer": 100.0 * eer_kaldi(tar, non)[0],
        "eer_interp": 100.0 * eer_interp(tar, non),
        "mindcf_p0.01": min_dcf(tar, non, 0.01)[0],
        "mindcf_p0.001": min_dcf(tar, non, 0.001)[0],
        "n_target": int(tar.size),
        "n_nontarget": int(non.size),
    }


def _training_set(train_vectors_scp, train_utt2spk):
    """Training matrix (n, D) and speaker labels (or None) from an scp and optional utt2spk."""
    vectors = read_vectors(train_vectors_scp)
    if train_utt2spk is None:
        keys = sorted(vectors)
        return np.stack([vectors[k] for k in keys]), None
    utt2spk = read_kv(train_utt2spk, max_fields=2)
    keys = sorted(set(vectors) & set(utt2spk))
    if not keys:
        raise DataError(f"{train_vectors_scp}: no vector has a speaker in {train_utt2spk}")
    if len(keys) < len(vectors) or len(keys) < len(utt2spk):
        log.warning("training on %d vectors: %d vectors have no speaker in %s, %d utterances "
                    "there have no vector", len(keys), len(vectors) - len(keys), train_utt2spk,
                    len(utt2spk) - len(keys))
    return np.stack([vectors[k] for k in keys]), [utt2spk[k] for k in keys]


def score_sv(trials_path, vectors_scp, backend, out_dir, train_vectors=None, train_utt2spk=None,
             lda_dim=200, enroll_vectors=None, enroll_spk2utt=None):
    """Fit ``backend`` ('cosine' | 'plda'), score the trials, write ``out_dir/scores`` and
    ``out_dir/results.json``; return the results dict.

    Scores are written as ``enroll test score`` with 6 decimals, and the metrics are computed
    from exactly those written values, so ``compute-eer`` on the scores file agrees with ``eer``.
    """
    if backend not in ("cosine", "plda"):
        raise ConfigError(f"unknown backend {backend!r} (expected cosine or plda)")
    if train_utt2spk is not None and train_vectors is None:
        raise ConfigError("--train-utt2spk given without --train-vectors")
    if backend == "plda" and (train_vectors is None or train_utt2spk is None):
        raise ConfigError("the plda backend needs --train-vectors and --train-utt2spk "
                          "(training vectors with speaker labels)")
    trials = read_trials(trials_path)
    labels = [t[2] for t in trials]
    if all(labels) or not any(labels):
        raise DataError(f"{trials_path}: needs both target and nontarget trials")
    vectors = read_vectors(vectors_scp)
    dims = {vectors_scp: len(next(iter(vectors.values())))}
    if train_vectors is not None:
        x, spk = _training_set(train_vectors, train_utt2spk)
        dims[train_vectors] = x.shape[1]
    enroll = None if enroll_vectors is None else read_vectors(enroll_vectors)
    if enroll is not None:
        dims[enroll_vectors] = len(next(iter(enroll.values())))
    if len(set(dims.values())) > 1:
        raise DataError("vector dimensions differ: "
                        + ", ".join(f"{p}: {d}" for p, d in dims.items()))
    model = CosineBackend() if backend == "cosine" else PLDABackend(lda_dim=lda_dim)
    if train_vectors is not None:
        model.fit(x, spk)
    spk2utt = None if enroll_spk2utt is None else read_table(enroll_spk2utt)
    scores = score_trials(trials, vectors, model, enroll, spk2utt, trials_path=trials_path)
    lines = [f"{e} {t} {s:.6f}" for (e, t, _), s in zip(trials, scores)]
    written = [float(line.rsplit(" ", 1)[1]) for line in lines]
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "scores"), "\n".join(lines) + "\n")
    results = evaluate(written, labels)
    results["backend"] = backend
    if backend == "plda":
        results["lda_dim"] = int(model.lda.shape[1])
    results["inputs"] = {
        "trials": os.path.abspath(trials_path),
        "vectors": os.path.abspath(vectors_scp),
        "train_vectors": train_vectors and os.path.abspath(train_vectors),
        "train_utt2spk": train_utt2spk and os.path.abspath(train_utt2spk),
        "enroll_vectors": enroll_vectors and os.path.abspath(enroll_vectors),
        "enroll_spk2utt": enroll_spk2utt and os.path.abspath(enroll_spk2utt),
    }
    results["definitions"] = {
        "eer": "percent; Kaldi compute-eer on the written scores (step rule, ties count as errors)",
        "eer_interp": "percent; ROC crossing Pmiss = Pfa, linear between operating points",
        "mindcf": "min over thresholds of (Pmiss*P + Pfa*(1-P)) / min(P, 1-P), Cmiss = Cfa = 1",
    }
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def baseline_vector(feats):
    """Per-utterance baseline vector (2D,): frame mean then frame std of ``feats`` (T, D)."""
    x = np.asarray(feats, dtype=np.float64)
    return np.concatenate([x.mean(axis=0), x.std(axis=0)])


def extract_baseline(data_dir, out_dir, stats=None):
    """Write baseline vectors (fbank mean + std) of ``data_dir/feats.scp`` to ``out_dir/vectors.{ark,scp}``.

    With ``stats`` (an npz with per-dim ``mean`` and ``var``), frames are normalized by the
    global stats first. Returns the number of utterances written.
    """
    feats_scp = os.path.join(data_dir, "feats.scp")
    if not os.path.isfile(feats_scp):
        raise DataError(f"{feats_scp}: not found (compute features for {data_dir} first)")
    mean = std = None
    if stats is not None:
        try:
            with np.load(stats) as z:
                mean, var = np.asarray(z["mean"], np.float64), np.asarray(z["var"], np.float64)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{stats}: cannot read stats (npz with arrays 'mean', 'var'): {e}") from None
        if mean.ndim != 1 or mean.shape != var.shape:
            raise DataError(f"{stats}: mean {mean.shape} and var {var.shape} must be equal 1-D shapes")
        std = np.sqrt(np.maximum(var, 1e-10))
    n = 0
    with FeatReader(feats_scp) as reader, ArkScpWriter(
        os.path.join(out_dir, "vectors.ark"), os.path.join(out_dir, "vectors.scp")
    ) as writer:
        for utt in sorted(reader.keys()):
            x = reader[utt]
            if x.ndim != 2 or x.shape[0] == 0:
                raise DataError(f"{feats_scp}: utterance {utt!r} has no frames (shape {x.shape})")
            if mean is not None:
                if x.shape[1] != mean.size:
                    raise DataError(f"{feats_scp}: utterance {utt!r} has dimension {x.shape[1]}, "
                                    f"{stats} has {mean.size}")
                x = (x - mean) / std
            writer.write(utt, baseline_vector(x))
            n += 1
    return n
