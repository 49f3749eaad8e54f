"""The FHVAE of Hsu & Glass (2018, Fig. 2): two LSTM encoders and an LSTM decoder.

    q(z2 | x)       2-layer LSTM over x; affine heads on the last hidden state of both layers
    q(z1 | x, z2)   2-layer LSTM over [x_t, z2]; same head structure
    p(x | z1, z2)   2-layer LSTM fed [z1, z2] at every step; per-frame affine heads

Seed-system options (ModelConfig; off by default): ``z1_bottleneck = vq`` quantizes the z1 head's
output (models/vq.py); ``decoder = ar`` adds an autoregressive output over the previous frames and
``zforcing`` the Z-forcing cost (models/ar.py). Time jitter is the trainer's (``forward(x_z1=...)``).

Inputs x are (B, T, F) globally normalized features (T = 20 frames for training segments;
the encoders accept any T). All Gaussians are diagonal and parameterized by (mu, logvar).

Two implementations share the same parameters (the ``nn.LSTM`` and ``nn.Linear`` modules) and give
the same outputs and gradients:

* the plain one calls ``nn.LSTM`` (used on GPUs, where cuDNN is fastest, and with ``plain=True``);
* the fast CPU one (default on CPU) runs the same LSTMs in a (features, time, batch) layout, where
  the per-step matrix products have the shape CPU BLAS runs fastest; computes the input projection
  of inputs that are constant over time (the decoder input, the z2 part of the z1 encoder input)
  once per sequence instead of T times; and has a hand-written backward pass that forms the weight
  gradients with one large matrix product per layer instead of T small ones. A layer's whole time
  loop, forward and backward, runs in C (``lstm_kernels.c`` via ``cpu_kernels``: per step one sgemm
  and one fused element-wise pass, the batch split over the threads); PyTorch ops (element-wise math
  on one thread, see ``_one_thread``) where no C compiler or BLAS sgemm is available. It is tuned
  for machines with few cores; ``plain=True`` (oneDNN's fused LSTM) may be faster on other CPUs
  (BENCHMARKS.md, section 3).
"""
import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from fhvae.cpu import mkl
from fhvae.errors import ConfigError
from fhvae.cpu import kernels as cpu_kernels
from fhvae.models.ar import ARDecoder, ZForcing
from fhvae.models.vq import VectorQuantizer

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * y * (1 - y), y = sigmoid(a)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # grad * (1 - y^2), y = tanh(a)


