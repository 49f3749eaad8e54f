"""FHVAE training: hierarchical sampling (Algorithm 1 of Hsu & Glass 2018) or flat (2017).

Hierarchical: repeat { sample K sequences (block b); reset the K-row cache to the MAP estimates
sum_n zbar2 / (N + sigma_z2^2) over each sequence's segments; run the block's segment batches,
the discriminative denominator over those K rows }. The cache is a trainable parameter.

Cache optimizer state: the cache has its own Adam, created afresh whenever a block starts (its
rows then stand for different sequences, so the previous rows' moments would push unrelated
entries). The model's Adam state carries on across blocks.

Flat: one cache row per training sequence (M rows), initialised once with the same MAP estimate,
never reset; the cache and its Adam carry on across passes; the denominator is over all M.

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
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from fhvae import config as config_mod
from fhvae.data.index import UttIndex
from fhvae.data.loader import BlockData, BlockLoader, UttReader
from fhvae.data.sampler import FlatSampler, HierarchicalSampler, fixed_segments, jitter_starts, num_segments
from fhvae.errors import ConfigError, DataError, TrainingError
from fhvae.features.stats import load_stats
from fhvae.io.atomic import atomic_write_text
from fhvae.models.fhvae import FHVAE, inference_batch
from fhvae.models import losses
from fhvae.models.vq import Reservoir, usage as vq_usage
from fhvae.train import checkpoint as ckpt
from fhvae.train import distributed

log = logging.getLogger(__name__)


def lr_scale(t, step):
    """Learning-rate factor at 0-based step ``step`` for TrainConfig t: linear warm-up over
    lr_warmup_steps, then cosine decay to lr_final over lr_decay_steps, then constant (1 throughout
    with both 0). A pure function of the step, so resumed runs follow the same schedule."""
    if step < t.lr_warmup_steps:
        return (step + 1) / t.lr_warmup_steps
    if t.lr_decay_steps == 0:
        return 1.0
    progress = min(1.0, (step - t.lr_warmup_steps) / t.lr_decay_steps)
    return t.lr_final + (1 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))


def adam(params, t, device):
    """Adam with TrainConfig t's lr and betas, PyTorch's fused kernel on CPU and CUDA (one pass over
    all parameters: the mini model's update ~3x as fast as torch.optim.Adam's per-parameter loop on
    2 cores, ~2 ms less per step; BENCHMARKS.md 3g)."""
    return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2),
                            fused=torch.device(device).type in ("cpu", "cuda"))


def load_adam_state(opt, state):
    """``opt.load_state_dict(state)`` keeping opt's own ``fused`` setting, which load_state_dict would
    take from the saved groups (a state saved before fhvae-train used the fused Adam would switch it off)."""
    fused = [g["fused"] for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, f in zip(opt.param_groups, fused):
        g["fused"] = f


def ema_model(model, decay):
    """A copy of ``model`` whose weights follow an exponential moving average of ``model``'s
    (``update_parameters(model)`` after each step): decay min(decay, (1 + n) / (10 + n)) after n updates,
    so the first steps' weights fade out quickly. Buffers are averaged too (batch-norm statistics),
    integer ones (its batch counter) copied."""
    @torch.no_grad()
    def update(avg, cur, n):   # called per device and dtype
        if not avg[0].is_floating_point():
            torch._foreach_copy_(avg, cur)
            return
        n = float(n)
        torch._foreach_lerp_(avg, cur, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def load_set(data_dir, seg_len):
    """UttIndex of a data dir without the sequences shorter than one segment (count logged)."""
    index = UttIndex.from_data_dir(data_dir)
    short = index.nframes < seg_len
    if short.any():
        log.warning("%s: skipping %d of %d utterances shorter than one segment (%d frames), e.g. %s",
                    data_dir, int(short.sum()), len(index), seg_len, index.name(int(np.flatnonzero(short)[0])))
        index = index.subset(~short)
    if len(index) == 0:
        raise DataError(f"{data_dir}: no utterance is at least {seg_len} frames long")
    return index


@torch.no_grad()
def z2_means(model, x, batch=None):
    """Posterior means of z2 for segments x (S, T, D) -> (S, z2_dim), in chunks (inference_batch)."""
    batch = batch or inference_batch(x.device)
    out = [model.encode_z2(x[i:i + batch])[0] for i in range(0, len(x), batch)]
    return torch.cat(out) if out else x.new_zeros(0, model.cfg.z2_dim)


@torch.no_grad()
def map_cache(model, data, seg_len, prior_var, device):
    """MAP estimate of mu2 for each sequence of a loaded block -> (K, z2_dim).

    Uses the block's first pass of segments (N_k of them for sequence k): sum_n zbar2 / (N_k + prior_var).
    """
    blk = data.block
    s0 = int(blk.n_segs.sum())
    seq, start = blk.seg_seq[:s0], blk.seg_start[:s0]
    sums = torch.zeros(len(blk.seqs), model.cfg.z2_dim, device=device)
    for i in range(0, s0, 4096):
        x = data.segments(seq[i:i + 4096], start[i:i + 4096], seg_len).to(device)
        sums.index_add_(0, torch.from_numpy(seq[i:i + 4096]).to(device), z2_means(model, x))
    n = torch.from_numpy(blk.n_segs).to(device=device, dtype=sums.dtype)
    return losses.map_mu2(sums, n[:, None], prior_var)


class DevSet:
    """Dev sequences loaded once (all, or a seeded sample of ``max_utts``): non-overlapping segments."""

    def __init__(self, data_dir, stats, seg_len, shift, feat_dim, max_utts=0, seed=0):
        index = load_set(data_dir, seg_len)
        if 0 < max_utts < len(index):   # a fixed, seeded sample keeps memory bounded on large dev sets
            keep = np.sort(np.random.default_rng(seed).choice(len(index), max_utts, replace=False))
            log.info("%s: dev bound on %d of %d utterances (data.dev_max_utts)", data_dir, max_utts, len(index))
            index = index.subset(keep)
        reader = UttReader(index, stats, feat_dim)
        segs, seq = [], []
        for i in range(len(index)):
            x = reader.load(i)
            if x is None:
                continue
            starts = fixed_segments(len(x), seg_len, shift)
            segs.append(np.stack([x[s:s + seg_len] for s in starts]))
            seq.append(np.full(len(starts), len(seq)))
        reader.close()
        if not segs:
            raise DataError(f"{data_dir}: no usable dev utterance")
        self.x = torch.from_numpy(np.concatenate(segs))
        self.seq = torch.from_numpy(np.concatenate(seq))
        self.n_seqs = len(segs)

    @torch.no_grad()
    def bound(self, model, prior_var, device, seed):
        """Mean segment lower bound (nats/segment) and its terms, mu2 = per-sequence MAP; with a vq z1
        also the codebook usage on dev (vq_usage, vq_perplexity, vq_used)."""
        torch.manual_seed(seed)
        n = torch.bincount(self.seq, minlength=self.n_seqs).to(device)
        x = self.x.to(device)
        sums = torch.zeros(self.n_seqs, model.cfg.z2_dim, device=device)
        sums.index_add_(0, self.seq.to(device), z2_means(model, x))
        mu2 = losses.map_mu2(sums, n[:, None].float(), prior_var)
        tot, counts = {}, 0
        for i in range(0, len(x), 1024):
            xb, sb = x[i:i + 1024], self.seq[i:i + 1024].to(device)
            out = model(xb)
            t = losses.segment_terms(out, xb, mu2[sb], n[sb].float(), prior_var, model.cfg.vq_codes)
            for k, v in t.items():
                tot[k] = tot.get(k, 0.0) + float(v.sum())
            if "vq_codes" in out:
                counts = counts + np.bincount(out["vq_codes"].cpu().numpy(), minlength=model.cfg.vq_codes)
        res = {k: v / len(x) for k, v in tot.items()}
        if model.vq is not None:   # codebook usage on dev (not a bound term)
            u = vq_usage(counts)
            res.update(vq_usage=u["usage"], vq_perplexity=u["perplexity"], vq_used=u["used"])
        return res


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
        n_seg = num_segments(self.index.nframes, cfg.data.seg_len, cfg.data.seg_shift)
        seed = t.seed * 1000 + self.dist.rank   # each rank samples its own blocks
        if t.sampling == "hierarchical":
            if t.seq_batch_size > len(self.index):
                log.warning("train.seq_batch_size K=%d > M=%d training sequences: using K=M",
                            t.seq_batch_size, len(self.index))
            self.sampler = HierarchicalSampler(self.index.nframes, t.seq_batch_size, cfg.data.seg_len,
                                               cfg.data.seg_shift, t.block_passes, seed)
        else:
            self.sampler = FlatSampler(self.index.nframes, cfg.data.seg_len, cfg.data.seg_shift,
                                       t.block_passes, seed)
        self.seed = seed
        self.utts = UttReader(self.index, self.stats, cfg.model.feat_dim, cfg.data.max_bad_utts)
        self.loader = BlockLoader(self.utts, self.sampler,
                                  prefetch=t.prefetch and t.sampling == "hierarchical")
        log.info("train: %d sequences, %d segments per pass (%s sampling, K=%d, batch %d); rank %d/%d",
                 len(self.index), int(n_seg.sum()), t.sampling, self.sampler.k, t.batch_size,
                 self.dist.rank, self.dist.world)
        self.dev = DevSet(self.dev_dir, self.stats, cfg.data.seg_len, cfg.data.dev_seg_shift,
                          cfg.model.feat_dim, cfg.data.dev_max_utts, t.seed)
        torch.manual_seed(t.seed)   # identical initial weights on every rank
        self.model = FHVAE(cfg.model).to(self.device)
        self.ddp_model = self.dist.wrap(self.model)
        vq = self.model.vq
        if vq is None:
            groups = [{"params": list(self.model.parameters())}]
        else:   # the codebook in its own group at vq_lr_mult x lr (Łańcucki et al. 2020)
            groups = [{"params": [p for p in self.model.parameters() if p is not vq.codebook]},
                      {"params": [vq.codebook], "lr": t.lr * t.vq_lr_mult}]
            self.reservoir = Reservoir(t.vq_reservoir, cfg.model.z1_dim)
            self.code_counts = np.zeros(cfg.model.vq_codes, dtype=np.int64)
        self.opt = adam(groups, t, self.device)
        self.ema = ema_model(self.model, t.ema_decay) if t.ema_decay > 0 else None

    @property
    def eval_model(self):
        """The weights the dev bound, best.pt and the export use: the moving average with train.ema_decay."""
        return self.model if self.ema is None else self.ema.module

    def _new_cache(self, data):
        """Cache rows = MAP estimates for the block's sequences, with a fresh Adam."""
        p = self.cfg.model.z2_prior_var
        self.cache = torch.nn.Parameter(map_cache(self.model, data, self.cfg.data.seg_len, p, self.device))
        self.cache_opt = adam([self.cache], self.cfg.train, self.device)

    # ---- main loop ----------------------------------------------------------------------
    def run(self):
        """Train until early stopping or max_epochs; returns the summary dict."""
        t = self.cfg.train
        os.makedirs(self.ckpt_dir, exist_ok=True)
        done_path = os.path.join(self.exp_dir, "done")
        if os.path.isfile(done_path):
            log.info("%s: training already finished (remove '%s' to train again)", self.exp_dir, done_path)
            with open(done_path) as f:
                return json.load(f)
        self._prepare()
        st = {"step": 0, "epoch": 0, "block": 0, "pos": 0, "best_dev": -math.inf, "best_step": 0,
              "bad_epochs": 0, "skipped": 0}
        resumed = self._resume(st)
        data = self._block_data(st["block"])
        if not resumed:
            self._new_cache(data)
        acc, t0 = {}, time.time()
        bar = self._bar(st)
        try:
            while True:
                nb = data.block.batches(t.batch_size)
                if st["pos"] >= nb:   # block finished: next block
                    st["block"] += 1
                    st["pos"] = 0
                    data = self._block_data(st["block"])
                    if t.sampling == "hierarchical":
                        self._new_cache(data)
                    continue
                terms = self._step(data, st)
                st["pos"] += 1
                st["step"] += 1
                for k, v in terms.items():
                    acc[k] = acc.get(k, 0.0) + v
                bar.update(1)
                bar.set_postfix({k: f"{terms[k]:.1f}" for k in ("loss", "log_px", "kl_z1", "kl_z2", "disc")
                                 if k in terms}, refresh=False)
                if st["step"] % t.epoch_steps == 0:
                    bar.close()
                    stop = self._end_epoch(st, acc, time.time() - t0)
                    acc, t0 = {}, time.time()
                    if stop:
                        break
                    bar = self._bar(st)
        finally:
            bar.close()
            self.loader.close()
            self.utts.close()
        summary = {"step": st["step"], "epoch": st["epoch"], "best_dev_bound": st["best_dev"],
                   "best_step": st["best_step"], "skipped_batches": st["skipped"],
                   "broken_utts": len(self.utts.bad)}
        if self.dist.rank == 0:
            atomic_write_text(done_path, json.dumps(summary, indent=1) + "\n")
        self.dist.barrier()
        return summary

    def _bar(self, st):
        return tqdm(total=self.cfg.train.epoch_steps, desc=f"epoch {st['epoch'] + 1}", unit="step",
                    disable=self.dist.rank != 0, dynamic_ncols=True, mininterval=2.0)

    def _block_data(self, b):
        """Loaded block b. Flat sampling keeps the whole training set loaded and reorders it."""
        if self.cfg.train.sampling == "flat" and getattr(self, "_flat_feats", None) is not None:
            return BlockData(self._flat_sampler.block(b), self._flat_feats)
        data = self.loader.get(b)
        if self.cfg.train.sampling == "flat":
            lengths = np.array([len(f) for f in data.feats])
            s = self.cfg
            self._flat_sampler = FlatSampler(lengths, s.data.seg_len, s.data.seg_shift, s.train.block_passes,
                                             self.seed)
            self._flat_feats = data.feats
            data = BlockData(self._flat_sampler.block(b), data.feats)
        return data

    def _step(self, data, st):
        cfg, t = self.cfg, self.cfg.train
        x, local = data.batch(st["pos"], t.batch_size, cfg.data.seg_len)
        x_z1 = self._jittered(data, st) if t.z1_jitter > 0 else None
        x, local = x.to(self.device), local.to(self.device)
        n = torch.from_numpy(data.block.n_segs).to(self.device)[local].float()
        torch.manual_seed(self.seed * 1_000_003 + st["step"])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=t.amp and self.device.type == "cuda"):
            out = self.ddp_model(x, x_z1=x_z1)
        loss, terms = losses.fhvae_loss(out, x, self.cache, local, n, t.alpha, cfg.model.z2_prior_var,
                                        cfg.model.vq_codes, self._zf_weight(st["step"]))
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
        for opt in (self.opt, self.cache_opt):
            for g in opt.param_groups:
                g["lr"] = g.setdefault("base_lr", g["lr"]) * scale
        self.opt.step()
        self.cache_opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if "vq_codes" in out:
            self.code_counts += np.bincount(out["vq_codes"].cpu().numpy(), minlength=len(self.code_counts))
            self.reservoir.add(out["vq_ze"], seed=(self.seed, self.dist.rank, st["step"]))
        return vals

    def _jittered(self, data, st):
        """Time jitter: the segments (B, T, F) the z1 encoder reads (sampler.jitter_starts), seeded by
        (seed, rank, step)."""
        t, T = self.cfg.train, self.cfg.data.seg_len
        seq, start = data.block.batch(st["pos"], t.batch_size)
        rng = np.random.default_rng((self.seed, self.dist.rank, st["step"], 7))
        lengths = np.array([len(data.feats[k]) for k in seq])
        start = jitter_starts(start, lengths, T, t.z1_jitter, t.z1_jitter_shift, rng)
        return data.segments(seq, start, T).to(self.device)

    def _zf_weight(self, step):
        """Z-forcing weight at a step: zforcing_weight, ramped linearly from 0 over zforcing_anneal_steps."""
        t = self.cfg.train
        return t.zforcing_weight * (min(1.0, step / t.zforcing_anneal_steps) if t.zforcing_anneal_steps else 1.0)

    def _vq_epoch(self, st, rec):
        """End of an epoch with a vq bottleneck: codebook usage of the epoch's training batches into
        rec["train"]; the codebook re-initialized by k-means on the reservoir (first vq_reinit_epochs
        epochs), its Adam moments reset; the reservoir emptied for the next epoch."""
        t, vq = self.cfg.train, self.model.vq
        u = vq_usage(self.code_counts)
        rec["train"].update(vq_usage=round(u["usage"], 4), vq_perplexity=round(u["perplexity"], 2),
                            vq_used=u["used"])
        self.code_counts[:] = 0
        if st["epoch"] <= t.vq_reinit_epochs and len(self.reservoir) >= vq.num_codes:
            inertia = vq.reinit(self.reservoir.data[:len(self.reservoir)], seed=self.seed + st["epoch"])
            self.dist.broadcast(vq.codebook.data)
            self.opt.state.pop(vq.codebook, None)
            rec["vq_reinit"] = round(inertia, 4)
            log.info("epoch %d: codebook re-initialized by k-means on %d encoder outputs (inertia %.3f)",
                     st["epoch"], len(self.reservoir), inertia)
        self.reservoir.clear()

    def _end_epoch(self, st, acc, secs):
        """Dev bound, metrics line, checkpoint, early stopping. Returns True to stop."""
        cfg, t = self.cfg, self.cfg.train
        st["epoch"] += 1
        self.eval_model.eval()
        dev = self.dev.bound(self.eval_model, cfg.model.z2_prior_var, self.device, seed=t.seed)
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
        if self.model.vq is not None:
            self._vq_epoch(st, rec)
        self._save(st, improved)
        if self.dist.rank == 0:
            with open(os.path.join(self.exp_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")
            plot_curves(self.exp_dir)
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

    # ---- checkpoints ----------------------------------------------------------------------
    def _save(self, st, improved):
        step = st["step"]
        ckpt.save_part(self.ckpt_dir, step, f"rank{self.dist.rank}", {
            "cache": self.cache.detach().cpu(), "cache_opt": self.cache_opt.state_dict(),
            "block": st["block"], "pos": st["pos"], "step": step,
            "broken": dict(self.utts.bad),
            "reservoir": self.reservoir.state_dict() if self.model.vq is not None else None})
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
        if self.model.vq is not None:
            self.reservoir.load_state_dict(part["reservoir"])
        if self.dist.rank == 0:
            _truncate_metrics(os.path.join(self.exp_dir, "metrics.jsonl"), st["step"])
        log.info("resumed from %s: step %d, epoch %d, block %d batch %d", d, st["step"], st["epoch"],
                 st["block"], st["pos"])
        return True


def _truncate_metrics(path, step):
    """Drop metric lines written after ``step`` (by a run killed before its next checkpoint)."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:   # a line cut short by a kill during the append
                continue
            if rec["step"] <= step:
                keep.append(json.dumps(rec) + "\n")
    atomic_write_text(path, "".join(keep))


def plot_curves(exp_dir):
    """exp_dir/training_curve.png: train loss and dev bound against steps (from metrics.jsonl)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(exp_dir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in recs]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, [r["train"].get("loss", np.nan) for r in recs], marker=".")
    ax[0].set(title="train loss (-bound - alpha*disc)", xlabel="step")
    ax[1].plot(steps, [r["dev"]["bound"] for r in recs], marker=".", color="C1")
    ax[1].set(title="dev segment lower bound (nats)", xlabel="step")
    fig.tight_layout()
    from fhvae.io.atomic import atomic_open
    with atomic_open(os.path.join(exp_dir, "training_curve.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# Keys that only say when to stop: changing them on an exp dir with checkpoints continues training.
STOPPING_KEYS = ("train.max_epochs", "train.patience")


def prepare_exp_dir(cfg, exp_dir, train_dir, dev_dir, stats_path):
    """Write (or check) the resolved config in exp_dir. A different config in an exp dir that already
    has checkpoints is a ConfigError naming the keys that differ, except for the stopping rule
    (STOPPING_KEYS): a new max_epochs / patience continues from the last checkpoint (a finished
    run's ``done`` marker is removed)."""
    os.makedirs(exp_dir, exist_ok=True)
    extra = {"train_dir": os.path.abspath(train_dir), "dev_dir": os.path.abspath(dev_dir),
             "stats": os.path.abspath(stats_path)}
    path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(path) and ckpt.last_step_dir(os.path.join(exp_dir, "checkpoints")) is not None:
        old, old_extra = config_mod.read_exp_config(exp_dir)
        diffs = _diff(old.to_dict(), cfg.to_dict()) + [k for k in extra if old_extra.get(k) != extra[k]]
        other = [k for k in diffs if k not in STOPPING_KEYS]
        if other:
            raise ConfigError(f"{exp_dir} was trained with another config (differs in: {', '.join(other)}); "
                              f"use a new --exp-dir or remove the old one")
        if diffs:
            changes = [f"{k} {getattr(old.train, k.split('.', 1)[1])} -> {getattr(cfg.train, k.split('.', 1)[1])}"
                       for k in diffs]
            log.info("%s: stopping rule changed (%s): training continues from the last checkpoint", exp_dir,
                     ", ".join(changes))
            if distributed.rank() == 0 and os.path.isfile(os.path.join(exp_dir, "done")):
                os.unlink(os.path.join(exp_dir, "done"))
    if distributed.rank() == 0:
        config_mod.save_config(cfg, path, extra)


def _diff(a, b, prefix=""):
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return out
