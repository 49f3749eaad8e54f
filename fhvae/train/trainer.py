"""FHVAE training: hierarchical sampling (Algorithm 1 of Hsu & Glass 2018) or flat (2017).

Hierarchical: repeat { sample K sequences (block b); reset the K-row cache to the MAP estimates
sum_n zbar2 / (N + sigma_z2^2) over each sequence's segments; run the block's segment batches,
the discriminative denominator over those K rows }. The cache is a trainable parameter. A block's
last batch may be smaller than train.batch_size (the original code drops it; here every segment of
the pass is used).

Cache optimizer state (train.cache_optimizer): ``reset`` (default) gives the cache a fresh Adam
whenever a block starts, since its rows then stand for other sequences and the previous rows'
moments would push unrelated entries; ``carry`` keeps the moments across blocks, as the original
code's single Adam does. The model's Adam state always carries on.

Flat (the 2017 algorithm): one cache row per training sequence (M rows), started at N(0, I) as in
the original code (train.flat_cache_init = random) or at the MAP estimates (map), never reset; the
cache and its Adam carry on across passes; the denominator is over all M.

Resume: every block and segment order is a pure function of (seed, rank, block number), and the
reparameterization noise of step s is seeded from (seed, rank, s), so a checkpoint needs only the
weights, the optimizers, the cache and the position (block, batch): a killed run restarted with
the same command ends with the same model as an uninterrupted one.
"""
import json
import logging
import math
import os
import time

import numpy as np
import torch

from fhvae import infer
from fhvae.data.loader import BlockLoader, UttReader
from fhvae.data.sampler import FlatSampler, HierarchicalSampler, num_segments
from fhvae.errors import ConfigError, TrainingError
from fhvae.eval.plots import plot_training_curve
from fhvae.features.stats import load_stats
from fhvae.io.atomic import atomic_write_text
from fhvae.models import seed_systems
from fhvae.models.fhvae import FHVAE
from fhvae.train import checkpoint as ckpt
from fhvae.train import distributed
from fhvae.train.dev import DevSet, check_feat_dim, load_set
from fhvae.train.expdir import append_metrics, truncate_metrics
from fhvae.train.optim import adam, ema_model, load_adam_state, lr_scale, set_lr
from fhvae.train.progress import EpochProgress

log = logging.getLogger(__name__)


@torch.no_grad()
def map_cache(model, data, seg_len, device):
    """MAP estimate of mu2 for each sequence of a loaded block (BlockData) -> (K, z2_dim), from the
    block's first pass of segments (N_k of them for sequence k): sum_n zbar2 / (N_k + sigma_z2^2)."""
    blk = data.block
    s0 = int(blk.n_segs.sum())
    seq, start = blk.seg_seq[:s0], blk.seg_start[:s0]
    z2 = [infer.encode(model, data.segments(seq[i:i + 4096], start[i:i + 4096], seg_len).to(device), z1=False)["z2_mu"]
          for i in range(0, s0, 4096)]
    return infer.svectors(torch.cat(z2), torch.from_numpy(seq).to(device), len(blk.seqs), model.cfg.z2_prior_var)


