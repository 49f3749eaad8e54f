"""Training and testing of the downstream CTC ASR (``fhvae-asr``): AsrOptions, train_ctc, run_asr.

A CtcModel (:mod:`fhvae.asr.model`) is trained on the utterances of one channel condition of a
training data dir (default ``clean``) and tested on a test data dir; the word error rate is
reported overall and per condition of the test set (``utt2cond``). A representation that carries
the phonetic content and ignores the channel gives a low WER on all conditions, not only on the
clean one it was trained on. Features are normalized with the global mean / variance of the ASR
training utterances (:mod:`fhvae.features.stats`). Every output file in ``out_dir`` is written
atomically; an interrupted run resumes from ``checkpoint.pt`` (saved after every epoch) when the
options and data match.

Outputs of :func:`run_asr` in ``out_dir``: ``bpe.model``, ``bpe.vocab``, ``stats.npz``,
``checkpoint.pt``, ``model.pt`` (the best epoch on the held-out part), ``hyp.txt`` (Kaldi text),
``results.json``, ``results.md``.
"""
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from fhvae.asr.data import batches, load_set, pad, spec_augment
from fhvae.asr.model import CtcModel
from fhvae.asr.text import (BLANK, corpus_wer, decode_labels, encode_labels, format_table, greedy_ctc, train_bpe,
                            wer_by_condition)
from fhvae.errors import ConfigError, FhvaeError, TrainingError
from fhvae.features.stats import compute_stats
from fhvae.io.atomic import atomic_open, atomic_write_text
from fhvae.train.checkpoint import load_file

log = logging.getLogger(__name__)


