"""Vector-quantized z1 bottleneck (VQ-VAE) with the robust-training tricks of Łańcucki et al. (2020):
``model.z1_bottleneck = vq``.

    ze = W BatchNorm(h) + b          h (B, D): the z1 head's output (the Gaussian model's z1_mu)
    k  = argmin_j ||ze - e_j||^2     codebook E (K, D)
    z1 = ze + sg(e_k - ze)           straight-through: forward e_k, gradient of ze

Loss per segment (summed over the D dims, nats-like scale of the bound):
||sg(ze) - e_k||^2 (moves the codes) + commitment * ||ze - sg(e_k)||^2 (moves the encoder).
With a deterministic posterior and a uniform prior over K codes, KL(q(z1|x) || p(z1)) = log K.

Training tricks: the codebook is its own Adam group at ``train.vq_lr_mult`` times the lr, and at the
start of the first ``train.vq_reinit_epochs`` epochs (after the first) the codebook is re-initialized
by k-means++ / k-means on a ``Reservoir`` of the last epoch's encoder outputs. Codebook usage
(entropy / ln K, perplexity, codes used) is logged for training and dev.
"""
import logging
import math

import numpy as np
import torch
import torch.nn as nn

from fhvae.models.variant import Variant

log = logging.getLogger(__name__)


class VectorQuantizer(Variant):
    """VectorQuantizer(dim, codes): h (B, D) -> dict z1 (B, D) quantized (straight-through),
    codes (B,) long, ze (B, D) pre-quantization outputs, loss (B,)."""
    name = "vq"
    deterministic_z1 = True

    def __init__(self, dim, codes, commitment=0.25, batchnorm=True):
        super().__init__()
        self.num_codes, self.commitment = codes, commitment
        self.norm = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.codebook = nn.Parameter(torch.empty(codes, dim))
        self.reset_parameters()
        self.reservoir = self.code_counts = self.dev_counts = None   # training state (start_training)

    @classmethod
    def enabled(cls, cfg):
        return cfg.z1_bottleneck == "vq"

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.z1_dim, cfg.vq_codes, cfg.vq_commitment, cfg.vq_batchnorm)

    def reset_parameters(self):
        """Codes uniform in [-1/K, 1/K] (the VQ-VAE default); projection Glorot, zero bias."""
        nn.init.uniform_(self.codebook, -1.0 / self.num_codes, 1.0 / self.num_codes)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def nearest(self, ze):
        """Index of the nearest code (squared L2) of each row of ze (B, D) -> (B,) long."""
        e = self.codebook
        d = (e * e).sum(1) - 2.0 * ze @ e.t()   # ||ze||^2 is the same for every code
        return d.argmin(1)

    def quantize(self, h):
        """h (B, D) -> the nearest code vectors (B, D) exactly (inference: no straight-through sum)."""
        return self.codebook[self.nearest(self.proj(self.norm(h)))]

    def forward(self, h):
        ze = self.proj(self.norm(h))
        codes = self.nearest(ze.detach())
        zq = self.codebook[codes]
        loss = ((ze.detach() - zq) ** 2).sum(1) + self.commitment * ((ze - zq.detach()) ** 2).sum(1)
        return {"z1": ze + (zq - ze).detach(), "codes": codes, "ze": ze, "loss": loss}

    @property
    def kl(self):
        """KL(q(z1|x) || uniform over K codes) = log K nats (deterministic posterior)."""
        return math.log(self.num_codes)

    @torch.no_grad()
    def reinit(self, data, seed=0, max_iter=50):
        """Codebook <- k-means (k-means++ start) centroids of data (N, D), N >= K. Returns the inertia
        per point (mean squared distance to the nearest centroid)."""
        from sklearn.cluster import KMeans

        x = np.asarray(data, dtype=np.float64)
        km = KMeans(self.num_codes, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed).fit(x)
        self.codebook.copy_(torch.as_tensor(km.cluster_centers_, dtype=self.codebook.dtype))
        return float(km.inertia_) / len(x)

    # ---- Variant hooks
    def z1_posterior(self, z1_head, out):
        q = self(z1_head)
        out.update(vq_codes=q["codes"], vq_ze=q["ze"], vq_loss=q["loss"])
        return q["z1"], None, q["z1"]   # deterministic: no log-variance, the sample is the code

    def z1_mean(self, z1_head):
        return self.quantize(z1_head)

    def kl_z1(self, out):
        return torch.full_like(out["z1"][:, 0], self.kl)

    def add_loss(self, loss, out, terms, t, step):
        terms["vq"] = out["vq_loss"]
        return loss + out["vq_loss"]

    def start_training(self, t):
        self.reinit_epochs = t.vq_reinit_epochs
        self.reservoir = Reservoir(t.vq_reservoir, self.codebook.shape[1])
        self.code_counts = np.zeros(self.num_codes, dtype=np.int64)

    def lr_mults(self, t):
        return {self.codebook: t.vq_lr_mult}

    def after_step(self, out, key):
        self.code_counts += np.bincount(out["vq_codes"].cpu().numpy(), minlength=self.num_codes)
        self.reservoir.add(out["vq_ze"], seed=key)

    def end_epoch(self, epoch, rec, opt, dist, seed):
        """Codebook usage of the epoch's training batches into rec["train"]; the codebook re-initialized
        by k-means on the reservoir (epochs 1..vq_reinit_epochs, i.e. at the start of 2..N+1), its Adam
        moments reset; the reservoir emptied for the next epoch. Returns [codebook] if re-initialized."""
        u = usage(self.code_counts)
        rec["train"].update(vq_usage=round(u["usage"], 4), vq_perplexity=round(u["perplexity"], 2),
                            vq_used=u["used"])
        self.code_counts[:] = 0
        reinit = epoch <= self.reinit_epochs and len(self.reservoir) >= self.num_codes
        if reinit:
            inertia = self.reinit(self.reservoir.data[:len(self.reservoir)], seed=seed + epoch)
            dist.broadcast(self.codebook.data)
            opt.state.pop(self.codebook, None)
            rec["vq_reinit"] = round(inertia, 4)
            log.info("epoch %d: codebook re-initialized by k-means on %d encoder outputs (inertia %.3f)",
                     epoch, len(self.reservoir), inertia)
        self.reservoir.clear()
        return [self.codebook] if reinit else []

    def dev_batch(self, out):
        counts = np.bincount(out["vq_codes"].cpu().numpy(), minlength=self.num_codes)
        self.dev_counts = counts if self.dev_counts is None else self.dev_counts + counts

    def dev_stats(self):
        """Codebook usage on dev (not a bound term)."""
        u, self.dev_counts = usage(self.dev_counts if self.dev_counts is not None else []), None
        return {"vq_usage": u["usage"], "vq_perplexity": u["perplexity"], "vq_used": u["used"]}

    def train_state(self):
        """Tensors and ints (checkpoints are read with weights_only=True)."""
        r = self.reservoir.state_dict()
        return {"reservoir": {"data": torch.from_numpy(r["data"]), "seen": int(r["seen"])},
                "code_counts": torch.from_numpy(self.code_counts.copy())}

    def load_train_state(self, state):
        r = state["reservoir"]
        self.reservoir.load_state_dict({"data": torch.as_tensor(r["data"]).numpy(), "seen": r["seen"]})
        self.code_counts[:] = torch.as_tensor(state["code_counts"]).numpy()


