"""The FHVAE of Hsu & Glass (2018, Fig. 2): two LSTM encoders and an LSTM decoder.

    q(z2 | x)       2-layer LSTM over x; affine heads on the last hidden state of both layers
    q(z1 | x, z2)   2-layer LSTM over [x_t, z2]; same head structure
    p(x | z1, z2)   2-layer LSTM fed [z1, z2] at every step; per-frame affine heads

Inputs x are (B, T, F) globally normalized features (T = 20 frames for training segments; the
encoders accept any T). All Gaussians are diagonal and parameterized by (mu, logvar). The LSTMs run
through one seam (fhvae/models/lstm.py: nn.LSTM, or the fast CPU kernels). Seed systems (vq z1,
autoregressive decoder, Z-forcing) are variants (fhvae/models/variant.py) that the model calls at
the marked hooks; with none enabled (the default) this is the paper's model.
"""
import torch
import torch.nn as nn

from fhvae.config import ModelConfig
from fhvae.models import losses, lstm, seed_systems


def sample_gauss(mu, logvar):
    """Reparameterized sample mu + exp(logvar / 2) * eps, eps ~ N(0, I); same shape as mu."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class FHVAE(nn.Module):
    """FHVAE(cfg: ModelConfig): forward(x (B, T, F)) -> dict of posterior/likelihood parameters and
    samples; loss(...) -> the training loss. ``plain=True`` runs nn.LSTM on CPU too (same outputs)."""

    def __init__(self, cfg: ModelConfig = None, plain: bool = False):
        super().__init__()
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
        self.variants = seed_systems.build(seed_systems.MODEL_VARIANTS, cfg)   # their own initialization
        for v in self.variants:
            self.add_module(v.name, v)
            if v.deterministic_z1:   # no log-variance head
                self.z1_logvar = None

    def reset_parameters(self):
        """The 2017 code's initialization (TensorFlow 1 defaults): every LSTM layer's kernel
        [W_ih | W_hh] (4H, I + H) Glorot-uniform, limit sqrt(6 / (I + H + 4H)); biases 0 except the
        forget gate's, 1 (BasicLSTMCell's forget_bias, here a trainable initial value); affine heads
        Glorot-uniform with zero bias."""
        for m in (self.z2_lstm, self.z1_lstm, self.dec_lstm):
            H = m.hidden_size
            for layer in range(m.num_layers):
                w_ih, w_hh = getattr(m, f"weight_ih_l{layer}"), getattr(m, f"weight_hh_l{layer}")
                limit = (6.0 / (w_ih.shape[1] + H + 4 * H)) ** 0.5
                with torch.no_grad():
                    w_ih.uniform_(-limit, limit)
                    w_hh.uniform_(-limit, limit)
                    getattr(m, f"bias_ih_l{layer}").zero_()[H:2 * H] = 1.0
                    getattr(m, f"bias_hh_l{layer}").zero_()
        for head in (self.z2_mu, self.z2_logvar, self.z1_mu, self.z1_logvar, self.x_mu, self.x_logvar):
            if head is None:
                continue
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)

    # ---- encoders and decoder
    def encode_z2(self, x):
        """q(z2 | x): x (B, T, F) -> (z2_mu, z2_logvar), each (B, z2_dim). Any T >= 1."""
        h = lstm.last_states(self.z2_lstm, x, plain=self.plain)
        return self.z2_mu(h), self.z2_logvar(h)

    def z1_state(self, x, z2):
        """Last hidden states of the z1 encoder's layers over [x_t, z2]: (B, L*H)."""
        return lstm.last_states(self.z1_lstm, x, const=z2, plain=self.plain)

    def encode_z1(self, x, z2):
        """q(z1 | x, z2): x (B, T, F), z2 (B, z2_dim) -> (z1_mu, z1_logvar), each (B, z1_dim);
        (z1, None) with a deterministic bottleneck (vq)."""
        h = self.z1_state(x, z2)
        z1_mu = self.z1_mu(h)
        for v in self.variants:   # hook: a deterministic bottleneck
            z1 = v.z1_mean(z1_mu)
            if z1 is not None:
                return z1, None
        return z1_mu, self.z1_logvar(h)

    def decode(self, z1, z2, steps, x=None):
        """p(x | z1, z2): z1 (B, z1_dim), z2 (B, z2_dim) -> (x_mu, x_logvar), each (B, T, F), T = steps.
        x (B, T, F), if given, is what an autoregressive decoder reads (teacher forcing)."""
        return self._decode(z1, z2, steps, x)[:2]

    def _decode(self, z1, z2, steps, x=None):
        """-> x_mu, x_logvar (B, T, F) and the decoder's last-layer LSTM states d (B, H, T)."""
        (x_mu, x_logvar), d = lstm.const_input(self.dec_lstm, torch.cat([z1, z2], dim=1), steps,
                                               (self.x_mu, self.x_logvar), plain=self.plain)
        for v in self.variants:   # hook: the output distribution (autoregressive decoder)
            x_mu, x_logvar = v.decoder_output(x, d, x_mu, x_logvar)
        return x_mu, x_logvar, d

    def forward(self, x, sample=True, x_z1=None):
        """x (B, T, F) -> dict: z2_mu, z2_logvar, z2, z1_mu, z1_logvar, z1 (B, z_dim); x_mu, x_logvar
        (B, T, F); plus the variants' outputs. z2 ~ q(z2|x); z1 ~ q(z1|x, z2) given the sampled z2; the
        decoder gets the sampled z1, z2 (the means with sample=False). x_z1 (B, T, F), if given, is
        what the z1 encoder reads instead of x (time jitter)."""
        z2_mu, z2_logvar = self.encode_z2(x)
        z2 = sample_gauss(z2_mu, z2_logvar) if sample else z2_mu
        out = {"z2_mu": z2_mu, "z2_logvar": z2_logvar, "z2": z2}
        h1 = self.z1_state(x if x_z1 is None else x_z1, z2)
        z1_mu = self.z1_mu(h1)
        for v in self.variants:   # hook: a bottleneck replaces the Gaussian posterior
            q = v.z1_posterior(z1_mu, out)
            if q is not None:
                z1_mu, z1_logvar, z1 = q
                break
        else:
            z1_logvar = self.z1_logvar(h1)
            z1 = sample_gauss(z1_mu, z1_logvar) if sample else z1_mu
        x_mu, x_logvar, d = self._decode(z1, z2, x.shape[1], x)
        for v in self.variants:   # hook: extra outputs
            out.update(v.outputs(x, d))
        out.update(z1_mu=z1_mu, z1_logvar=z1_logvar, z1=z1, x_mu=x_mu, x_logvar=x_logvar)
        return out

    # ---- objective
    def kl_z1(self, out):
        """KL(q(z1|x,z2) || p(z1)) (B,) of a variant's z1 posterior, or None (the Gaussian's)."""
        for v in self.variants:   # hook: KL of a non-Gaussian z1 posterior
            kl = v.kl_z1(out)
            if kl is not None:
                return kl
        return None

    def segment_terms(self, out, x, mu2, n_segs):
        """Segment lower bound and its terms, each (B,) nats (losses.segment_terms); mu2 (B, z2_dim)
        the prior mean of each segment's sequence, n_segs (B,) its N_i."""
        return losses.segment_terms(out, x, mu2, n_segs, self.cfg.z2_prior_var, self.kl_z1(out))

    def loss(self, out, x, cache, idx, n_segs, t, step=0):
        """Training loss: the mean over segments of -(bound + alpha * disc) (losses.fhvae_loss;
        alpha = t.alpha) plus the variants' costs, and its terms (each (B,)). cache (K, z2_dim): the
        trainable mu2 of the block's K sequences (all M for flat sampling); idx (B,) each segment's
        cache row; n_segs (B,) its sequence's N_i; t: TrainConfig; step: 0-based training step."""
        loss, terms = losses.fhvae_loss(out, x, cache, idx, n_segs, t.alpha, self.cfg.z2_prior_var,
                                        self.kl_z1(out))
        for v in self.variants:   # hook: a variant's cost (not part of the bound)
            loss = v.add_loss(loss, out, terms, t, step)
        return loss.mean(), terms