@dataclass
class AsrOptions:
    """Training options. ``train_cond``: condition of the training utterances ('all': every one)."""
    vocab_size: int = 50        # at most; sized for ~200 training utterances (mini corpus)
    epochs: int = 35
    patience: int = 10          # stop after this many epochs without a better held-out WER
    batch_size: int = 8
    lr: float = 3e-3
    hidden: int = 128           # GRU units per direction
    layers: int = 2
    subsample: int = 4          # 1, 2 or 4 (stride-2 convolutions)
    dropout: float = 0.2
    heldout: float = 0.1        # share of the training utterances held out for model selection
    specaug: bool = False       # mask random feature bands and time spans of training utterances
                                # (regularizes, but needs more epochs than the default budget)
    seed: int = 1
    train_cond: str = "clean"

    def validate(self):
        """Raise ConfigError naming the first impossible option; returns self."""
        sizes = ("vocab_size", "epochs", "batch_size", "hidden", "layers")
        checks = [(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}") for k in sizes] + [
            (self.subsample in (1, 2, 4), f"subsample must be 1, 2 or 4, got {self.subsample}"),
            (0 <= self.heldout < 1, f"heldout must be a share in [0, 1), got {self.heldout}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"ASR option {msg}")
        return self


def _ctc_loss(model, ctc, feats, labels, batch, rng=None):
    """Mean CTC loss of ``batch``; ``rng``: SpecAugment the features with it."""
    x, lengths = pad([spec_augment(feats[u], rng) if rng is not None else feats[u] for u in batch])
    logits, out_len = model(x, lengths)
    targets = torch.tensor([k for u in batch for k in labels[u]])
    target_len = torch.tensor([len(labels[u]) for u in batch])
    return ctc(logits.log_softmax(-1).transpose(0, 1), targets, out_len, target_len)


@torch.no_grad()
def transcribe(model, sp, feats, batch_size=32) -> Dict[str, str]:
    """Greedy CTC transcripts {utt: words} of normalized ``feats`` {utt: (T, D)}."""
    model.eval()
    hyps = {}
    for batch in batches(list(feats), {u: len(x) for u, x in feats.items()}, batch_size):
        logits, out_len = model(*pad([feats[u] for u in batch]))
        for u, lg, n in zip(batch, logits, out_len.tolist()):
            hyps[u] = decode_labels(sp, greedy_ctc(lg, n))
    return dict(sorted(hyps.items()))


@torch.no_grad()
def _evaluate(model, ctc, sp, feats, labels, text, batch_size=32):
    """(mean CTC loss, greedy WER in percent) on the utterances of ``text`` {utt: words}."""
    model.eval()
    utts = sorted(text)
    total = sum(_ctc_loss(model, ctc, feats, labels, b).item() * len(b)
                for b in batches(utts, {u: len(feats[u]) for u in utts}, batch_size))
    hyps = transcribe(model, sp, {u: feats[u] for u in utts}, batch_size)
    return total / len(utts), corpus_wer(text, hyps)["wer"]


def _split_heldout(utts, share, seed):
    """Deterministic (fit, heldout) split of ``utts``; no held-out part below 10 utterances."""
    n_held = int(round(share * len(utts))) if len(utts) >= 10 else 0
    if n_held == 0:
        return sorted(utts), []
    pick = set(np.random.default_rng(seed).choice(sorted(utts), n_held, replace=False).tolist())
    return sorted(u for u in utts if u not in pick), sorted(pick)


def _fingerprint(opts, feats_scp, text, stats):
    """Hash of what a checkpoint depends on: options, training transcripts {utt: words}, feature
    stats (features rewritten under the same scp name change it too)."""
    h = hashlib.sha256(json.dumps([CtcModel.VERSION, asdict(opts), os.path.abspath(feats_scp),
                                   sorted(text.items())]).encode())
    h.update(stats.mean.tobytes() + stats.var.tobytes())
    return h.hexdigest()[:16]


def _save(path, obj):
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def train_ctc(feats, labels, n_labels, opts: AsrOptions, out_dir, fingerprint="", heldout_text=None,
              sp=None, progress=True):
    """Train a CtcModel on normalized ``feats`` {utt: (T, D)} with ``labels`` {utt: [label]}.

    The utterances in ``heldout_text`` {utt: words} (a subset of ``feats``, not trained on) pick
    the best epoch by greedy WER (needs ``sp``); without them the last epoch is kept. Saves
    ``<out_dir>/checkpoint.pt`` after every epoch and resumes from it when its fingerprint
    matches. Returns ``(model with the best weights, info dict)``.
    """
    from tqdm import tqdm

    heldout_text = heldout_text or {}
    fit = sorted(u for u in feats if u not in heldout_text)
    in_dim = next(iter(feats.values())).shape[1]
    torch.manual_seed(opts.seed)
    model = CtcModel(in_dim, n_labels, opts.hidden, opts.layers, opts.subsample, opts.dropout)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    lengths = {u: len(x) for u, x in feats.items()}
    short = [u for u in fit if int(model.out_lengths(torch.tensor(lengths[u]))) < len(labels[u])]
    if short:
        log.warning("%d training utterance(s) have fewer output frames than BPE labels (ignored by CTC), "
                    "e.g. %s; use a smaller --subsample or a larger --vocab-size", len(short), short[0])
    state = {"epoch": 0, "best_score": None, "best_epoch": 0, "best_model": None,
             "bad_epochs": 0, "history": []}
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    if os.path.isfile(ckpt_path):
        try:
            ckpt = load_file(ckpt_path)   # tensors and plain values only (weights_only)
        except FhvaeError as e:  # a corrupt (or not plain-weights) checkpoint is not fatal: train again
            log.warning("%s; training from scratch", e)
            ckpt = None
        if ckpt is not None and ckpt.get("fingerprint") == fingerprint:
            model.load_state_dict(ckpt["model"])
            optim.load_state_dict(ckpt["optim"])
            torch.set_rng_state(ckpt["torch_rng"])
            state = ckpt["state"]
            log.info("%s: resuming after epoch %d", ckpt_path, state["epoch"])
        elif ckpt is not None:
            log.info("%s: made with other options or data; training from scratch", ckpt_path)

    t0 = time.monotonic()
    while state["epoch"] < opts.epochs and not state.get("stopped"):
        epoch = state["epoch"] + 1
        model.train()
        rng = np.random.default_rng(opts.seed * 1000 + epoch)
        epoch_batches = batches(fit, lengths, opts.batch_size, rng)
        total, n = 0.0, 0
        bar = tqdm(epoch_batches, desc=f"epoch {epoch}/{opts.epochs}", leave=False, disable=None if progress else True)
        for batch in bar:
            loss = _ctc_loss(model, ctc, feats, labels, batch, rng if opts.specaug else None)
            if not torch.isfinite(loss):
                raise TrainingError(f"ASR epoch {epoch}: CTC loss is {loss.item()} (batch starting with {batch[0]})")
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            total, n = total + loss.item() * len(batch), n + len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        rec = {"epoch": epoch, "loss": total / n}
        score = (0.0, -epoch)  # without a held-out part: the last epoch is the best
        if heldout_text:
            rec["heldout_loss"], rec["heldout_wer"] = _evaluate(model, ctc, sp, feats, labels, heldout_text)
            score = (rec["heldout_wer"], rec["heldout_loss"])  # the loss breaks ties (e.g. all 100%)
        if state["best_score"] is None or score < tuple(state["best_score"]):
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                         best_model={k: v.clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= opts.patience:
                state["stopped"] = True
        state["epoch"] = epoch
        state["history"].append(rec)
        held = f", held-out loss {rec['heldout_loss']:.3f} WER {rec['heldout_wer']:.1f}%" if heldout_text else ""
        log.info("epoch %d: loss %.3f%s (%.0f s)", epoch, rec["loss"], held, time.monotonic() - t0)
        if state.get("stopped"):
            log.info("no held-out improvement for %d epochs: stopping (best epoch %d)", opts.patience,
                     state["best_epoch"])
        _save(ckpt_path, {"fingerprint": fingerprint, "model": model.state_dict(), "optim": optim.state_dict(),
                          "torch_rng": torch.get_rng_state(), "state": state})
    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    model.eval()
    info = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
            "heldout_wer": state["best_score"][0] if heldout_text else None, "history": state["history"]}
    return model, info



# ----------------------------------------------------------------------------- pipeline

def run_asr(train_feats, train_dir, test_feats, test_dir, out_dir, opts: Optional[AsrOptions] = None,
            name=None, progress=True) -> dict:
    """Train on ``train_dir`` (condition ``opts.train_cond``) with features ``train_feats``, test on
    ``test_dir`` with ``test_feats``; write the outputs listed in the module doc; return the
    results dict (also in ``results.json``). ``name``: label of the row in results.md
    (default: basename of ``out_dir``)."""
    opts = opts or AsrOptions()
    opts.validate()
    out_dir = os.fspath(out_dir)
    name = name or os.path.basename(os.path.normpath(out_dir))
    t0 = time.monotonic()
    os.makedirs(out_dir, exist_ok=True)

    feats, text, _ = load_set(train_dir, train_feats, cond=opts.train_cond)
    in_dim = next(iter(feats.values())).shape[1]
    test, test_text, test_cond = load_set(test_dir, test_feats, dim=in_dim)
    n_frames = sum(len(x) for x in feats.values())
    log.info("train: %d utterances (%.1f min, dim %d) of %s; test: %d utterances of %s", len(feats),
             n_frames / 6000, in_dim, train_dir, len(test), test_dir)

    sp = train_bpe([text[u] for u in sorted(text)], out_dir, opts.vocab_size)
    labels = {u: encode_labels(sp, t) for u, t in text.items()}
    stats = compute_stats(train_feats, sorted(feats))   # the frames of the utterances in feats
    stats.save(os.path.join(out_dir, "stats.npz"))
    feats = {u: stats.normalize(x) for u, x in feats.items()}
    test = {u: stats.normalize(x) for u, x in test.items()}

    fit, held = _split_heldout(list(feats), opts.heldout, opts.seed)
    log.info("BPE: %d pieces, %.1f per utterance; %d utterances to train on, %d held out", sp.get_piece_size(),
             np.mean([len(v) for v in labels.values()]), len(fit), len(held))
    fingerprint = _fingerprint(opts, train_feats, text, stats)
    model, info = train_ctc(feats, labels, sp.get_piece_size() + 1, opts, out_dir, fingerprint,
                            heldout_text={u: text[u] for u in held}, sp=sp, progress=progress)
    _save(os.path.join(out_dir, "model.pt"), {
        "model": model.state_dict(), "config": model.config, "bpe": "bpe.model",
        "stats": {"mean": stats.mean, "var": stats.var}, "options": asdict(opts), "epoch": info["best_epoch"]})

    hyps = transcribe(model, sp, test)
    atomic_write_text(os.path.join(out_dir, "hyp.txt"),
                      "".join(f"{u} {h}\n" if h else f"{u}\n" for u, h in hyps.items()))
    wer = wer_by_condition(test_text, hyps, test_cond)
    results = {
        "name": name, "wer": wer["overall"]["wer"], "overall": wer["overall"], "per_cond": wer["per_cond"],
        "train": {"feats": os.path.abspath(train_feats), "data_dir": os.path.abspath(train_dir),
                  "n_utts": len(fit), "n_heldout": len(held), "n_pieces": sp.get_piece_size(), **info},
        "test": {"feats": os.path.abspath(test_feats), "data_dir": os.path.abspath(test_dir)},
        "options": asdict(opts), "wall_s": round(time.monotonic() - t0, 1),
    }
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    atomic_write_text(os.path.join(out_dir, "results.md"), format_table([results]))
    return results