@dataclass
class ModelConfig:
    """Sizes of the FHVAE. Defaults are the paper's (Sec. 4.2)."""
    feat_dim: int = 80          # F: feature dimension (80 log-mel fbank)
    seg_len: int = 20           # T: frames per training segment
    z1_dim: int = 32            # segment latent
    z2_dim: int = 32            # sequence latent
    z1_hidden: int = 256        # LSTM cells of the z1 encoder
    z2_hidden: int = 256        # LSTM cells of the z2 encoder
    dec_hidden: int = 256       # LSTM cells of the decoder
    num_layers: int = 2         # LSTM layers of each encoder and of the decoder
    z2_prior_var: float = 0.25  # sigma_z2^2 in p(z2 | mu2) = N(mu2, sigma_z2^2 I)
    # Seed systems (off by default: the paper's FHVAE)
    z1_bottleneck: str = "gauss"  # gauss | vq: vector-quantized z1 (models/vq.py, Łańcucki et al. 2020)
    vq_codes: int = 256           # K codes of the vq bottleneck
    vq_commitment: float = 0.25   # weight of ||ze - sg(e)||^2
    vq_batchnorm: bool = True     # BatchNorm before the linear layer that feeds the quantizer
    decoder: str = "lstm"         # lstm | ar: add an autoregressive output (models/ar.py, WaveNet-style)
    ar_channels: int = 64         # channels of the causal dilated convolutions
    ar_layers: int = 4            # dilations 1, 2, ..., 2^(ar_layers-1)
    zforcing: bool = False        # Z-forcing auxiliary cost (models/ar.py, Goyal et al. 2017)
    zforcing_hidden: int = 128    # cells of its backward LSTM

    def __post_init__(self):
        for key in ("feat_dim", "seg_len", "z1_dim", "z2_dim", "z1_hidden", "z2_hidden", "dec_hidden",
                    "num_layers", "vq_codes", "ar_channels", "ar_layers", "zforcing_hidden"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if not self.z2_prior_var > 0:
            raise ConfigError(f"model.z2_prior_var must be > 0, got {self.z2_prior_var}")
        if self.z1_bottleneck not in ("gauss", "vq"):
            raise ConfigError(f"model.z1_bottleneck must be 'gauss' or 'vq', got {self.z1_bottleneck!r}")
        if self.decoder not in ("lstm", "ar"):
            raise ConfigError(f"model.decoder must be 'lstm' or 'ar', got {self.decoder!r}")
        if self.vq_commitment < 0:
            raise ConfigError(f"model.vq_commitment must be >= 0, got {self.vq_commitment}")


def inference_batch(device):
    """Segments per forward pass when encoding many without gradients (export, cache MAP estimate,
    probes): 512 on CPU, where buffers that fit the caches beat larger matrix products (~1.15x the
    segments/s of 4096 on the mini model), 4096 on a GPU."""
    return 512 if torch.device(device).type == "cpu" else 4096


def sample_gauss(mu, logvar):
    """Reparameterized sample mu + exp(logvar / 2) * eps, eps ~ N(0, I); same shape as mu."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class FHVAE(nn.Module):
    """FHVAE(cfg): forward(x (B, T, F)) -> dict of posterior/likelihood parameters and samples.

    ``plain=True`` (or setting ``model.plain``) forces the ``nn.LSTM`` implementation on CPU too;
    both give the same outputs for the same weights.
    """

    def __init__(self, cfg: ModelConfig = None, plain: bool = False):
        super().__init__()
        mkl.warm_up_vml()   # before the first multi-threaded exp/log/sqrt (fhvae/cpu/mkl.py)
        cfg = cfg or ModelConfig()
        self.cfg, self.plain = cfg, plain
        F, L = cfg.feat_dim, cfg.num_layers
        self.z2_lstm = nn.LSTM(F, cfg.z2_hidden, L, batch_first=True)
        self.z2_mu = nn.Linear(L * cfg.z2_hidden, cfg.z2_dim)
        self.z2_logvar = nn.Linear(L * cfg.z2_hidden, cfg.z2_dim)
        self.z1_lstm = nn.LSTM(F + cfg.z2_dim, cfg.z1_hidden, L, batch_first=True)
        self.z1_mu = nn.Linear(L * cfg.z1_hidden, cfg.z1_dim)
        self.z1_logvar = nn.Linear(L * cfg.z1_hidden, cfg.z1_dim)
        self.dec_lstm = nn.LSTM(cfg.z1_dim + cfg.z2_dim, cfg.dec_hidden, L, batch_first=True)
        self.x_mu = nn.Linear(cfg.dec_hidden, F)
        self.x_logvar = nn.Linear(cfg.dec_hidden, F)
        self.reset_parameters()
        # seed-system parts (their own initialization)
        self.vq = None
        if cfg.z1_bottleneck == "vq":   # deterministic z1: no log-variance head
            self.vq = VectorQuantizer(cfg.z1_dim, cfg.vq_codes, cfg.vq_commitment, cfg.vq_batchnorm)
            self.z1_logvar = None
        self.ar = ARDecoder(F, cfg.dec_hidden, cfg.ar_channels, cfg.ar_layers) if cfg.decoder == "ar" else None
        self.zf = ZForcing(F, cfg.dec_hidden, cfg.zforcing_hidden) if cfg.zforcing else None

    def reset_parameters(self):
        """The 2017 code's initialization (TensorFlow 1 defaults): every LSTM layer's kernel
        [W_ih | W_hh] (4H, I + H) Glorot-uniform, limit sqrt(6 / (I + H + 4H)); biases 0 except the
        forget gate's, 1 (BasicLSTMCell's forget_bias, here a trainable initial value); affine heads
        Glorot-uniform with zero bias."""
        for lstm in (self.z2_lstm, self.z1_lstm, self.dec_lstm):
            H = lstm.hidden_size
            for layer in range(lstm.num_layers):
                w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
                limit = (6.0 / (w_ih.shape[1] + H + 4 * H)) ** 0.5
                with torch.no_grad():
                    w_ih.uniform_(-limit, limit)
                    w_hh.uniform_(-limit, limit)
                    getattr(lstm, f"bias_ih_l{layer}").zero_()[H:2 * H] = 1.0
                    getattr(lstm, f"bias_hh_l{layer}").zero_()
        for head in (self.z2_mu, self.z2_logvar, self.z1_mu, self.z1_logvar, self.x_mu, self.x_logvar):
            if head is None:
                continue
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)

    def _fast(self, x):
        return not self.plain and x.device.type == "cpu"

    def encode_z2(self, x):
        """q(z2 | x): x (B, T, F) -> (z2_mu, z2_logvar), each (B, z2_dim). Any T >= 1."""
        if self._fast(x):
            lstm, xt = self.z2_lstm, _feature_major(x)
            gx = _in_proj(lstm.weight_ih_l0, _bias(lstm, 0), xt)
            h_last = _last_states(_lstm_fast(lstm, gx, x.shape[1]))
        else:
            _, (h_n, _) = self.z2_lstm(x)
            h_last = _concat_layers(h_n)
        return self.z2_mu(h_last), self.z2_logvar(h_last)

    def encode_z1(self, x, z2):
        """q(z1 | x, z2): x (B, T, F), z2 (B, z2_dim) -> (z1_mu, z1_logvar), each (B, z1_dim).

        With the vq bottleneck: (the quantized z1, None) -- a deterministic posterior."""
        h = self._z1_state(x, z2)
        if self.vq is not None:
            return self.vq.quantize(self.z1_mu(h)), None
        return self.z1_mu(h), self.z1_logvar(h)

    def _z1_state(self, x, z2):
        """Last hidden states of the z1 encoder's layers, (B, L*H)."""
        if self._fast(x):
            lstm, xt, F = self.z1_lstm, _feature_major(x), x.shape[2]
            w = lstm.weight_ih_l0
            # x part for every step; z2 part (with the biases) once per sequence, broadcast over T
            gx = _in_proj(w[:, :F], None, xt).add_(torch.addmm(_bias(lstm, 0)[:, None], w[:, F:], z2.t())[:, None])
            h_last = _last_states(_lstm_fast(lstm, gx, x.shape[1]))
        else:
            xz = torch.cat([x, z2[:, None].expand(-1, x.shape[1], -1)], dim=2)
            _, (h_n, _) = self.z1_lstm(xz)
            h_last = _concat_layers(h_n)
        return h_last

    def decode(self, z1, z2, seg_len=None, x=None):
        """p(x | z1, z2): z1 (B, z1_dim), z2 (B, z2_dim) -> (x_mu, x_logvar), each (B, T, F), T = seg_len.

        With the ar decoder, x (B, T, F) gives teacher-forced p(x_t | x_<t, z1, z2); without x the
        frames are generated one by one from the means (greedy)."""
        return self._decode(z1, z2, seg_len or self.cfg.seg_len, x)[:2]

    def _decode(self, z1, z2, T, x=None):
        """-> x_mu, x_logvar (B, T, F) and the decoder's last-layer LSTM states d (B, H, T)."""
        z = torch.cat([z1, z2], dim=1)
        if self._fast(z):
            lstm = self.dec_lstm
            gx = torch.addmm(_bias(lstm, 0)[:, None], lstm.weight_ih_l0, z.t())  # (4H, B): same every step
            h = _lstm_fast(lstm, gx, T)[-1]  # (H, T, B)
            H, B = h.shape[0], h.shape[2]
            hf = h.reshape(H, T * B)
            x_mu = _in_proj(self.x_mu.weight, self.x_mu.bias, hf).view(-1, T, B).permute(2, 1, 0).contiguous()
            x_logvar = _in_proj(self.x_logvar.weight, self.x_logvar.bias, hf).view(-1, T, B).permute(2, 1, 0)
            x_logvar, d = x_logvar.contiguous(), h.permute(2, 0, 1)
        else:
            out, _ = self.dec_lstm(z[:, None].expand(-1, T, -1))
            x_mu, x_logvar, d = self.x_mu(out), self.x_logvar(out), out.transpose(1, 2)
        if self.ar is not None:
            if x is None:
                x_mu, x_logvar = self.ar.generate(x_mu, x_logvar, d)
            else:
                mu_o, lv_o = self.ar(x, d)
                x_mu, x_logvar = x_mu + mu_o, x_logvar + lv_o
        return x_mu, x_logvar, d

    def forward(self, x, sample=True, x_z1=None):
        """x (B, T, F) -> dict: z2_mu, z2_logvar, z2, z1_mu, z1_logvar, z1 (B, z_dim); x_mu, x_logvar (B, T, F).

        z2 ~ q(z2|x); z1 ~ q(z1|x, z2) given the sampled z2; the decoder gets the sampled z1, z2.
        With sample=False the means are used instead of samples. x_z1 (B, T, F), if given, is what the
        z1 encoder reads instead of x (time jitter: a neighbouring segment; train.z1_jitter).
        With the vq bottleneck z1_logvar is None and the dict has vq_codes (B,), vq_ze (B, D), vq_loss (B,);
        with Z-forcing, zf_aux and zf_back (B,) (models/ar.py).
        """
        z2_mu, z2_logvar = self.encode_z2(x)
        z2 = sample_gauss(z2_mu, z2_logvar) if sample else z2_mu
        h1 = self._z1_state(x if x_z1 is None else x_z1, z2)
        out = {"z2_mu": z2_mu, "z2_logvar": z2_logvar, "z2": z2}
        if self.vq is not None:
            q = self.vq(self.z1_mu(h1))
            z1_mu = z1 = q["z1"]
            z1_logvar = None
            out.update(vq_codes=q["codes"], vq_ze=q["ze"], vq_loss=q["loss"])
        else:
            z1_mu, z1_logvar = self.z1_mu(h1), self.z1_logvar(h1)
            z1 = sample_gauss(z1_mu, z1_logvar) if sample else z1_mu
        x_mu, x_logvar, d = self._decode(z1, z2, x.shape[1], x)
        if self.zf is not None:
            out["zf_aux"], out["zf_back"] = self.zf(x, d)
        out.update(z1_mu=z1_mu, z1_logvar=z1_logvar, z1=z1, x_mu=x_mu, x_logvar=x_logvar)
        return out


