"""Global per-dimension feature mean and variance (the normalization of the training set).

Accumulated in float64, one utterance at a time (never the whole set in memory), merging per-utterance mean and sum of squared deviations (Chan et al.), which
stays accurate for any number of frames. ``var`` is the population variance (ddof = 0).
Saved as ``stats.npz`` with arrays ``mean`` (D,), ``var`` (D,), ``count`` (frames), ``dim``.
Broken utterances (unreadable, NaN/inf) are skipped with a warning up to a fraction ``max_bad``,
as in training and export.
"""
import contextlib
import logging
import os
import time
import zipfile
from dataclasses import dataclass

import numpy as np

from fhvae.errors import DataError
from fhvae.io.ark import MatrixReader, scp_entries
from fhvae.io.atomic import atomic_open

log = logging.getLogger(__name__)

VAR_FLOOR = 1e-8


@dataclass
class Stats:
    """Per-dimension ``mean`` (D,) and ``var`` (D,) float64 over ``count`` frames."""
    mean: np.ndarray
    var: np.ndarray
    count: int

    @property
    def dim(self):
        return int(self.mean.shape[0])

    def normalize(self, x):
        """``(x - mean) / sqrt(max(var, 1e-8))`` as float32; ``x`` is (..., D)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.dim:
            raise DataError(f"cannot normalize features of dim {x.shape[-1]} with stats of dim {self.dim}")
        scale = (1.0 / np.sqrt(np.maximum(self.var, VAR_FLOOR))).astype(np.float32)
        return (x - self.mean.astype(np.float32)) * scale

    def unnormalize(self, x):
        """Inverse of ``normalize``: ``x * sqrt(max(var, 1e-8)) + mean`` as float32; ``x`` is (..., D)."""
        return (x * np.sqrt(np.maximum(self.var, VAR_FLOOR)) + self.mean).astype(np.float32)

    def save(self, path):
        """Write ``path`` (.npz) atomically."""
        with atomic_open(path, "wb") as f:
            np.savez(f, mean=self.mean, var=self.var, count=np.int64(self.count),
                     dim=np.int64(self.dim))


def load_stats(path):
    """Read a ``stats.npz`` written by ``Stats.save`` -> Stats (DataError if missing/bad)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            mean, var, count, dim = (z[k] for k in ("mean", "var", "count", "dim"))
    except FileNotFoundError:
        raise DataError(f"{path}: stats file not found (run fhvae-compute-stats)") from None
    except KeyError as e:
        raise DataError(f"{path}: not a stats file (missing array {e})") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read stats: {e}") from None
    if mean.shape != (int(dim),) or var.shape != (int(dim),) or not (var >= 0).all():
        raise DataError(f"{path}: inconsistent stats (mean {mean.shape}, var {var.shape}, dim {dim})")
    return Stats(mean.astype(np.float64), var.astype(np.float64), int(count))


def _read_checked(reader, entries, feats_scp, utt):
    """Matrix of ``utt``; DataError naming the scp line, utterance and ark if unreadable or NaN/inf."""
    lineno, (ark, offset, rows) = entries[utt]
    x = reader.read(ark, offset, f"{feats_scp}:{lineno}: utt {utt!r}", rows)
    if not np.isfinite(x).all():
        raise DataError(f"{feats_scp}:{lineno}: utt {utt!r} has NaN/inf values (ark {ark}:{offset or 0})")
    return x


def compute_stats(feats_scp, utts=None, max_bad=0.05):
    """Mean/variance over all frames of ``utts`` (default: every entry) of ``feats_scp``.

    Utterances that cannot be read or hold NaN/inf are skipped with a warning naming the
    utterance and ark, as training and export skip them; more than ``max_bad`` (a fraction of
    ``utts``) broken stops with a DataError naming the first.
    """
    entries = {key: (lineno, entry) for lineno, key, entry in scp_entries(os.fspath(feats_scp))}
    if utts is None:
        utts = list(entries)
    missing = [u for u in utts if u not in entries]
    if missing:
        raise DataError(f"{feats_scp}: no features for {len(missing)} utterance(s), "
                        f"e.g. {missing[0]!r}")
    bad = []
    count, mean, m2, dim_from = 0, None, None, None
    last_log = time.monotonic()
    with contextlib.closing(MatrixReader()) as reader:
        for i, utt in enumerate(utts, 1):
            try:
                x = _read_checked(reader, entries, feats_scp, utt)
            except DataError as e:
                bad.append(str(e))
                log.warning("skipping broken utterance: %s", e)
                if len(bad) > max_bad * len(utts):
                    raise DataError(f"{feats_scp}: {len(bad)} of {len(utts)} utterances are broken (more than "
                                    f"the fraction max_bad_utts={max_bad:g}); first: {bad[0]}") from None
                continue
            if x.ndim != 2:
                raise DataError(f"{feats_scp}: utt {utt!r}: expected a matrix, got shape {x.shape}")
            if mean is None:
                mean, m2, dim_from = np.zeros(x.shape[1]), np.zeros(x.shape[1]), utt
            if x.shape[1] != mean.shape[0]:
                raise DataError(f"{feats_scp}: utt {utt!r} has dim {x.shape[1]}, but utt "
                                f"{dim_from!r} has dim {mean.shape[0]}")
            n = x.shape[0]
            if n == 0:
                continue
            x = x.astype(np.float64)
            m_u = x.mean(axis=0)
            m2_u = ((x - m_u) ** 2).sum(axis=0)
            total = count + n
            delta = m_u - mean
            mean += delta * (n / total)
            m2 += m2_u + delta ** 2 * (count * n / total)
            count = total
            if time.monotonic() - last_log > 30:
                log.info("%d/%d utterances, %d frames", i, len(utts), count)
                last_log = time.monotonic()
    if bad:
        log.warning("%s: skipped %d of %d utterances as broken (NaN/inf or unreadable); first: %s",
                    feats_scp, len(bad), len(utts), bad[0])
    if count == 0:
        raise DataError(f"{feats_scp}: no frames to compute statistics from")
    return Stats(mean, m2 / count, count)


def compute_data_dir_stats(data_dir, out=None, max_bad=0.05):
    """Stats of ``<data_dir>/feats.scp`` written to ``out`` (default ``<data_dir>/stats.npz``).

    ``max_bad``: fraction of broken utterances skipped before stopping (see compute_stats).
    """
    scp = os.path.join(data_dir, "feats.scp")
    if not os.path.isfile(scp):
        raise DataError(f"{scp}: not found (run fhvae-compute-fbank first)")
    stats = compute_stats(scp, max_bad=max_bad)
    out = out or os.path.join(data_dir, "stats.npz")
    stats.save(out)
    log.info("wrote %s: %d frames, dim %d, mean in [%.3f, %.3f], var in [%.3g, %.3g]", out,
             stats.count, stats.dim, stats.mean.min(), stats.mean.max(), stats.var.min(),
             stats.var.max())
    return stats
