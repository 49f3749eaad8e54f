"""Autoregressive decoder output and the Z-forcing auxiliary cost (model.decoder = ar, model.zforcing).

ARDecoder: p(x_t | x_<t, z1, z2). A WaveNet-style stack of causal dilated convolutions over the
previous frames x_<t, each layer's gated activation tanh(a) * sigmoid(b) conditioned on the FHVAE
decoder's LSTM state d_t (a function of z1 and z2 only). Its outputs are added to the FHVAE
decoder's Gaussian heads, and its output layer starts at zero, so at initialization the model is
the plain FHVAE (``model.decoder = ar``).

ZForcing (Goyal et al., 2017): a backward LSTM reads the segment from its end, b_t = f(x_t..x_T),
trained as a reverse predictor of x (b_{t+1} predicts x_t); the decoder states d_t must predict the
stop-gradient b_t: aux = -sum_t log N(sg(b_t); mu(d_t), exp(logvar(d_t))) (``model.zforcing``).
It forces z1, z2 to carry what the future of the segment holds, which an autoregressive decoder would
otherwise read from x_<t alone. The loss adds train.zforcing_weight * aux (the weight ramped up from 0
over train.zforcing_anneal_steps) + back.

Unlike Goyal et al., whose latents are per time step and predict b_t directly, ours are per segment
(z1, z2), so the prediction of b_t is made from the decoder's state d_t, a function of z1, z2 and t.

Shapes: x (B, T, F) frames; d (B, H, T) decoder states (channels first, as Conv1d wants).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from fhvae.models.losses import log_gauss
from fhvae.models.variant import Variant


class ARDecoder(Variant):
    """ARDecoder(feat_dim, cond_dim, channels, layers, kernel): (x (B,T,F), d (B,H,T)) -> (mu, logvar)
    offsets, each (B, T, F); dilations 1, 2, 4, ... (receptive field 1 + (kernel-1)(2^layers - 1) frames)."""

    name = "ar"

    def __init__(self, feat_dim, cond_dim, channels=64, layers=4, kernel=2):
        super().__init__()
        self.kernel, self.dilations = kernel, [2 ** i for i in range(layers)]
        self.inp = nn.Conv1d(feat_dim, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, 2 * channels, kernel, dilation=r) for r in self.dilations)
        self.conds = nn.ModuleList(nn.Conv1d(cond_dim, 2 * channels, 1) for _ in self.dilations)
        self.res = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.skip = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.out = nn.Conv1d(channels, 2 * feat_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def enabled(cls, cfg):
        return cfg.decoder == "ar"

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.feat_dim, cfg.dec_hidden, cfg.ar_channels, cfg.ar_layers)

    def decoder_output(self, x, d, x_mu, x_logvar):
        """Teacher-forced p(x_t | x_<t, z1, z2) given x; without x the frames are generated (greedy)."""
        if x is None:
            return self.generate(x_mu, x_logvar, d)
        mu_o, lv_o = self(x, d)
        return x_mu + mu_o, x_logvar + lv_o

    @property
    def receptive_field(self):
        return 1 + (self.kernel - 1) * sum(self.dilations)

    def forward(self, x, d):
        """Teacher forcing: output t sees x_0..x_{t-1} (x shifted right one frame, zeros first) and d_t."""
        prev = F.pad(x.transpose(1, 2), (1, -1))   # (B, F, T): frame t holds x_{t-1}
        h, skips = self.inp(prev), 0.0
        for conv, cond, res, skip, r in zip(self.convs, self.conds, self.res, self.skip, self.dilations):
            a, b = (conv(F.pad(h, ((self.kernel - 1) * r, 0))) + cond(d)).chunk(2, dim=1)
            g = torch.tanh(a) * torch.sigmoid(b)
            h = h + res(g)
            skips = skips + skip(g)
        mu, logvar = self.out(F.relu(skips)).chunk(2, dim=1)
        return mu.transpose(1, 2), logvar.transpose(1, 2)

    @torch.no_grad()
    def generate(self, base_mu, base_logvar, d):
        """Greedy generation: x_t = mean of p(x_t | x_<t, d), frame by frame. base_mu/base_logvar: the
        FHVAE heads' outputs (B, T, F); d (B, H, T). Returns (mu, logvar) (B, T, F). O(T^2) convolutions."""
        T = base_mu.shape[1]
        x = base_mu.new_zeros(base_mu.shape)
        lv = base_logvar.clone()
        for t in range(T):
            # output t reads x_{t-R}..x_{t-1} (R = receptive field); the window's first frame only
            # feeds the shift, so it starts one frame earlier
            start = max(0, t - self.receptive_field)
            mu_o, lv_o = self(x[:, start:t + 1], d[:, :, start:t + 1])
            x[:, t] = base_mu[:, t] + mu_o[:, -1]
            lv[:, t] = base_logvar[:, t] + lv_o[:, -1]
        return x, lv


class ZForcing(Variant):
    """ZForcing(feat_dim, cond_dim, hidden): (x (B,T,F), d (B,H,T)) -> (aux (B,), back (B,)) in nats:
    aux = -log N(sg(b); mu(d), logvar(d)) summed over frames and dims (trains d, i.e. the latents);
    back = -log N(x_t; b_{t+1}) of the backward LSTM's reverse prediction (trains the backward LSTM)."""

    name = "zf"

    def __init__(self, feat_dim, cond_dim, hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(feat_dim, hidden, 1, batch_first=True)
        self.back_mu, self.back_logvar = nn.Linear(hidden, feat_dim), nn.Linear(hidden, feat_dim)
        self.aux_mu, self.aux_logvar = nn.Linear(cond_dim, hidden), nn.Linear(cond_dim, hidden)

    @classmethod
    def enabled(cls, cfg):
        return cfg.zforcing

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.feat_dim, cfg.dec_hidden, cfg.zforcing_hidden)

    def outputs(self, x, d):
        aux, back = self(x, d)
        return {"zf_aux": aux, "zf_back": back}

    def add_loss(self, loss, out, terms, t, step):
        terms["zf_aux"], terms["zf_back"] = out["zf_aux"], out["zf_back"]
        return loss + weight(t, step) * out["zf_aux"] + out["zf_back"]

    def backward_states(self, x):
        """b (B, T, hidden): b_t summarizes x_t..x_T (the LSTM run over the reversed segment)."""
        b, _ = self.lstm(x.flip(1))
        return b.flip(1)

    def forward(self, x, d):
        b = self.backward_states(x)
        nxt = F.pad(b[:, 1:], (0, 0, 0, 1))   # b_{t+1}, zeros after the last frame
        back = -log_gauss(x, self.back_mu(nxt), self.back_logvar(nxt))
        dt = d.transpose(1, 2)   # (B, T, H)
        aux = -log_gauss(b.detach(), self.aux_mu(dt), self.aux_logvar(dt))
        return aux, back


def weight(t, step):
    """Z-forcing weight at 0-based ``step``: t.zforcing_weight, ramped linearly from 0 over
    t.zforcing_anneal_steps (TrainConfig t)."""
    return t.zforcing_weight * (min(1.0, step / t.zforcing_anneal_steps) if t.zforcing_anneal_steps else 1.0)