def _concat_layers(h_n):
    """nn.LSTM final hidden states (L, B, H) -> (B, L*H), layer 0 first."""
    return h_n.transpose(0, 1).reshape(h_n.shape[1], -1)


# ---------------------------------------------------------------------------------------------
# Fast CPU LSTM. Layout (features, time, batch): a layer's inputs are X (F_in, T, B), its gate
# pre-activations gx = W_ih X + b (4H, T, B) and its outputs h (H, T, B). Gate order i, f, g, o
# and parameters exactly as nn.LSTM; initial states are zero.

def _feature_major(x):
    """(B, T, F) -> contiguous (F, T, B)."""
    return x.permute(2, 1, 0).contiguous()


def _bias(lstm, layer):
    """b_ih + b_hh of one nn.LSTM layer, (4H,)."""
    return getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")


def _in_proj(w, b, x):
    """w (O, I) @ x (I, ...) + b (O,) -> (O, ...): one matrix product over all time steps and sequences."""
    y = w @ x.reshape(x.shape[0], -1)
    if b is not None:
        y.add_(b[:, None])  # much faster here than addmm's broadcast copy of b
    return y.view(w.shape[0], *x.shape[1:])


def _lstm_fast(lstm, gx, steps):
    """Stacked LSTM given layer 0's gate pre-activations gx, (4H, T, B) or (4H, B) if constant over
    time. Returns the outputs of every layer, each (H, T, B)."""
    outs = []
    for layer in range(lstm.num_layers):
        if layer > 0:
            gx = _in_proj(getattr(lstm, f"weight_ih_l{layer}"), _bias(lstm, layer), outs[-1])
        w_hh = getattr(lstm, f"weight_hh_l{layer}")
        if torch.is_grad_enabled() and (gx.requires_grad or w_hh.requires_grad):
            outs.append(_LSTMLayer.apply(gx, w_hh, steps))
        else:
            outs.append(_lstm_layer_forward(gx, w_hh, steps, save=False)[0])
    return outs


