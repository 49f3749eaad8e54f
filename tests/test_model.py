import copy

import pytest
import torch

from fhvae.errors import ConfigError
from fhvae.config import Config, ModelConfig, TrainConfig
from fhvae.cpu.lstm import LSTMLayer
from fhvae.models import FHVAE, losses

SMALL = dict(feat_dim=5, z1_dim=3, z2_dim=4, z1_hidden=7, z2_hidden=6, dec_hidden=5)
KEYS = ("z2_mu", "z2_logvar", "z2", "z1_mu", "z1_logvar", "z1", "x_mu", "x_logvar")


def _pair(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    fast = FHVAE(ModelConfig(**{**SMALL, **kw})).to(dtype)
    plain = copy.deepcopy(fast)
    plain.plain = True
    return fast, plain


def test_output_shapes_default_config():
    torch.manual_seed(0)
    model = FHVAE(ModelConfig())
    out = model(torch.randn(3, 20, 80))
    assert set(out) == set(KEYS)
    for k in ("z1_mu", "z1_logvar", "z1", "z2_mu", "z2_logvar", "z2"):
        assert out[k].shape == (3, 32), k
    assert out["x_mu"].shape == out["x_logvar"].shape == (3, 20, 80)
    # paper sizes: 2-layer 256-cell LSTMs, heads on the last states of both layers (512)
    assert model.z2_lstm.num_layers == 2 and model.z2_lstm.hidden_size == 256
    assert model.z2_mu.in_features == model.z1_mu.in_features == 512
    assert model.z1_lstm.input_size == 80 + 32 and model.dec_lstm.input_size == 64


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fast_and_plain_give_same_outputs_and_gradients(dtype, tol):
    fast, plain = _pair(dtype)
    x = torch.randn(4, 6, 5, dtype=dtype)
    grads = []
    for model in (fast, plain):
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)
        out = model(xi)
        loss = sum((v * torch.linspace(-1, 1, v.numel(), dtype=dtype).view_as(v)).sum() for v in out.values())
        loss.backward()
        grads.append((out, xi.grad, {n: p.grad for n, p in model.named_parameters()}))
    (o1, gx1, gp1), (o2, gx2, gp2) = grads
    for k in KEYS:
        torch.testing.assert_close(o1[k], o2[k], rtol=tol, atol=tol)
    torch.testing.assert_close(gx1, gx2, rtol=tol, atol=tol)
    assert gp1.keys() == gp2.keys()
    for n in gp1:
        assert gp1[n] is not None and gp1[n].abs().sum() > 0, n
        torch.testing.assert_close(gp1[n], gp2[n], rtol=tol, atol=tol, msg=n)


@pytest.mark.parametrize("T", [1, 3, 17])
def test_encoders_accept_any_length(T):
    fast, plain = _pair()
    x = torch.randn(2, T, 5, dtype=torch.float64)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            m1, v1 = fast.encode_z2(x)
            m2, v2 = plain.encode_z2(x)
            torch.testing.assert_close((m1, v1), (m2, v2))
            assert m1.shape == v1.shape == (2, 4)
            z1a, z1b = fast.encode_z1(x, m1), plain.encode_z1(x, m2)
            torch.testing.assert_close(z1a, z1b)
            assert z1a[0].shape == (2, 3)
            xm, xv = fast.decode(z1a[0], m1, T)
            torch.testing.assert_close((xm, xv), plain.decode(z1b[0], m2, T))
            assert xm.shape == (2, T, 5)


def test_forward_conditions_z1_on_sampled_z2_and_decodes_samples():
    fast, _ = _pair()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    out = fast(x)
    assert not torch.allclose(out["z2"], out["z2_mu"])
    z1_mu, z1_lv = fast.encode_z1(x, out["z2"])
    torch.testing.assert_close((z1_mu, z1_lv), (out["z1_mu"], out["z1_logvar"]))
    torch.testing.assert_close(fast.decode(out["z1"], out["z2"], 6), (out["x_mu"], out["x_logvar"]))


