"""Speaker conversion in latent space: replace an utterance's sequence-level factor by a target
speaker's (``fhvae-convert``), decode, and write Kaldi features."""
import logging
import os

import numpy as np
import torch

from fhvae import infer
from fhvae.errors import DataError
from fhvae.eval.labels import centre_frame
from fhvae.io.ark import ArkScpWriter, FeatReader
from fhvae.io.atomic import atomic_write_text
from fhvae.datadir import load_data_dir
from fhvae.io.tables import read_kv

log = logging.getLogger(__name__)


def _windows(x, seg_len, mode):
    """Decoding windows of x (T, F): ``segment``: non-overlapping, the last one ending at frame T
    (edge-padded if T < seg_len) -> (windows (N, seg_len, F), starts); ``frame``: one window centred
    on every frame, the edges repeated ((seg_len - 1)//2 frames left, as the export) -> (windows (T, seg_len, F), None)."""
    if mode == "frame":
        left = (seg_len - 1) // 2
        xp = np.concatenate([np.repeat(x[:1], left, axis=0), x, np.repeat(x[-1:], seg_len - 1 - left, axis=0)])
        return infer.frame_windows(torch.from_numpy(xp), seg_len).numpy(), None
    T = len(x)
    if T < seg_len:
        x = np.concatenate([x, np.repeat(x[-1:], seg_len - T, axis=0)])
    starts = list(range(0, max(T - seg_len, 0) + 1, seg_len))
    if starts[-1] + seg_len < T:
        starts.append(T - seg_len)
    return np.stack([x[s:s + seg_len] for s in starts]), starts


def _svector(model, cfg, x):
    """The utterance's s-vector exactly as fhvae-export computes it (MAP estimate of mu2)."""
    return infer.encode_utterances(model, [torch.from_numpy(x)], cfg.data.seg_len, cfg.data.svector_shift,
                                   frames=False)[0]["svector"]


def convert_utterance(model, cfg, x, target_svector, mode="segment"):
    """Convert normalized features x (T, F) to the target speaker; returns normalized (T, F).

    With s_u the utterance's own s-vector and s_t the target's (the mean s-vector of the target
    speaker's utterances), every window w is decoded as

        x'(w) = E[p(x | z1 = zbar1(w), z2 = zbar2(w) + s_t - s_u)]

    where zbar2(w), zbar1(w) are the posterior means of q(z2 | w) and q(z1 | w, zbar2(w)): the
    sequence-level component of z2 (its prior mean) moves from s_u to s_t, the residual and z1 stay.
    ``segment`` decodes non-overlapping windows (the last one may overlap and overwrites);
    ``frame`` decodes a window centred on every frame and keeps its centre frame.
    """
    L = cfg.data.seg_len
    shift = np.asarray(target_svector, dtype=np.float32) - _svector(model, cfg, x)
    wins, starts = _windows(x, L, mode)
    z = infer.encode(model, wins)
    dec = infer.decode(model, z["z1_mu"], z["z2_mu"] + torch.from_numpy(shift), L)
    if mode == "frame":
        return dec[:, centre_frame(0, L)]
    out = np.empty((len(x), x.shape[1]), dtype=np.float32)
    for s, y in zip(starts, dec):
        out[s:s + L] = y[:len(x) - s]
    return out


def convert(exp_dir, data_dir, out_dir, svectors_scp, *, target_spk=None, src_utt2tgt=None, mode="segment",
            which="best", device="cpu"):
    """Convert the utterances of ``data_dir`` to target speakers (see ``convert_utterance``).

    Targets: ``target_spk`` for every utterance, or ``src_utt2tgt`` (a file ``<utt> <target-spk>``;
    only the listed utterances are converted). Target s-vectors come from ``svectors_scp`` (a
    spk_svector.scp of fhvae-export). Writes out_dir/feats.{ark,scp} (un-normalized, FM, as many
    frames as the input), utt2num_frames and utt2tgt. Returns the number of utterances.
    """
    if (target_spk is None) == (src_utt2tgt is None):
        raise DataError("convert: give exactly one of target_spk and src_utt2tgt")
    if mode not in ("segment", "frame"):
        raise DataError(f"convert: mode must be 'segment' or 'frame', got {mode!r}")
    model, cfg, stats = infer.load_model(exp_dir, which, device)
    dd = load_data_dir(data_dir)
    feats_scp = os.path.join(data_dir, "feats.scp")
    if dd.feats_scp is None:
        raise DataError(f"{feats_scp}: missing (compute features first)")
    if src_utt2tgt is not None:
        utt2tgt = read_kv(src_utt2tgt, min_fields=2, max_fields=2, check_sorted=False)
        unknown = [u for u in utt2tgt if u not in dd.feats_scp]
        if unknown:
            raise DataError(f"{src_utt2tgt}: {len(unknown)} utterance(s) not in {feats_scp}, e.g. {unknown[0]!r}")
    else:
        utt2tgt = {u: target_spk for u in dd.feats_scp}
    with FeatReader(svectors_scp) as sv:
        missing = sorted({t for t in utt2tgt.values() if t not in sv})
        if missing:
            raise DataError(f"{svectors_scp}: no s-vector for target speaker(s) {', '.join(missing[:5])} "
                            f"(it has {len(sv)} speakers, e.g. {', '.join(sv.keys()[:3])})")
        targets = {t: sv[t] for t in set(utt2tgt.values())}
    for t, v in targets.items():
        if v.shape != (cfg.model.z2_dim,):
            raise DataError(f"{svectors_scp}: s-vector of {t!r} has shape {v.shape}, the model's z2 has "
                            f"{cfg.model.z2_dim} dims")
    os.makedirs(out_dir, exist_ok=True)
    nframes = {}
    with FeatReader(feats_scp) as reader, \
            ArkScpWriter(os.path.join(out_dir, "feats.ark"), os.path.join(out_dir, "feats.scp")) as w:
        for u in sorted(utt2tgt, key=lambda k: k.encode()):
            x = stats.normalize(reader[u])
            y = stats.unnormalize(convert_utterance(model, cfg, x, targets[utt2tgt[u]], mode))
            w.write(u, y)
            nframes[u] = len(y)
    atomic_write_text(os.path.join(out_dir, "utt2num_frames"), "".join(f"{u} {n}\n" for u, n in nframes.items()))
    atomic_write_text(os.path.join(out_dir, "utt2tgt"), "".join(f"{u} {utt2tgt[u]}\n" for u in nframes))
    log.info("converted %d utterances of %s to %s -> %s/feats.scp", len(nframes), data_dir,
             target_spk or src_utt2tgt, out_dir)
    return len(nframes)
