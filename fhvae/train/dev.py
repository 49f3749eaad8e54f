"""Training and dev sets of fhvae-train: the utterance index of a data dir and the dev lower bound."""
import logging

import numpy as np
import torch

from fhvae import infer
from fhvae.data.index import UttIndex
from fhvae.data.loader import UttReader
from fhvae.data.sampler import fixed_segments
from fhvae.errors import DataError
from fhvae.io.ark import MatrixReader

log = logging.getLogger(__name__)


def load_set(data_dir, seg_len):
    """UttIndex of a data dir without the sequences shorter than one segment (count logged)."""
    index = UttIndex.from_data_dir(data_dir)
    short = index.nframes < seg_len
    if short.any():
        log.warning("%s: skipping %d of %d utterances shorter than one segment (%d frames), e.g. %s",
                    data_dir, int(short.sum()), len(index), seg_len, index.name(int(np.flatnonzero(short)[0])))
        index = index.subset(~short)
    if len(index) == 0:
        raise DataError(f"{data_dir}: no utterance is at least {seg_len} frames long")
    return index


def check_feat_dim(index, feat_dim, data_dir):
    """DataError when the first utterance of ``index`` (its header only) has not ``feat_dim`` columns:
    one message instead of every utterance skipped as broken. An unreadable one is left to the reader."""
    if len(index) == 0:
        return
    path, offset, rows = index.entry(0)
    reader = MatrixReader()
    try:
        shape = reader.shape(path, offset, rows=rows)
    except DataError:
        return
    finally:
        reader.close()
    if len(shape) == 2 and shape[1] != feat_dim:
        raise DataError(f"model.feat_dim={feat_dim} but {data_dir}/feats.scp has dim {shape[1]}")


class DevSet:
    """Dev sequences loaded once (all, or a seeded sample of ``max_utts``): segments every ``shift`` frames."""

    def __init__(self, data_dir, stats, seg_len, shift, feat_dim, max_utts=0, seed=0):
        index = load_set(data_dir, seg_len)
        check_feat_dim(index, feat_dim, data_dir)
        if 0 < max_utts < len(index):   # a fixed, seeded sample keeps memory bounded on large dev sets
            keep = np.sort(np.random.default_rng(seed).choice(len(index), max_utts, replace=False))
            log.info("%s: dev bound on %d of %d utterances (data.dev_max_utts)", data_dir, max_utts, len(index))
            index = index.subset(keep)
        reader = UttReader(index, stats, feat_dim)
        segs, seq = [], []
        for i in range(len(index)):
            x = reader.load(i)
            if x is None:
                continue
            starts = fixed_segments(len(x), seg_len, shift)
            segs.append(np.stack([x[s:s + seg_len] for s in starts]))
            seq.append(np.full(len(starts), len(seq)))
        reader.close()
        if not segs:
            raise DataError(f"{data_dir}: no usable dev utterance")
        self.x = torch.from_numpy(np.concatenate(segs))
        self.seq = torch.from_numpy(np.concatenate(seq))
        self.n_seqs = len(segs)

    @torch.no_grad()
    def bound(self, model, device, seed):
        """Mean segment lower bound (nats/segment) and its terms, mu2 = each sequence's MAP estimate,
        plus the variants' dev metrics (e.g. vq codebook usage)."""
        torch.manual_seed(seed)
        x, seq = self.x.to(device), self.seq.to(device)
        n = torch.bincount(seq, minlength=self.n_seqs)
        mu2 = infer.svectors(infer.encode(model, x, z1=False)["z2_mu"], seq, self.n_seqs, model.cfg.z2_prior_var)
        tot = {}
        for i in range(0, len(x), 1024):
            xb, sb = x[i:i + 1024], seq[i:i + 1024]
            out = model(xb)
            for k, v in model.segment_terms(out, xb, mu2[sb], n[sb].float()).items():
                tot[k] = tot.get(k, 0.0) + float(v.sum())
            for v in model.variants:
                v.dev_batch(out)
        res = {k: v / len(x) for k, v in tot.items()}
        for v in model.variants:
            res.update(v.dev_stats())
        return res