def _last_states(outs):
    """Per-layer outputs [(H, T, B)] -> last hidden states of all layers (B, L*H), layer 0 first."""
    return torch.cat([h[:, -1] for h in outs], dim=0).t()


@contextlib.contextmanager
def _one_thread():
    """Run the enclosed ops with one intra-op thread (torch.set_num_threads of the calling thread,
    restored on exit). A time step's element-wise LSTM math is too small to share: each multi-threaded
    op pays a thread barrier, and when other processes compete for the cores those barriers cost
    several times the whole computation. Matrix products keep all threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fused(t):
    """The compiled step kernels if they apply to buffers of t's dtype (float32), else None."""
    return cpu_kernels.kernels() if t.dtype == torch.float32 else None


def _lstm_layer_forward(gx, w_hh, steps, save):
    """One LSTM layer from gate pre-activations gx ((4H, T, B) or constant (4H, B)) and w_hh (4H, H).

    Returns h (H, T, B) and, if save, what the backward pass needs: the gate activations (T, 4H, B),
    the cell states c (T + 1, H, B) with c[0] = 0, and tanh(c[1:]) (T, H, B). Without save, the
    buffers hold one step only.
    """
    hid, batch = w_hh.shape[1], gx.shape[-1]
    n = steps if save else 1
    acts = gx.new_empty(n, 4 * hid, batch)
    c = gx.new_empty(n + 1, hid, batch)
    c[0].zero_()  # c_{-1} = 0; every other slot is written before it is read
    tanh_c = gx.new_empty(n, hid, batch)
    h = gx.new_empty(hid, steps, batch)
    lib = _fused(gx)
    if lib is not None:  # the whole time loop in C (lstm_kernels.c)
        gx = gx if gx.stride(-1) == 1 else gx.contiguous()
        w_hh = w_hh.detach().contiguous()
        lib.lstm_layer_forward(gx.data_ptr(), gx.stride(0), 0 if gx.dim() == 2 else gx.stride(1), w_hh.data_ptr(),
                               h.data_ptr(), acts.data_ptr(), c.data_ptr(), tanh_c.data_ptr(), int(save), steps,
                               hid, batch, cpu_kernels.chunks())
        return h, (acts, c, tanh_c)
    for t in range(steps):
        k, prev, new = (t, t, t + 1) if save else (0, t % 2, (t + 1) % 2)
        a = acts[k]
        gx_t = gx if gx.dim() == 2 else gx[:, t]
        if t == 0:  # h_{-1} = 0
            a.copy_(gx_t)
        else:
            torch.addmm(gx_t, w_hh, h[:, t - 1], out=a)
        with _one_thread():
            i, f, g, o = a.chunk(4)
            # tanh(x) = 2 sigmoid(2x) - 1: cheaper here than torch.tanh, and one sigmoid covers all gates
            g.mul_(2)
            a.sigmoid_()
            g.mul_(2).sub_(1)
            torch.mul(f, c[prev], out=c[new]).addcmul_(i, g)
            torch.mul(c[new], 2, out=tanh_c[k]).sigmoid_().mul_(2).sub_(1)
            torch.mul(o, tanh_c[k], out=h[:, t])
    return h, (acts, c, tanh_c)


