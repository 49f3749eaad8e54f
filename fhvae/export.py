"""Export latents of a trained FHVAE as Kaldi ark/scp (absolute paths).

For each utterance of T frames (normalized with the training stats):
- z1, z2 at frame rate: posterior means (T, z_dim) of the T - seg_len + 1 shift-1 windows of
  seg_len frames, padded to T rows by repeating the first latent seg_len//2 - 1 times and the last
  seg_len//2 times (9 and 10 for 20-frame segments), as the 2017 code's ``_pad_feats``: row t is the
  latent of the window centred on frame t. An utterance shorter than seg_len is edge-padded to one
  window whose latent is repeated T times. Kaldi float matrices (FM).
- optional log-variances z1_logvar, z2_logvar (FM).
- s-vector: MAP estimate of mu2 over the utterance's N segments starting every data.svector_shift
  frames (20: non-overlapping, as the 2017 eval code), sum_n zbar2_n / (N + sigma_z2^2); Kaldi
  float vector (FV).
- per speaker: mean of its s-vectors (spk_svector, FV) and num_utts.ark (text: ``spk count``).
"""
import contextlib
import logging
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from fhvae.config import read_exp_config
from fhvae.data.loader import UttReader
from fhvae.data.sampler import fixed_segments
from fhvae.errors import ConfigError, DataError
from fhvae.features.stats import load_stats
from fhvae.io.ark import ArkScpWriter
from fhvae.io.atomic import atomic_write_text
from fhvae.io.datadir import read_kv, utt2spk_to_spk2utt
from fhvae.data.index import UttIndex
from fhvae.models import losses
from fhvae.models.fhvae import FHVAE, inference_batch
from fhvae.train.checkpoint import load_model_weights

log = logging.getLogger(__name__)


def load_model(exp_dir, which="best", device="cpu"):
    """(model in eval mode, Config, stats) of a trained exp dir."""
    cfg, extra = read_exp_config(exp_dir)
    model = FHVAE(cfg.model)
    model.load_state_dict(load_model_weights(exp_dir, which))
    model.to(device).eval()
    return model, cfg, load_stats(extra["stats"])


def frame_windows(x, seg_len):
    """Shift-1 windows: x (T, D) -> (max(T - seg_len + 1, 1), seg_len, D); a short x is edge-padded."""
    if len(x) < seg_len:
        x = torch.cat([x, x[-1:].expand(seg_len - len(x), -1)])
    return x.unfold(0, seg_len, 1).transpose(1, 2)


def pad_latents(z, num_frames, seg_len):
    """Window latents z (W, d) -> frame latents (num_frames, d): the first repeated seg_len//2 - 1
    times on the left, the last seg_len//2 times on the right (the 2017 code), cut to num_frames."""
    left = seg_len // 2 - 1
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


class Exporter:
    """Computes latents for many utterances, batching windows of several utterances together."""

    def __init__(self, model, cfg, device="cpu", batch_windows=None, frames=True):
        self.model, self.cfg, self.device = model, cfg, device
        self.batch = batch_windows or inference_batch(device)
        self.frames = frames   # False: s-vectors only (no frame-rate windows: ~20x less work)

    @torch.inference_mode()
    def encode(self, utts):
        """utts: list of (T_i, D) float32 tensors -> list of dicts with z1, z2, z1_logvar, z2_logvar
        (T_i, z_dim) and svector (z2_dim,). Windows of all given utterances are run in chunks."""
        L, shift = self.cfg.data.seg_len, self.cfg.data.svector_shift
        wins = [frame_windows(x, L) for x in utts] if self.frames else []
        segs = [segment_windows(x, L, shift) for x in utts]
        allw = torch.cat(wins + segs)
        outs = {k: [] for k in ("z1", "z1_logvar", "z2", "z2_logvar")}
        for i in range(0, len(allw), self.batch):
            w = allw[i:i + self.batch].to(self.device)
            z2_mu, z2_lv = self.model.encode_z2(w)
            z1_mu, z1_lv = self.model.encode_z1(w, z2_mu)
            if z1_lv is None:   # vq z1: deterministic (zero variance)
                z1_lv = torch.full_like(z1_mu, float("-inf"))
            for k, v in zip(outs, (z1_mu, z1_lv, z2_mu, z2_lv)):
                outs[k].append(v.float().cpu())
        outs = {k: torch.cat(v) for k, v in outs.items()}
        res, pos = [{} for _ in utts], 0
        for r, x, w in zip(res, utts, wins):  # no windows without self.frames
            r.update({k: pad_latents(outs[k][pos:pos + len(w)], len(x), L).numpy() for k in outs})
            pos += len(w)
        prior_var = self.cfg.model.z2_prior_var
        for r, s in zip(res, segs):
            z2s = outs["z2"][pos:pos + len(s)]
            pos += len(s)
            r["svector"] = losses.map_mu2(z2s.sum(0), float(len(s)), prior_var).numpy()
        return res


