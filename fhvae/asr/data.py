"""Features of the transcribed utterances of a data dir, and their batches.

Features come from any frame-level feature scp (fbank, exported z1, ...) through ``FeatReader``,
as {utt: (T, D) float32}. Batches hold utterances of similar length, zero-padded to (B, T_max, D).
"""
import logging
import os
from typing import Dict, Optional

import numpy as np
import torch

from fhvae.asr.text import read_transcripts
from fhvae.errors import DataError
from fhvae.io.ark import FeatReader
from fhvae.io.tables import read_kv

log = logging.getLogger(__name__)

ALL_CONDS = "all"


def read_conditions(data_dir) -> Optional[Dict[str, str]]:
    """``<data_dir>/utt2cond`` -> {utt: condition}, or None if the file is absent."""
    path = os.path.join(data_dir, "utt2cond")
    return read_kv(path, min_fields=2, max_fields=2) if os.path.isfile(path) else None


def load_features(feats_scp, utts, dim=None) -> Dict[str, np.ndarray]:
    """Read the ``utts`` (all must be in the scp) of ``feats_scp`` -> {utt: (T, D) float32}.

    DataError naming the utterance for a non-matrix, a dim other than ``dim`` (default: the
    first utterance's), or NaN/inf values. Utterances with 0 frames are skipped (logged).
    """
    out, dim_from, empty = {}, None, []
    with FeatReader(feats_scp) as reader:
        for utt in utts:
            x = reader[utt]
            if x.ndim != 2:
                raise DataError(f"{feats_scp}: utt {utt!r}: expected a (frames, dim) matrix, got shape {x.shape}")
            if dim is None:
                dim, dim_from = x.shape[1], utt
            if x.shape[1] != dim:
                other = f"utt {dim_from!r} has dim {dim}" if dim_from else f"the training features have dim {dim}"
                raise DataError(f"{feats_scp}: utt {utt!r} has dim {x.shape[1]}, but {other}")
            if not np.isfinite(x).all():
                raise DataError(f"{feats_scp}: utt {utt!r} has NaN/inf values")
            if x.shape[0] == 0:
                empty.append(utt)
                continue
            out[utt] = x
    if empty:
        log.warning("%s: skipping %d utterance(s) with 0 frames, e.g. %s", feats_scp, len(empty), empty[0])
    return out


def load_set(data_dir, feats_scp, cond=None, dim=None):
    """Transcribed utterances of ``data_dir`` with features in ``feats_scp``.

    ``cond``: keep only utterances of this condition (utt2cond; None or 'all': every one; no
    utt2cond: every one, logged). Returns ``(feats {utt: (T, D)}, text {utt: words},
    utt2cond or None)``, both dicts with the same keys in C order.
    """
    text = read_transcripts(data_dir)
    utt2cond = read_conditions(data_dir)
    if cond not in (None, ALL_CONDS):
        if utt2cond is None:
            log.info("%s: no utt2cond; using all %d utterances (not only %r ones)", data_dir, len(text), cond)
        else:
            n = len(text)
            text = {u: t for u, t in text.items() if utt2cond.get(u) == cond}
            if not text:
                found = ", ".join(sorted(set(utt2cond.values())))
                raise DataError(f"{os.path.join(data_dir, 'utt2cond')}: no transcribed utterance of condition "
                                f"{cond!r} (conditions: {found})")
            log.info("%s: %d of %d transcribed utterances are %r", data_dir, len(text), n, cond)
    if not os.path.isfile(feats_scp):
        raise DataError(f"{feats_scp}: feature scp not found")
    with FeatReader(feats_scp) as reader:
        missing = [u for u in text if u not in reader]
    if missing:
        log.warning("%s: %d of %d transcribed utterance(s) of %s have no features, skipped (e.g. %s)",
                    feats_scp, len(missing), len(text), data_dir, missing[0])
    utts = sorted(set(text) - set(missing))
    if not utts:
        raise DataError(f"{feats_scp}: none of the {len(text)} transcribed utterances of {data_dir} has features")
    feats = load_features(feats_scp, utts, dim=dim)
    if not feats:
        raise DataError(f"{feats_scp}: every utterance of {data_dir} has 0 frames")
    return feats, {u: text[u] for u in feats}, utt2cond


def batches(utts, lengths, batch_size, rng=None):
    """Lists of utterances of similar length (sorted, chunked); batch order shuffled by ``rng``."""
    order = sorted(utts, key=lambda u: (lengths[u], u))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


def pad(xs):
    """List of (T_i, D) arrays -> (B, T_max, D) float tensor, (B,) lengths."""
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[1])
    for i, x in enumerate(xs):
        out[i, :len(x)] = torch.from_numpy(x)
    return out, lengths


def spec_augment(x, rng, n_masks=2, max_dims=0.15, max_frames=0.1):
    """Copy of normalized ``x`` (T, D) with ``n_masks`` random bands of up to ``max_dims`` * D dims
    and ``n_masks`` spans of up to ``max_frames`` * T frames set to 0 (the mean)."""
    x = x.copy()
    T, D = x.shape
    for _ in range(n_masks):
        w = int(rng.integers(0, max(1, int(max_dims * D)) + 1))
        d0 = int(rng.integers(0, D - w + 1))
        x[:, d0:d0 + w] = 0.0
        w = int(rng.integers(0, max(1, int(max_frames * T)) + 1))
        t0 = int(rng.integers(0, T - w + 1))
        x[t0:t0 + w] = 0.0
    return x
