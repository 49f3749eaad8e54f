"""Synthetic Kaldi feature sets for fast trainer/export tests (no audio, no fbank)."""
import os

import numpy as np

from fhvae.io.ark import ArkScpWriter
from fhvae.io.tables import utt2spk_to_spk2utt, write_kv


def make_feats_dir(path, n_spk=4, utts_per_spk=3, dim=8, min_len=30, max_len=60, seed=0, spk_offset=0):
    """Data dir with feats.scp/utt2num_frames/utt2spk/spk2utt: speaker k's frames ~ N(mu_k, 1).

    Returns the dict utt -> (T, dim) float32 matrix written.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    feats, utt2spk = {}, {}
    for s in range(n_spk):
        spk = f"spk{s + spk_offset:02d}"
        mu = rng.normal(0, 2, size=dim)
        for u in range(utts_per_spk):
            utt = f"{spk}-u{u:02d}"
            T = int(rng.integers(min_len, max_len + 1))
            feats[utt] = (mu + rng.normal(size=(T, dim))).astype(np.float32)
            utt2spk[utt] = spk
    with ArkScpWriter(os.path.join(path, "feats.ark"), os.path.join(path, "feats.scp")) as w:
        for utt in sorted(feats):
            w.write(utt, feats[utt])
    write_kv(os.path.join(path, "utt2num_frames"), {u: str(len(x)) for u, x in feats.items()})
    write_kv(os.path.join(path, "utt2spk"), utt2spk)
    write_kv(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    with open(os.path.join(path, "frame_shift"), "w") as f:
        f.write("0.01\n")
    return feats


def write_stats(path, feats):
    x = np.concatenate(list(feats.values())).astype(np.float64)
    np.savez(path, mean=x.mean(0), var=x.var(0), count=len(x), dim=x.shape[1])
