"""Utterance latents (fhvae/infer.py, written by fhvae-export): windows, output padding as the 2017
code, s-vectors."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fhvae import infer
from fhvae.config import Config, ModelConfig
from fhvae.infer import frame_windows, pad_latents
from fhvae.models import losses
from fhvae.models.fhvae import FHVAE


@pytest.fixture(scope="module")
def exporter():
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(feat_dim=5, z1_dim=3, z2_dim=2, z1_hidden=8, z2_hidden=8, dec_hidden=8)
    cfg.data.seg_len, cfg.data.svector_shift = 20, 20
    model = FHVAE(cfg.model).eval()
    # small chunks: batching is exercised
    return SimpleNamespace(model=model, cfg=cfg, encode=lambda xs: infer.encode_utterances(
        model, xs, cfg.data.seg_len, cfg.data.svector_shift, batch=7))


def test_pad_latents_repeats_edge_latents():
    z = torch.arange(4.0)[:, None]  # 4 windows of a 23-frame utterance
    out = pad_latents(z, 23, 20).squeeze(1).tolist()
    assert out == [0.0] * 10 + [1.0, 2.0] + [3.0] * 11
    assert pad_latents(z[:1], 7, 20).squeeze(1).tolist() == [0.0] * 7
    # odd segment length: centred windows, (21 - 1) // 2 = 10 repeats on each side (the 2017 code)
    assert pad_latents(z, 24, 21).squeeze(1).tolist() == [0.0] * 11 + [1.0, 2.0] + [3.0] * 11


@pytest.mark.parametrize("T", [20, 37])
def test_frame_latents_are_window_latents_padded(exporter, T):
    """Row t is the latent of frames t-9 .. t+10; rows 0-8 copy row 9, the last 10 copy row T-11."""
    x = torch.randn(T, 5)
    r = exporter.encode([x])[0]
    assert r["z1"].shape == (T, 3) and r["z2"].shape == (T, 2)
    with torch.no_grad():
        for t in (9, T - 11):
            w = x[t - 9:t + 11][None]
            z2_mu, _ = exporter.model.encode_z2(w)
            z1_mu, _ = exporter.model.encode_z1(w, z2_mu)
            np.testing.assert_allclose(r["z2"][t], z2_mu[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(r["z1"][t], z1_mu[0].numpy(), rtol=1e-5, atol=1e-6)
    assert (r["z1"][:9] == r["z1"][9]).all() and (r["z1"][T - 10:] == r["z1"][T - 11]).all()
    if T > 20:
        assert not np.allclose(r["z1"][9], r["z1"][10])


def test_short_utterance_is_one_edge_padded_window(exporter):
    x = torch.randn(6, 5)
    r = exporter.encode([x])[0]
    assert r["z1"].shape == (6, 3) and (r["z1"] == r["z1"][0]).all()
    assert frame_windows(x, 20).shape == (1, 20, 5)
    assert torch.equal(frame_windows(x, 20)[0, 6:], x[-1:].expand(14, -1))


def test_batched_utterances_equal_one_at_a_time(exporter):
    xs = [torch.randn(T, 5) for T in (25, 6, 41)]
    together = exporter.encode(xs)
    for x, r in zip(xs, together):
        alone = exporter.encode([x])[0]
        for k in ("z1", "z2", "z1_logvar", "z2_logvar", "svector"):
            np.testing.assert_allclose(r[k], alone[k], rtol=1e-5, atol=1e-6)


def test_svector_is_map_mu2_of_non_overlapping_segments(exporter):
    x = torch.randn(45, 5)  # segments at 0 and 20 (the last 5 frames are not covered)
    r = exporter.encode([x])[0]
    with torch.no_grad():
        z2_mu, _ = exporter.model.encode_z2(torch.stack([x[:20], x[20:40]]))
    np.testing.assert_allclose(r["svector"], losses.map_mu2(z2_mu.sum(0), 2.0, 0.25).numpy(), rtol=1e-5)


def test_svector_shift_sets_the_segments_averaged(exporter):
    """data.svector_shift 8: segments at 0, 8, 16, 24 of a 45-frame utterance (start + 20 <= 45)."""
    x = torch.randn(45, 5)
    exporter.cfg.data.svector_shift = 8
    try:
        r = exporter.encode([x])[0]
    finally:
        exporter.cfg.data.svector_shift = 20
    with torch.no_grad():
        z2_mu, _ = exporter.model.encode_z2(torch.stack([x[s:s + 20] for s in (0, 8, 16, 24)]))
    np.testing.assert_allclose(r["svector"], losses.map_mu2(z2_mu.sum(0), 4.0, 0.25).numpy(), rtol=1e-5)
    assert not np.allclose(r["svector"], exporter.encode([x])[0]["svector"])