def export(exp_dir, data_dir, out_dir, *, which="best", device="cpu", logvars=False,
           batch_windows=None, max_bad=0.05, svectors_only=False, svector_shift=None):
    """Write z1/z2 (+ log-variances), svector, spk_svector, num_utts.ark for a data dir.

    ``svectors_only`` skips the frame-level z1/z2 (for large training sets that only feed a
    speaker-verification backend). ``svector_shift`` (frames) overrides the exp's data.svector_shift.

    Returns a summary dict (utterances, frames, svector_shift, seconds, frames/s, real-time factor).
    """
    model, cfg, stats = load_model(exp_dir, which, device)
    if svector_shift is not None:
        cfg.data.svector_shift = svector_shift
        cfg.validate()   # the config's own checks (svector_shift >= 1)
    index = UttIndex.from_data_dir(data_dir)
    if len(stats.mean) != cfg.model.feat_dim:
        raise DataError(f"{exp_dir}: stats dim {len(stats.mean)} != model.feat_dim {cfg.model.feat_dim}")
    if logvars and model.vq is not None:
        raise ConfigError(f"{exp_dir}: --logvars: a vq z1 (model.z1_bottleneck=vq) has no log-variance")
    utt2spk = read_kv(os.path.join(data_dir, "utt2spk"))
    loader = UttReader(index, stats, cfg.model.feat_dim)
    batch_windows = batch_windows or inference_batch(device)
    exporter = Exporter(model, cfg, device, batch_windows, frames=not svectors_only)
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    names = [] if svectors_only else ["z1", "z2"] + (["z1_logvar", "z2_logvar"] if logvars else [])
    svec, frames, t0 = {}, 0, time.time()
    pending, budget = [], 0

    def flush():
        nonlocal frames
        res = exporter.encode([torch.from_numpy(x) for _, x in pending])
        for (name, x), r in zip(pending, res):
            for n in names:
                writers[n].write(name, r[n])
            writers["svector"].write(name, r["svector"])
            svec[name] = r["svector"]
            frames += len(x)
        pending.clear()

    # every ark/scp is renamed into place only when the block exits cleanly: all or nothing
    with contextlib.ExitStack() as stack:
        stack.callback(loader.close)
        writers = {n: stack.enter_context(ArkScpWriter(f"{out_dir}/{n}.ark", f"{out_dir}/{n}.scp"))
                   for n in names + ["svector"]}
        for i in tqdm(range(len(index)), desc="export", unit="utt", mininterval=2.0):
            x = loader.load(i)
            if x is None:
                continue
            pending.append((index.name(i), x))
            budget += len(x)
            if budget >= batch_windows:
                flush()
                budget = 0
        if pending:
            flush()
        if len(loader.bad) > max_bad * len(index):
            raise DataError(f"{data_dir}: {len(loader.bad)} of {len(index)} utterances broken (more "
                            f"than {max_bad:.0%}); first: {next(iter(loader.bad.values()))}")
    _write_speaker_vectors(out_dir, svec, utt2spk)
    secs = time.time() - t0
    shift = _frame_shift(data_dir)
    summary = {"utts": len(svec), "skipped": len(loader.bad), "frames": frames,
               "svector_shift": cfg.data.svector_shift, "seconds": round(secs, 2),
               "frames_per_s": round(frames / max(secs, 1e-9), 1),
               "rtf": round(secs / max(frames * shift, 1e-9), 5)}
    if loader.bad:
        log.warning("export skipped %d broken utterances: %s", len(loader.bad), ", ".join(
            index.name(i) for i in sorted(loader.bad)[:10]))
    log.info("exported %d utterances (%d frames) in %.1f s: %.0f frames/s, real-time factor %.4f",
             summary["utts"], frames, secs, summary["frames_per_s"], summary["rtf"])
    return summary


def _frame_shift(data_dir):
    p = os.path.join(data_dir, "frame_shift")
    if os.path.isfile(p):
        with open(p) as f:
            return float(f.read().split()[0])
    return 0.01


def _write_speaker_vectors(out_dir, svec, utt2spk):
    """spk_svector (mean s-vector of each speaker's utterances, FV) and num_utts.ark (text)."""
    spk2utt = utt2spk_to_spk2utt({u: utt2spk[u] for u in svec if u in utt2spk})
    with ArkScpWriter(f"{out_dir}/spk_svector.ark", f"{out_dir}/spk_svector.scp") as w:
        for spk in sorted(spk2utt):
            w.write(spk, np.mean([svec[u] for u in spk2utt[spk]], axis=0).astype(np.float32))
    atomic_write_text(f"{out_dir}/num_utts.ark",
                      "".join(f"{spk} {len(spk2utt[spk])}\n" for spk in sorted(spk2utt)))
