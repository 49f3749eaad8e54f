"""The training step that the benchmarks time: fhvae-train's model, loss (FHVAE.loss) and Adam
(train.optim.adam) on fixed random data. The only place the benchmarks build a step.
"""
import torch

from fhvae.config import TrainConfig
from fhvae.cpu import kernels as cpu_kernels
from fhvae.models import losses
from fhvae.models.fhvae import FHVAE
from fhvae.train.optim import adam

SEG_LEN = 20   # frames per segment (the paper's)


class Step:
    """One optimization step of the paper model: forward, loss, backward, Adam on model and cache.

    ``Step(cfg, k, batch, device)()`` runs it on ``batch`` random segments of ``seg_len`` frames with a
    ``k``-row cache (cfg: ModelConfig; alpha 10, lr 1e-3, betas 0.95 / 0.999).
    ``plain``: nn.LSTM on CPU too; ``amp``: bf16 autocast (cuda); ``dense``: the 2017 (B, K, D)
    discriminative term; ``fused``: the C LSTM kernels (fhvae/cpu); ``fused_adam``: fhvae-train's
    Adam (False: torch.optim.Adam's per-parameter loop). ``x``, ``idx``, ``n`` may be replaced.
    """

    def __init__(self, cfg, k, batch, device, plain=False, amp=False, dense=False, fused=True, fused_adam=True,
                 seg_len=SEG_LEN):
        self.device, self.amp, self.dense, self.fused = device, amp, dense, fused
        self.model = FHVAE(cfg, plain=plain).to(device)
        self.net = self.model   # what the forward pass calls (a DistributedDataParallel wrapper, or the model)
        self.t = t = TrainConfig(lr=1e-3, beta1=0.95, beta2=0.999, alpha=10.0)
        opt = adam if fused_adam else lambda p, t, _: torch.optim.Adam(p, lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt = opt(self.model.parameters(), t, device)   # fhvae-train's, or Adam's per-parameter loop
        self.cache = torch.nn.Parameter(torch.randn(k, cfg.z2_dim, device=device))
        self.copt = opt([self.cache], t, device)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, seg_len, cfg.feat_dim, generator=g).to(device)
        self.idx = torch.randint(0, k, (batch,), generator=g).to(device)
        self.n = torch.full((batch,), 30.0, device=device)
        self.prior_var = cfg.z2_prior_var

    def __call__(self):
        with cpu_kernels.use(self.fused):
            self._step()

    def _step(self):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(self.x)
        if self.dense:   # the 2017 code's formulation: a dense (B, K, D) difference tensor
            loss = losses.fhvae_loss(out, self.x, self.cache, self.idx, self.n, 0.0, self.prior_var)[0].mean()
            d = ((out["z2_mu"][:, None, :].float() - self.cache[None]) ** 2).sum(-1)
            logits = -d / (2 * self.prior_var)
            loss = loss - 10.0 * (logits.gather(1, self.idx[:, None])[:, 0]
                                  - torch.logsumexp(logits, 1)).mean()
        else:
            loss, _ = self.model.loss(out, self.x, self.cache, self.idx, self.n, self.t)
        self.opt.zero_grad(set_to_none=True)
        self.copt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.copt.step()
