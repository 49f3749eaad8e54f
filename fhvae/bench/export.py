"""Export speed (frames/s, real-time factor) and fbank real-time factor."""
import numpy as np
import torch

from fhvae import infer
from fhvae.bench.common import device_name, time_interleaved
from fhvae.config import Config
from fhvae.features.fbank import FbankConfig, compute_fbank
from fhvae.models.fhvae import FHVAE


def bench_export(utts=20, frames=500, device="cpu", batch_windows=None, fbank_seconds=60.0):
    """Latents of ``utts`` random utterances of ``frames`` frames with fhvae-export's encoding (frames/s
    and real-time factor at 10 ms frames), and the fbank real-time factor on ``fbank_seconds`` of audio."""
    device = torch.device(device)
    cfg = Config()
    model = FHVAE(cfg.model).to(device).eval()
    xs = [torch.randn(frames, cfg.model.feat_dim) for _ in range(utts)]
    t = time_interleaved([lambda: infer.encode_utterances(model, xs, cfg.data.seg_len, cfg.data.svector_shift,
                                                          batch_windows)], 3, 1, device)[0]
    n = utts * frames
    audio = (np.random.default_rng(0).normal(size=int(16000 * fbank_seconds)) * 0.1).astype(np.float32)
    tf = time_interleaved([lambda: compute_fbank(audio, FbankConfig())], 3, 1, torch.device("cpu"))[0]
    return {"device": device_name(device), "export_frames_per_s": round(n / t, 1),
            "export_rtf": round(t / (n * 0.01), 5), "fbank_rtf": round(tf / fbank_seconds, 5)}
