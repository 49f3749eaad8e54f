"""The interface of a model variant: a seed system such as a vq z1, an autoregressive decoder,
Z-forcing or time jitter (the list is ``fhvae/models/seed_systems.py``).

A variant is an ``nn.Module``. Variants enabled by ``model.*`` options are registered in the FHVAE
under their ``name`` (so their parameters are the model's, saved as ``<name>.*``); variants enabled by
``train.*`` options only (time jitter) live in the trainer. Every hook has a no-op default and a
variant overrides the ones it changes:

model (FHVAE.forward, encode_z1, decode)
    z1_posterior(z1_head, out)        -> (z1_mu, z1_logvar, z1) replacing the Gaussian q(z1|x,z2), or None
    z1_mean(z1_head)                  -> z1 (B, D) for inference, or None
    decoder_output(x, d, x_mu, x_logvar) -> (x_mu, x_logvar): the decoder's output distribution
    outputs(x, d)                     -> dict of extra outputs (inputs of its loss)
loss (FHVAE.segment_terms, FHVAE.loss)
    kl_z1(out)                        -> (B,) replacing KL(q(z1|x,z2) || p(z1)), or None
    add_loss(loss, out, terms, t, step) -> loss (B,) with the variant's cost added (not part of the bound)
trainer (fhvae/train/trainer.py)
    start_training(t)                 once before the first step (training state from TrainConfig t)
    lr_mults(t)                       -> {parameter: lr multiplier} for its own Adam groups
    z1_input(data, seq, start, seg_len, key) -> segments (B, T, F) the z1 encoder reads instead, or None
    after_step(out, key)              after each optimization step (key = (seed, rank, step))
    end_epoch(epoch, rec, opt, dist, seed) -> [parameters it re-initialized]: its epoch metrics into rec,
                                      epoch-level updates (the trainer re-syncs their moving averages)
    dev_batch(out); dev_stats()       -> dict of dev metrics (the dev bound's batches)
checkpoint
    train_state(); load_train_state(state): its training state besides the weights (rank-local)

Shapes: x (B, T, F) segments; d (B, H, T) the decoder's last-layer LSTM states; z1_head (B, z1_dim)
the z1 encoder's mean head; t is the TrainConfig.
"""
import torch.nn as nn


class Variant(nn.Module):
    """Base class: every hook does nothing. Subclasses set ``name`` and ``enabled(cfg)``."""
    name = ""
    deterministic_z1 = False   # True: z1 has no log-variance (the model drops its z1_logvar head)

    @classmethod
    def enabled(cls, cfg):
        """Whether the ModelConfig (model variants) or TrainConfig (trainer variants) asks for it."""
        return False

    @classmethod
    def from_config(cls, cfg):
        """The variant built from that config."""
        return cls()

    # ---- model
    def z1_posterior(self, z1_head, out):
        return None

    def z1_mean(self, z1_head):
        return None

    def decoder_output(self, x, d, x_mu, x_logvar):
        return x_mu, x_logvar

    def outputs(self, x, d):
        return {}

    # ---- loss
    def kl_z1(self, out):
        return None

    def add_loss(self, loss, out, terms, t, step):
        return loss

    # ---- trainer
    def start_training(self, t):
        pass

    def lr_mults(self, t):
        return {}

    def z1_input(self, data, seq, start, seg_len, key):
        return None

    def after_step(self, out, key):
        pass

    def end_epoch(self, epoch, rec, opt, dist, seed):
        return []

    def dev_batch(self, out):
        pass

    def dev_stats(self):
        return {}

    # ---- checkpoint
    def train_state(self):
        return None

    def load_train_state(self, state):
        pass