def usage(counts):
    """Codebook usage of code counts (K,): dict entropy (nats), usage = entropy / ln K in [0, 1],
    perplexity = exp(entropy) (the effective number of codes), used = codes seen at least once."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return {"entropy": 0.0, "usage": 0.0, "perplexity": 1.0, "used": 0}
    p = counts[counts > 0] / n
    h = float(-(p * np.log(p)).sum())
    return {"entropy": h, "usage": h / math.log(len(counts)) if len(counts) > 1 else 0.0,
            "perplexity": math.exp(h), "used": int((counts > 0).sum())}


class Reservoir:
    """Uniform sample (reservoir sampling, Algorithm R) of at most ``capacity`` rows of the vectors
    added since the last ``clear()``. Deterministic: ``add(x, seed)`` draws from a generator seeded by
    ``seed`` (e.g. the step), so the content is a function of the rows and seeds it was given."""

    def __init__(self, capacity, dim):
        self.capacity = capacity
        self.data = np.zeros((capacity, dim), dtype=np.float32)
        self.seen = 0

    def __len__(self):
        return min(self.seen, self.capacity)

    def clear(self):
        self.seen = 0

    def add(self, x, seed):
        """x (B, D) array or tensor of new rows."""
        x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        n0, b = self.seen, len(x)
        fill = max(0, min(b, self.capacity - n0))   # rows that go to free slots
        self.data[n0:n0 + fill] = x[:fill]
        if fill < b:   # row number i (0-based, over all rows seen) replaces slot j ~ U{0..i} if j < capacity
            i = np.arange(n0 + fill, n0 + b)
            j = np.random.default_rng(seed).integers(0, i + 1)
            keep = j < self.capacity
            self.data[j[keep]] = x[fill:][keep]
        self.seen = n0 + b

    def state_dict(self):
        return {"data": self.data[:len(self)].copy(), "seen": self.seen}

    def load_state_dict(self, st):
        self.seen = int(st["seen"])
        self.data[:len(st["data"])] = st["data"]
