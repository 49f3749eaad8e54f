"""Inference with a trained FHVAE: load it, encode segments and utterances, decode latents, MAP s-vectors.

Used by export, plots, probes, convert and the trainer (cache MAP estimates, dev bound). Segments are
(N, T, F) normalized features; latents are posterior means (and log-variances) of q(z2 | x) and
q(z1 | x, z2 = posterior mean of z2).

Utterance latents (``encode_utterances``), for an utterance of T frames:
- z1, z2 at frame rate: the latents of the T - seg_len + 1 shift-1 windows of seg_len frames, padded
  to T rows by repeating the first latent (seg_len - 1)//2 times and the last seg_len//2 times (9 and 10
  for 20-frame segments, 10 and 10 for 21), as the 2017 code's ``_pad_feats``: row t is the latent of
  the window centred on frame t. An utterance shorter than seg_len is edge-padded to one window whose latent is repeated.
- s-vector: MAP estimate of mu2 over the utterance's N segments starting every ``svector_shift``
  frames, sum_n zbar2_n / (N + sigma_z2^2).
"""
import numpy as np
import torch

from fhvae.config import read_exp_config
from fhvae.data.sampler import fixed_segments
from fhvae.features.stats import load_stats
from fhvae.models import losses
from fhvae.models.fhvae import FHVAE
from fhvae.train.checkpoint import load_model_weights


def inference_batch(device):
    """Segments per forward pass when encoding without gradients: 512 on CPU, where buffers that fit
    the caches beat larger matrix products (~1.15x the segments/s of 4096 on the mini model), 4096 on
    a GPU."""
    return 512 if torch.device(device).type == "cpu" else 4096


def load_model(exp_dir, which="best", device="cpu"):
    """(model in eval mode, Config, Stats) of a trained exp dir; ``which``: best | last checkpoint."""
    cfg, extra = read_exp_config(exp_dir)
    model = FHVAE(cfg.model)
    model.load_state_dict(load_model_weights(exp_dir, which))
    model.to(device).eval()
    return model, cfg, load_stats(extra["stats"])


@torch.no_grad()
def encode(model, x, batch=None, z1=True):
    """Posterior means and log-variances of segments x (N, T, F) (tensor or array), in chunks of
    ``batch`` (inference_batch) moved to the model's device -> dict z2_mu, z2_logvar (N, z2_dim) and,
    with z1, z1_mu, z1_logvar (N, z1_dim) (-inf for a deterministic z1: vq), float32 on x's device."""
    x = torch.as_tensor(x, dtype=torch.float32)
    dev = next(model.parameters()).device
    batch = batch or inference_batch(dev)
    keys = ("z2_mu", "z2_logvar") + (("z1_mu", "z1_logvar") if z1 else ())
    outs = {k: [] for k in keys}
    for i in range(0, len(x), batch):
        w = x[i:i + batch].to(dev)
        z = model.encode_z2(w)
        if z1:
            z1_mu, z1_lv = model.encode_z1(w, z[0])
            z += (z1_mu, torch.full_like(z1_mu, float("-inf")) if z1_lv is None else z1_lv)
        for k, v in zip(keys, z):
            outs[k].append(v.float().to(x.device))
    dims = {"z2": model.cfg.z2_dim, "z1": model.cfg.z1_dim}
    return {k: torch.cat(v) if v else x.new_zeros(0, dims[k[:2]]) for k, v in outs.items()}


@torch.no_grad()
def decode(model, z1, z2, steps, batch=4096):
    """Decoder means: z1 (N, z1_dim), z2 (N, z2_dim) -> (N, steps, F) float32 numpy (normalized)."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(z1), batch):
        mu, _ = model.decode(torch.as_tensor(z1[i:i + batch]).to(dev), torch.as_tensor(z2[i:i + batch]).to(dev),
                             steps)
        out.append(mu.float().cpu().numpy())
    return np.concatenate(out)


def svectors(z2_mu, seq, n_seqs, prior_var):
    """MAP estimates of mu2 of ``n_seqs`` sequences from the posterior means z2_mu (S, D) of their
    segments, seq (S,) long the sequence of each: sum_n zbar2 / (N + prior_var) -> (n_seqs, D)."""
    sums = z2_mu.new_zeros(n_seqs, z2_mu.shape[1]).index_add_(0, seq, z2_mu)
    n = torch.bincount(seq, minlength=n_seqs).to(sums.dtype)
    return losses.map_mu2(sums, n[:, None], prior_var)


def frame_windows(x, seg_len):
    """Shift-1 windows: x (T, D) -> (max(T - seg_len + 1, 1), seg_len, D); a short x is edge-padded."""
    if len(x) < seg_len:
        x = torch.cat([x, x[-1:].expand(seg_len - len(x), -1)])
    return x.unfold(0, seg_len, 1).transpose(1, 2)


def pad_latents(z, num_frames, seg_len):
    """Window latents z (W, d) -> frame latents (num_frames, d): the first repeated (seg_len - 1)//2
    times on the left, the last seg_len//2 times on the right (the 2017 code), cut to num_frames."""
    left = (seg_len - 1) // 2
    right = num_frames - len(z) - left
    if right < 0:  # shorter than seg_len: one window for every frame
        return z[:1].expand(num_frames, -1)
    return torch.cat([z[:1].expand(left, -1), z, z[-1:].expand(right, -1)])


def segment_windows(x, seg_len, shift):
    """Segments at 0, shift, 2*shift, ... for the s-vector: (N, seg_len, D); a short utterance is
    edge-padded to one segment."""
    if len(x) < seg_len:
        x = torch.cat([x, x[-1:].expand(seg_len - len(x), -1)])
    starts = fixed_segments(len(x), seg_len, shift)
    return torch.stack([x[s:s + seg_len] for s in starts])


@torch.inference_mode()
def encode_utterances(model, utts, seg_len, svector_shift, batch=None, frames=True):
    """utts: list of (T_i, F) float32 tensors -> list of dicts: z1, z2, z1_logvar, z2_logvar (T_i, z_dim)
    frame-level (module doc; only with ``frames``) and svector (z2_dim,), numpy. The windows of all
    given utterances are encoded together in chunks of ``batch``."""
    wins = [frame_windows(x, seg_len) for x in utts] if frames else []
    segs = [segment_windows(x, seg_len, svector_shift) for x in utts]
    z = encode(model, torch.cat(wins + segs), batch)
    z = {"z1": z["z1_mu"], "z1_logvar": z["z1_logvar"], "z2": z["z2_mu"], "z2_logvar": z["z2_logvar"]}
    res, pos = [{} for _ in utts], 0
    for r, x, w in zip(res, utts, wins):   # no windows without frames
        r.update({k: pad_latents(v[pos:pos + len(w)], len(x), seg_len).numpy() for k, v in z.items()})
        pos += len(w)
    for r, s in zip(res, segs):
        r["svector"] = losses.map_mu2(z["z2"][pos:pos + len(s)].sum(0), float(len(s)), model.cfg.z2_prior_var).numpy()
        pos += len(s)
    return res