class Trainer:
    """Runs training in ``exp_dir`` and resumes from its last checkpoint when there is one."""

    def __init__(self, cfg, train_dir, dev_dir, exp_dir, stats_path=None):
        self.cfg, self.exp_dir = cfg, exp_dir
        self.train_dir, self.dev_dir = os.path.abspath(train_dir), os.path.abspath(dev_dir)
        self.stats_path = os.path.abspath(stats_path or os.path.join(train_dir, "stats.npz"))
        self.ckpt_dir = os.path.join(exp_dir, "checkpoints")
        self.dist = distributed.setup(cfg.train.device)
        self.device = self.dist.device
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)

    # ---- set-up -------------------------------------------------------------------------
    def _prepare(self):
        cfg, t = self.cfg, self.cfg.train
        self.stats = load_stats(self.stats_path)
        self.index = load_set(self.train_dir, cfg.data.seg_len)
        if cfg.model.feat_dim != len(self.stats.mean):
            raise ConfigError(f"model.feat_dim={cfg.model.feat_dim} but {self.stats_path} has "
                              f"dim {len(self.stats.mean)} (set --model.feat_dim {len(self.stats.mean)})")
        check_feat_dim(self.index, cfg.model.feat_dim, self.train_dir)
        n_seg = num_segments(self.index.nframes, cfg.data.seg_len, cfg.data.seg_shift)
        self.seed = t.seed * 1000 + self.dist.rank   # each rank samples its own blocks
        if t.sampling == "hierarchical":
            if t.seq_batch_size > len(self.index):
                log.warning("train.seq_batch_size K=%d > M=%d training sequences: using K=M",
                            t.seq_batch_size, len(self.index))
            self.sampler = HierarchicalSampler(self.index.nframes, t.seq_batch_size, cfg.data.seg_len,
                                               cfg.data.seg_shift, t.block_passes, self.seed)
        else:
            self.sampler = FlatSampler(self.index.nframes, cfg.data.seg_len, cfg.data.seg_shift,
                                       t.block_passes, self.seed)
        self.utts = UttReader(self.index, self.stats, cfg.model.feat_dim, cfg.data.max_bad_utts)
        self.loader = BlockLoader(self.utts, self.sampler, prefetch=t.prefetch)
        log.info("train: %d sequences, %d segments per pass (%s sampling, K=%d, batch %d); rank %d/%d",
                 len(self.index), int(n_seg.sum()), t.sampling, self.sampler.k, t.batch_size,
                 self.dist.rank, self.dist.world)
        self.dev = DevSet(self.dev_dir, self.stats, cfg.data.seg_len, cfg.data.dev_seg_shift,
                          cfg.model.feat_dim, cfg.data.dev_max_utts, t.seed)
        torch.manual_seed(t.seed)   # identical initial weights on every rank
        self.model = FHVAE(cfg.model).to(self.device)
        self.ddp_model = self.dist.wrap(self.model)
        self.variants = self.model.variants + seed_systems.build(seed_systems.TRAIN_VARIANTS, t)
        for v in self.variants:
            v.start_training(t)
        mults = {p: m for v in self.variants for p, m in v.lr_mults(t).items()}   # a variant's own lr
        groups = [{"params": [p for p in self.model.parameters() if p not in mults]}]
        groups += [{"params": [p], "lr": t.lr * m} for p, m in mults.items()]
        self.opt = adam(groups, t, self.device)
        self.ema = ema_model(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.cache = self.cache_opt = None

    @property
    def eval_model(self):
        """The weights the dev bound, best.pt and the export use: the moving average with train.ema_decay."""
        return self.model if self.ema is None else self.ema.module

    def _new_cache(self, data):
        """Cache rows for a new block: the MAP estimates of its sequences (flat with flat_cache_init =
        random: N(0, I), seeded), with a fresh Adam, or the previous Adam with cache_optimizer = carry."""
        t = self.cfg.train
        if t.sampling == "flat" and t.flat_cache_init == "random":
            g = torch.Generator().manual_seed(self.seed)
            rows = torch.randn(len(data.block.seqs), self.cfg.model.z2_dim, generator=g).to(self.device)
        else:
            rows = map_cache(self.model, data, self.cfg.data.seg_len, self.device)
        if t.cache_optimizer == "carry" and self.cache is not None and self.cache.shape == rows.shape:
            with torch.no_grad():
                self.cache.copy_(rows)   # same Parameter: its Adam moments carry on
            return
        if self.cache is not None and t.cache_optimizer == "carry":
            log.warning("block %d has %d sequences (was %d, broken utterances dropped): the cache's Adam "
                        "moments restart", data.block.number, len(rows), len(self.cache))
        self.cache = torch.nn.Parameter(rows)
        self.cache_opt = adam([self.cache], t, self.device)

    # ---- main loop ----------------------------------------------------------------------
    def run(self):
        """Train until early stopping or max_epochs; returns the summary dict."""
        os.makedirs(self.ckpt_dir, exist_ok=True)
        done_path = os.path.join(self.exp_dir, "done")
        if os.path.isfile(done_path):
            log.info("%s: training already finished (use --overwrite to train again from scratch, or a "
                     "new --exp-dir)", self.exp_dir)
            with open(done_path) as f:
                return json.load(f)
        self._prepare()
        st = {"step": 0, "epoch": 0, "block": 0, "pos": 0, "best_dev": -math.inf, "best_step": 0,
              "bad_epochs": 0, "skipped": 0}
        try:
            resumed = self._resume(st)
            if resumed and self._stopped(st):   # e.g. killed after its last checkpoint, or done removed
                log.info("%s: the last checkpoint (epoch %d) already meets the stopping rule "
                         "(train.max_epochs=%d, train.patience=%d): not training further", self.exp_dir,
                         st["epoch"], self.cfg.train.max_epochs, self.cfg.train.patience)
            else:
                self._train(st, resumed)
        finally:
            self.loader.close()
            self.utts.close()
        summary = {"step": st["step"], "epoch": st["epoch"], "best_dev_bound": st["best_dev"],
                   "best_step": st["best_step"], "skipped_batches": st["skipped"],
                   "broken_utts": len(self.utts.bad)}
        if self.dist.rank == 0:
            atomic_write_text(done_path, json.dumps(summary, indent=1) + "\n")
        self.dist.barrier()
        return summary

    def _stopped(self, st):
        t = self.cfg.train
        return st["epoch"] >= t.max_epochs or st["bad_epochs"] >= t.patience

    def _train(self, st, resumed):
        """The step loop from the position in ``st`` until _end_epoch says stop."""
        t = self.cfg.train
        data = self.loader.get(st["block"])
        if not resumed:
            self._new_cache(data)
        acc, t0 = {}, time.time()
        progress = self._progress(st)
        try:
            while True:
                if st["pos"] >= data.block.batches(t.batch_size):   # block finished: next block
                    st["block"] += 1
                    st["pos"] = 0
                    data = self.loader.get(st["block"])
                    if t.sampling == "hierarchical":
                        self._new_cache(data)
                    continue
                terms = self._step(data, st)
                st["pos"] += 1
                st["step"] += 1
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v
                progress.update(terms)
                if st["step"] % t.epoch_steps == 0:
                    progress.close()
                    stop = self._end_epoch(st, acc, time.time() - t0)
                    acc, t0 = {}, time.time()
                    if stop:
                        break
                    progress = self._progress(st)
        finally:
            progress.close()

    def _progress(self, st):
        n = self.cfg.train.epoch_steps
        return EpochProgress(st["epoch"] + 1, n, st["step"] % n, show=self.dist.rank == 0)

    def _step(self, data, st):
        """One optimization step on batch st["pos"] of the block; returns the terms' batch means."""
        cfg, t = self.cfg, self.cfg.train
        x, local = data.batch(st["pos"], t.batch_size, cfg.data.seg_len)
        key = (self.seed, self.dist.rank, st["step"])   # seeds the variants' randomness
        x_z1 = None
        for v in self.variants:   # hook: what the z1 encoder reads (time jitter)
            x_z1 = v.z1_input(data, *data.block.batch(st["pos"], t.batch_size), cfg.data.seg_len, key)
            if x_z1 is not None:
                x_z1 = x_z1.to(self.device)
                break
        x, local = x.to(self.device), local.to(self.device)
        n = torch.from_numpy(data.block.n_segs).to(self.device)[local].float()
        torch.manual_seed(self.seed * 1_000_003 + st["step"])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=t.amp and self.device.type == "cuda"):
            out = self.ddp_model(x, x_z1=x_z1)
        loss, terms = self.model.loss(out, x, self.cache, local, n, t, st["step"])
        vals = {k: float(v.detach().mean()) for k, v in terms.items()}
        vals["loss"] = float(loss.detach())
        self.opt.zero_grad(set_to_none=True)
        self.cache_opt.zero_grad(set_to_none=True)
        if not self.dist.all_true(all(map(math.isfinite, vals.values()))):
            bad = ", ".join(f"{k}={v}" for k, v in vals.items() if not math.isfinite(v)) or "on another rank"
            if t.on_nonfinite == "stop":
                raise TrainingError(f"non-finite loss at step {st['step'] + 1} (block {st['block']}, "
                                    f"batch {st['pos']}): {bad}. Lower train.lr, check the features, or "
                                    f"set train.on_nonfinite=skip")
            st["skipped"] += 1
            log.warning("step %d: skipping batch with non-finite terms (%s); %d skipped so far",
                        st["step"] + 1, bad, st["skipped"])
            if st["skipped"] > t.max_skipped_batches:
                raise TrainingError(f"more than train.max_skipped_batches={t.max_skipped_batches} "
                                    f"batches with non-finite loss (last at step {st['step'] + 1}: {bad})")
            return {}
        loss.backward()
        scale = lr_scale(t, st["step"])
        set_lr(self.opt, scale)
        set_lr(self.cache_opt, scale)
        self.opt.step()
        self.cache_opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        for v in self.variants:
            v.after_step(out, key)
        return vals

    def _end_epoch(self, st, acc, secs):
        """Dev bound, metrics line, checkpoint, early stopping. Returns True to stop."""
        t = self.cfg.train
        st["epoch"] += 1
        self.eval_model.eval()
        dev = self.dev.bound(self.eval_model, self.device, seed=t.seed)
        self.eval_model.train()
        if not math.isfinite(dev["bound"]):
            raise TrainingError(f"dev lower bound is {dev['bound']} after step {st['step']} "
                                f"(terms: {dev}); stopping")
        n = max(1, t.epoch_steps)
        improved = dev["bound"] > st["best_dev"]
        if improved:
            st["best_dev"], st["best_step"], st["bad_epochs"] = dev["bound"], st["step"], 0
        else:
            st["bad_epochs"] += 1
        rec = {"epoch": st["epoch"], "step": st["step"], "block": st["block"], "time_s": round(secs, 2),
               "steps_per_s": round(n / max(secs, 1e-9), 3),
               "train": {k: round(v / n, 4) for k, v in acc.items()},
               "dev": {k: round(v, 4) for k, v in dev.items()}, "best": improved}
        for v in self.variants:
            for p in v.end_epoch(st["epoch"], rec, self.opt, self.dist, self.seed) or ():
                self._resync_average(p)
        self._save(st, improved)
        if self.dist.rank == 0:
            append_metrics(self.exp_dir, rec)
            plot_training_curve(self.exp_dir)
            log.info("epoch %d step %d: train loss %.2f, dev bound %.2f%s (%.1f steps/s)", st["epoch"],
                     st["step"], rec["train"].get("loss", float("nan")), dev["bound"],
                     " (best)" if improved else "", rec["steps_per_s"])
        if st["bad_epochs"] >= t.patience:
            log.info("early stopping: no dev improvement for %d epochs (best %.2f at step %d)",
                     t.patience, st["best_dev"], st["best_step"])
            return True
        if st["epoch"] >= t.max_epochs:
            log.info("reached train.max_epochs=%d", t.max_epochs)
            return True
        return False

    def _resync_average(self, param):
        """A parameter a variant re-initialized (vq's k-means codebook): its moving average restarts at
        the new value instead of interpolating between unrelated old and new values."""
        if self.ema is not None:
            name = next(k for k, p in self.model.named_parameters() if p is param)
            with torch.no_grad():
                self.ema.module.get_parameter(name).copy_(param)

    # ---- checkpoints ----------------------------------------------------------------------
    def _save(self, st, improved):
        step = st["step"]
        ckpt.save_part(self.ckpt_dir, step, f"rank{self.dist.rank}", {
            "cache": self.cache.detach().cpu(), "cache_opt": self.cache_opt.state_dict(),
            "block": st["block"], "pos": st["pos"], "step": step,
            "broken": {int(i): str(why) for i, why in self.utts.bad.items()},
            "variants": {v.name: v.train_state() for v in self.variants}})
        if self.dist.rank == 0:
            ckpt.save_part(self.ckpt_dir, step, "model", {
                "model": self.model.state_dict(), "opt": self.opt.state_dict(), "state": dict(st),
                "world": self.dist.world, "ema": None if self.ema is None else self.ema.state_dict()})
            if improved:
                ckpt.save_best(self.ckpt_dir, self.eval_model.state_dict(),
                               {"step": step, "dev_bound": st["best_dev"]})
        self.dist.barrier()
        if self.dist.rank == 0:
            ckpt.commit(self.ckpt_dir, step)
        self.dist.barrier()

    def _resume(self, st):
        d = ckpt.last_step_dir(self.ckpt_dir)
        if d is None:
            return False
        main = ckpt.load_part(d, "model", self.device)
        if main.get("world", 1) != self.dist.world:
            raise ConfigError(f"{d} was written by {main.get('world')} ranks; resume with the same number "
                              f"(now {self.dist.world})")
        part = ckpt.load_part(d, f"rank{self.dist.rank}", self.device)
        self.model.load_state_dict(main["model"])
        load_adam_state(self.opt, main["opt"])
        if self.ema is not None:
            if main.get("ema") is None:
                raise ConfigError(f"{d} was written without train.ema_decay; resume with the config it was "
                                  f"trained with")
            self.ema.load_state_dict(main["ema"])
        st.update(main["state"])
        st["block"], st["pos"] = part["block"], part["pos"]
        self.utts.bad.update(part.get("broken", {}))
        self.cache = torch.nn.Parameter(part["cache"].to(self.device))
        self.cache_opt = adam([self.cache], self.cfg.train, self.device)
        load_adam_state(self.cache_opt, part["cache_opt"])
        states = part.get("variants") or {}
        for v in self.variants:
            if v.name in states:
                v.load_train_state(states[v.name])
            elif v.train_state() is not None:
                raise ConfigError(f"{d}: no training state of the {v.name} variant (written by another version "
                                  f"or config); train again with --overwrite")
        if self.dist.rank == 0:
            truncate_metrics(self.exp_dir, st["step"])
        log.info("resumed from %s: step %d, epoch %d, block %d batch %d", d, st["step"], st["epoch"],
                 st["block"], st["pos"])
        return True