def _lstm_layer_backward(w_hh, acts, c, tanh_c, dh_out):
    """d loss / d gate pre-activations (4H, T, B) of one layer, from its saved forward buffers
    (see _lstm_layer_forward) and dh_out (H, T, B) = d loss / d h."""
    steps, four_hid, batch = acts.shape
    hid = four_hid // 4
    d_pre = acts.new_empty(four_hid, steps, batch)
    dh = acts.new_empty(hid, batch)
    dc = acts.new_empty(hid, batch)  # d loss / d c_t, carried back through the forget gate; zeroed below or in C
    lib = _fused(acts)
    if lib is not None:  # the whole time loop in C (lstm_kernels.c)
        dh_out = dh_out if dh_out.stride(-1) == 1 else dh_out.contiguous()
        w_hh = w_hh.contiguous()
        lib.lstm_layer_backward(w_hh.data_ptr(), acts.data_ptr(), c.data_ptr(), tanh_c.data_ptr(), dh_out.data_ptr(),
                                dh_out.stride(0), dh_out.stride(1), d_pre.data_ptr(), dh.data_ptr(), dc.data_ptr(),
                                steps, hid, batch, cpu_kernels.chunks())
        return d_pre
    w_hh_t, tmp = w_hh.t().contiguous(), acts.new_empty(hid, batch)
    dc.zero_()
    for t in reversed(range(steps)):
        if t == steps - 1:
            dh.copy_(dh_out[:, t])
        else:
            torch.addmm(dh_out[:, t], w_hh_t, d_pre[:, t + 1], out=dh)
        with _one_thread():
            a, d = acts[t], d_pre[:, t]
            i, f, g, o = a.chunk(4)
            di, df, dg, do = d.chunk(4)
            # h_t = o * tanh(c_t);  c_t = f * c_{t-1} + i * g
            dc.add_(_tanh_backward(torch.mul(dh, o, out=tmp), tanh_c[t], grad_input=tmp))
            torch.mul(dh, tanh_c[t], out=do)
            torch.mul(dc, g, out=di)
            torch.mul(dc, c[t], out=df)
            torch.mul(dc, i, out=dg)
            _sigmoid_backward(d[:2 * hid], a[:2 * hid], grad_input=d[:2 * hid])
            _tanh_backward(dg, g, grad_input=dg)
            _sigmoid_backward(do, o, grad_input=do)
            dc.mul_(f)
    return d_pre


class _LSTMLayer(torch.autograd.Function):
    """One LSTM layer with a hand-written backward: gx (4H, T, B) or (4H, B), w_hh (4H, H) -> h (H, T, B)."""

    @staticmethod
    def forward(ctx, gx, w_hh, steps):
        h, (acts, c, tanh_c) = _lstm_layer_forward(gx, w_hh, steps, save=True)
        ctx.const_input = gx.dim() == 2
        ctx.save_for_backward(w_hh, h, acts, c, tanh_c)
        return h

    @staticmethod
    def backward(ctx, dh_out):
        w_hh, h, acts, c, tanh_c = ctx.saved_tensors
        d_pre = _lstm_layer_backward(w_hh, acts, c, tanh_c, dh_out)
        four_hid, hid = w_hh.shape
        # sum_t d_pre_t h_{t-1}^T over t >= 1 (h_{-1} = 0) as one matrix product
        dw_hh = d_pre[:, 1:].reshape(four_hid, -1) @ h[:, :-1].reshape(hid, -1).t()
        dgx = d_pre.sum(1) if ctx.const_input else d_pre
        return dgx, dw_hh, None
