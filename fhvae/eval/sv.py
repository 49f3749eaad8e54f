"""Speaker verification: trials, scoring with a backend (fhvae/eval/backends.py: cosine, LDA + PLDA),
evaluation, baseline vectors.

Works on any Kaldi vector scp (``FV`` entries): our s-vectors, Kaldi x-vectors or i-vectors.
"""
import json
import logging
import os

import numpy as np

from fhvae.errors import ConfigError, DataError
from fhvae.eval.backends import CosineBackend, PLDABackend
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
