"""fhvae-export: latents of a trained FHVAE for a data dir, as Kaldi ark/scp (absolute paths).

Per utterance (normalized with the training stats; fhvae/infer.py defines the latents):
- z1, z2 at frame rate (T, z_dim), posterior means of the shift-1 windows, padded as the 2017 code;
  optional log-variances z1_logvar, z2_logvar. Kaldi float matrices (FM).
- svector: MAP estimate of mu2 over the segments every data.svector_shift frames (FV).
Per speaker: the mean of its s-vectors (spk_svector, FV) and num_utts.ark (text: ``spk count``).
"""
import contextlib
import logging
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from fhvae import infer
from fhvae.data.index import UttIndex
from fhvae.data.loader import UttReader
from fhvae.errors import ConfigError, DataError
from fhvae.io.ark import ArkScpWriter
from fhvae.io.atomic import atomic_write_text
from fhvae.io.tables import read_kv, utt2spk_to_spk2utt
from fhvae.train.dev import check_feat_dim
from fhvae.train.distributed import check_device

log = logging.getLogger(__name__)


def export(exp_dir, data_dir, out_dir, *, which="best", device="cpu", logvars=False,
           batch_windows=None, max_bad=0.05, svectors_only=False, svector_shift=None):
    """Write z1/z2 (+ log-variances), svector, spk_svector, num_utts.ark for a data dir.

    ``svectors_only`` skips the frame-level z1/z2 (for large training sets that only feed a
    speaker-verification backend). ``svector_shift`` (frames) overrides the exp's data.svector_shift.

    Returns a summary dict (utterances, frames, svector_shift, seconds, frames/s, real-time factor).
    """
    check_device(device, "--device", "--device")
    model, cfg, stats = infer.load_model(exp_dir, which, device)
    if svector_shift is not None:
        cfg.data.svector_shift = svector_shift
        cfg.validate()   # the config's own checks (svector_shift >= 1)
    index = UttIndex.from_data_dir(data_dir)
    if len(stats.mean) != cfg.model.feat_dim:
        raise DataError(f"{exp_dir}: stats dim {len(stats.mean)} != model.feat_dim {cfg.model.feat_dim}")
    check_feat_dim(index, cfg.model.feat_dim, data_dir)
    if logvars and model.z1_logvar is None:
        raise ConfigError(f"{exp_dir}: --logvars: a vq z1 (model.z1_bottleneck=vq) has no log-variance")
    utt2spk = read_kv(os.path.join(data_dir, "utt2spk"))
    loader = UttReader(index, stats, cfg.model.feat_dim)
    batch_windows = batch_windows or infer.inference_batch(device)
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    names = [] if svectors_only else ["z1", "z2"] + (["z1_logvar", "z2_logvar"] if logvars else [])
    svec, frames, t0 = {}, 0, time.time()
    pending, budget = [], 0

    def flush():
        nonlocal frames
        res = infer.encode_utterances(model, [torch.from_numpy(x) for _, x in pending], cfg.data.seg_len,
                                      cfg.data.svector_shift, batch_windows, frames=not svectors_only)
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