def test_sample_false_uses_means_deterministically():
    fast, _ = _pair()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    a, b = fast(x, sample=False), fast(x, sample=False)
    assert torch.equal(a["z1"], a["z1_mu"]) and torch.equal(a["z2"], a["z2_mu"])
    for k in KEYS:
        assert torch.equal(a[k], b[k])


@pytest.mark.parametrize("const", [False, True])
def test_lstm_layer_backward_gradcheck(const):
    g = torch.Generator().manual_seed(0)
    H, T, B = 3, 4, 2
    shape = (4 * H, B) if const else (4 * H, T, B)
    gx = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = (0.5 * torch.randn(4 * H, H, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: LSTMLayer.apply(a, b, T), (gx, w))


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="model.z1_dim"):
        Config(model=ModelConfig(z1_dim=0)).validate()
    with pytest.raises(ConfigError, match="model.z2_prior_var"):
        Config(model=ModelConfig(z2_prior_var=0.0)).validate()


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = FHVAE(ModelConfig(feat_dim=4, z1_dim=2, z2_dim=2, z1_hidden=8, z2_hidden=8, dec_hidden=8))
    K = 3
    cache = torch.nn.Parameter(torch.zeros(K, 2))
    opt = torch.optim.Adam(list(model.parameters()) + [cache], lr=1e-2, betas=(0.95, 0.999))
    idx = torch.arange(12) % K
    x = torch.randn(12, 5, 4) * 0.3 + torch.randn(K, 1, 4)[idx]  # 3 sequences with distinct offsets
    n = torch.full((12,), 4.0)

    @torch.no_grad()
    def loss_at():
        torch.manual_seed(123)
        return float(model.loss(model(x), x, cache, idx, n, TrainConfig())[0])

    before = loss_at()
    for _ in range(30):
        loss, _ = model.loss(model(x), x, cache, idx, n, TrainConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_at() < before - 1.0


def test_inference_mode_and_thread_count_untouched():
    fast, plain = _pair()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        a = fast(x, sample=False)
        b = plain(x, sample=False)
    for k in KEYS:
        torch.testing.assert_close(a[k], b[k])
    fast(x)["x_mu"].sum().backward()
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("const", [False, True])
def test_fused_step_kernels_match_pytorch_ops(const, strided, monkeypatch):
    """The compiled kernels (lstm_kernels.c) give the PyTorch formulation's outputs and gradients,
    also for inputs and output gradients that are views with other strides."""
    from fhvae.cpu import kernels as cpu_kernels
    assert cpu_kernels.kernels() is not None, "the C kernels did not build (is cc installed?)"
    g = torch.Generator().manual_seed(1)
    H, T, B = 16, 7, 5
    shape = (4 * H, B) if const else (4 * H, T, B)
    gx = (3 * torch.randn(*shape, generator=g)).requires_grad_()  # large: saturated gates too
    w = (0.5 * torch.randn(4 * H, H, generator=g)).requires_grad_()
    dh = torch.randn(H, T, B, generator=g)
    if strided:  # same values, batch not the unit-stride dimension / time steps not B apart
        gx = gx.detach().t().contiguous().t().requires_grad_() if const else \
            gx.detach().permute(2, 1, 0).contiguous().permute(2, 1, 0).requires_grad_()
        dh = dh.permute(1, 0, 2).contiguous().permute(1, 0, 2)
        assert gx.stride(-1) != 1 and dh.stride(1) != B
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(cpu_kernels, "kernels", lambda: None)
        h = LSTMLayer.apply(gx, w, T)
        results.append((h.detach(), *torch.autograd.grad(h, (gx, w), dh)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_kernels_split_the_batch_over_threads(threads):
    """With several threads the C kernels run the batch in chunks of 16-column multiples, one per
    thread (40 columns on 2 threads: 32 + 8; on 3: 16 + 16 + 8): same outputs and gradients as the
    PyTorch formulation, for training and for the inference path (no saved buffers), and the
    caller's thread count is left as it was."""
    from fhvae.cpu import kernels as cpu_kernels
    from fhvae.cpu.lstm import layer_forward
    assert cpu_kernels.kernels() is not None, "the C kernels did not build (is cc installed?)"
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(2)
        H, T, B = 24, 5, 40
        for shape in ((4 * H, T, B), (4 * H, B)):
            gx = (2 * torch.randn(*shape, generator=g)).requires_grad_()
            w = (0.3 * torch.randn(4 * H, H, generator=g)).requires_grad_()
            dh = torch.randn(H, T, B, generator=g)
            results = []
            for fused in (True, False):
                with cpu_kernels.use(fused):
                    h = LSTMLayer.apply(gx, w, T)
                    with torch.no_grad():
                        h_inf = layer_forward(gx, w, T, save=False)[0]
                    results.append((h.detach(), h_inf, *torch.autograd.grad(h, (gx, w), dh)))
            for a, b in zip(*results):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(old)


def test_initialization_is_the_2017_codes():
    torch.manual_seed(0)
    m = FHVAE(ModelConfig(feat_dim=40, z1_hidden=64, z2_hidden=32, dec_hidden=48))
    for lstm in (m.z2_lstm, m.z1_lstm, m.dec_lstm):
        H = lstm.hidden_size
        for layer in range(lstm.num_layers):
            w_ih = getattr(lstm, f"weight_ih_l{layer}")
            limit = (6.0 / (w_ih.shape[1] + 5 * H)) ** 0.5
            for w in (w_ih, getattr(lstm, f"weight_hh_l{layer}")):
                assert w.abs().max() <= limit and w.abs().max() > 0.9 * limit
            b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            assert torch.equal(b[H:2 * H], torch.ones(H)) and not b[:H].any() and not b[2 * H:].any()
    limit = (6.0 / (48 + 40)) ** 0.5
    assert m.x_mu.weight.abs().max() <= limit and not m.x_mu.bias.any()


def test_no_compiler_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    from fhvae.cpu import kernels as cpu_kernels
    monkeypatch.setattr(cpu_kernels, "_tried", False)
    monkeypatch.setattr(cpu_kernels, "_lib", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("FHVAE_CACHE", str(tmp_path / "cache"))
    assert cpu_kernels.kernels() is None
    assert "could not build" in caplog.text and "PyTorch" in caplog.text
    fast, plain = _pair(torch.float32)  # the model still runs, on the PyTorch ops
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(fast(x, sample=False)["x_mu"], plain(x, sample=False)["x_mu"], rtol=1e-5, atol=1e-5)


def test_no_blas_sgemm_falls_back_with_a_warning(monkeypatch, caplog):
    """The C kernels call the sgemm_ of PyTorch's own library; without one, the PyTorch ops."""
    from fhvae.cpu import kernels as cpu_kernels
    monkeypatch.setattr(cpu_kernels, "_tried", False)
    monkeypatch.setattr(cpu_kernels, "_lib", None)
    monkeypatch.setattr(cpu_kernels, "_blas", lambda: (None, None))
    assert cpu_kernels.kernels() is None
    assert "sgemm_" in caplog.text and "PyTorch" in caplog.text


def test_blas_comes_from_pytorchs_library():
    """sgemm_ and, in the x86 wheels (MKL), the per-thread thread count the batch split needs."""
    from fhvae.cpu import kernels as cpu_kernels
    sgemm, threads = cpu_kernels._blas()
    assert sgemm is not None
    if "mkl" in torch.__config__.show().lower():
        assert threads is not None


def test_loading_the_kernels_leaves_denormals_alone():
    """The kernel library must not switch on flush-to-zero / denormals-are-zero for the process
    (what -ffast-math's crtfastmath.o does when it is linked into a shared library)."""
    import numpy as np
    from fhvae.cpu import kernels as cpu_kernels
    assert cpu_kernels.kernels() is not None
    tiny = np.array([5e-324])  # the smallest denormal double
    assert (tiny * 1.0)[0] != 0.0
    assert float(torch.tensor([1e-40]) * 1.0) != 0.0  # a float32 denormal
