"""Downstream ASR on any frame-level feature scp (fbank, exported z1, ...): BPE + CTC + WER.

A small CTC model (conv subsampling + BiGRU + linear) is trained on the utterances of one
channel condition of a training data dir (default ``clean``) and tested on a test data dir; the
word error rate is reported overall and per condition of the test set (``utt2cond``). A
representation that carries the phonetic content and ignores the channel gives a low WER on all
conditions, not only on the clean one it was trained on.

Units: sentencepiece BPE pieces trained on the ASR training transcripts. CTC label ``0`` is the
blank, label ``k >= 1`` is piece id ``k - 1``. Features are normalized with the global mean /
variance of the ASR training utterances (:mod:`fhvae.features.stats`). WER (percent) is corpus
level: total substitutions + deletions + insertions over the total number of reference words,
computed with jiwer. Every output file in ``out_dir`` is written atomically; an interrupted run
resumes from ``checkpoint.pt`` (saved after every epoch) when the options and data match.

Outputs of :func:`run_asr` in ``out_dir``: ``bpe.model``, ``bpe.vocab``, ``stats.npz``,
``checkpoint.pt``, ``model.pt`` (the best epoch on the held-out part), ``hyp.txt`` (Kaldi text),
``results.json``, ``results.md``.
"""
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from fhvae.cpu import mkl
from fhvae.errors import ConfigError, DataError, TrainingError
from fhvae.features.stats import Stats
from fhvae.io.ark import FeatReader
from fhvae.io.atomic import atomic_open, atomic_write_text
from fhvae.io.datadir import read_kv

log = logging.getLogger(__name__)

BLANK = 0
ALL_CONDS = "all"
MODEL_VERSION = "conv-bigru-3"  # in checkpoint fingerprints: a checkpoint of another CtcModel is not resumed


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

    def check(self):
        """Raise ConfigError on an impossible value."""
        bad = [(n, v) for n, v in (("vocab_size", self.vocab_size), ("epochs", self.epochs),
                                   ("batch_size", self.batch_size), ("hidden", self.hidden),
                                   ("layers", self.layers)) if v < 1]
        if self.subsample not in (1, 2, 4):
            bad.append(("subsample", self.subsample))
        if not 0 <= self.heldout < 1:
            bad.append(("heldout", self.heldout))
        if not 0 <= self.dropout < 1:
            bad.append(("dropout", self.dropout))
        if not self.lr > 0:
            bad.append(("lr", self.lr))
        if bad:
            raise ConfigError("invalid ASR option(s): " + ", ".join(f"{n}={v!r}" for n, v in bad))


# ----------------------------------------------------------------------------- BPE units

def train_bpe(texts, out_dir, vocab_size, prefix="bpe"):
    """Train a sentencepiece BPE model on ``texts`` (list of str, used in the given order).

    Writes ``<out_dir>/<prefix>.model`` and ``<prefix>.vocab`` (``piece<TAB>score``) atomically
    and returns the loaded processor. ``vocab_size`` is an upper bound: a small corpus gets fewer
    pieces (logged). Deterministic (one thread, no sentence sampling or shuffling).
    """
    import sentencepiece as spm

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"cannot train BPE units for {out_dir}: no non-empty transcript")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=int(vocab_size),
            model_type="bpe", hard_vocab_limit=False, character_coverage=1.0,
            bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, input_sentence_size=0,
            shuffle_input_sentence=False, minloglevel=2)
    except RuntimeError as e:
        raise DataError(f"sentencepiece could not train {vocab_size} BPE units on the {len(texts)} transcripts "
                        f"(the vocab size must be above the number of distinct characters): {e}") from None
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    with atomic_open(os.path.join(out_dir, prefix + ".model"), "wb") as f:
        f.write(buf.getvalue())
    atomic_write_text(os.path.join(out_dir, prefix + ".vocab"), "".join(
        f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())))
    if sp.get_piece_size() < vocab_size:
        log.info("BPE: %d pieces (the %d transcripts allow no more than that; asked for %d)",
                 sp.get_piece_size(), len(texts), vocab_size)
    return sp


def load_bpe(path):
    """Load a sentencepiece model file -> SentencePieceProcessor (DataError if missing/bad)."""
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise DataError(f"{path}: BPE model not found")
    try:
        return spm.SentencePieceProcessor(model_file=os.fspath(path))
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path}: cannot load BPE model: {e}") from None


def encode_labels(sp, text) -> List[int]:
    """Words -> CTC labels (piece id + 1; 0 is the blank)."""
    return [i + 1 for i in sp.encode(text)]


def decode_labels(sp, labels) -> str:
    """CTC labels (without blanks) -> words."""
    return sp.decode([int(k) - 1 for k in labels if k != BLANK])


def greedy_ctc(scores, length=None) -> List[int]:
    """Best path of CTC output ``scores`` (T, C) (logits or log-probs): per-frame argmax, repeats
    collapsed, blanks dropped. Only the first ``length`` frames are used if given."""
    best = torch.as_tensor(scores)[:length].argmax(-1).tolist()
    out, prev = [], None
    for k in best:
        if k != prev and k != BLANK:
            out.append(k)
        prev = k
    return out


# ----------------------------------------------------------------------------- WER

def corpus_wer(refs: Dict[str, str], hyps: Dict[str, str], utts=None) -> dict:
    """Corpus-level WER of ``hyps`` against ``refs`` over ``utts`` (default: every ref).

    Returns ``{wer (percent), n_utts, n_words, sub, del, ins}``; a missing hypothesis counts as
    empty (all deletions). References must be non-empty.
    """
    import jiwer

    utts = sorted(refs) if utts is None else list(utts)
    if not utts:
        return {"wer": float("nan"), "n_utts": 0, "n_words": 0, "sub": 0, "del": 0, "ins": 0}
    out = jiwer.process_words([refs[u] for u in utts], [hyps.get(u, "") for u in utts])
    n_words = out.hits + out.substitutions + out.deletions
    errors = out.substitutions + out.deletions + out.insertions
    return {"wer": 100.0 * errors / n_words, "n_utts": len(utts), "n_words": n_words,
            "sub": out.substitutions, "del": out.deletions, "ins": out.insertions}


def wer_by_condition(refs, hyps, utt2cond=None) -> dict:
    """``{"overall": corpus_wer, "per_cond": {cond: corpus_wer}}`` (per_cond empty without utt2cond;
    utterances without a condition count in overall only)."""
    per = {}
    if utt2cond:
        for cond in sorted({utt2cond[u] for u in refs if u in utt2cond}):
            per[cond] = corpus_wer(refs, hyps, [u for u in sorted(refs) if utt2cond.get(u) == cond])
    return {"overall": corpus_wer(refs, hyps), "per_cond": per}


# ----------------------------------------------------------------------------- data

def read_transcripts(data_dir) -> Dict[str, str]:
    """``<data_dir>/text`` -> {utt: words}; empty transcripts are dropped with a log line."""
    path = os.path.join(data_dir, "text")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found (ASR needs the transcripts of {data_dir})")
    text = read_kv(path, min_fields=1)
    empty = [u for u, t in text.items() if not t.strip()]
    if empty:
        log.info("%s: skipping %d utterance(s) with an empty transcript, e.g. %s", path, len(empty), empty[0])
    return {u: " ".join(t.split()) for u, t in text.items() if t.strip()}


def read_conditions(data_dir) -> Optional[Dict[str, str]]:
    """``<data_dir>/utt2cond`` -> {utt: condition}, or None if the file is absent."""
    path = os.path.join(data_dir, "utt2cond")
    return read_kv(path, min_fields=2, max_fields=2) if os.path.isfile(path) else None


def load_features(feats_scp, utts, dim=None) -> Dict[str, np.ndarray]:
    """Read the ``utts`` (all must be in the scp) of ``feats_scp`` -> {utt: (T, D) float32}.

    DataError naming the utterance for a non-matrix, a dim other than ``dim`` (default: the
    first utterance's), or NaN/inf values. Utterances with 0 frames are skipped (logged).
    """
    out, dim_from, empty = {}, None, []
    with FeatReader(feats_scp) as reader:
        for utt in utts:
            x = reader[utt]
            if x.ndim != 2:
                raise DataError(f"{feats_scp}: utt {utt!r}: expected a (frames, dim) matrix, got shape {x.shape}")
            if dim is None:
                dim, dim_from = x.shape[1], utt
            if x.shape[1] != dim:
                other = f"utt {dim_from!r} has dim {dim}" if dim_from else f"the training features have dim {dim}"
                raise DataError(f"{feats_scp}: utt {utt!r} has dim {x.shape[1]}, but {other}")
            if not np.isfinite(x).all():
                raise DataError(f"{feats_scp}: utt {utt!r} has NaN/inf values")
            if x.shape[0] == 0:
                empty.append(utt)
                continue
            out[utt] = x
    if empty:
        log.warning("%s: skipping %d utterance(s) with 0 frames, e.g. %s", feats_scp, len(empty), empty[0])
    return out


def load_set(data_dir, feats_scp, cond=None, dim=None):
    """Transcribed utterances of ``data_dir`` with features in ``feats_scp``.

    ``cond``: keep only utterances of this condition (utt2cond; None or 'all': every one; no
    utt2cond: every one, logged). Returns ``(feats {utt: (T, D)}, text {utt: words},
    utt2cond or None)``, both dicts with the same keys in C order.
    """
    text = read_transcripts(data_dir)
    utt2cond = read_conditions(data_dir)
    if cond not in (None, ALL_CONDS):
        if utt2cond is None:
            log.info("%s: no utt2cond; using all %d utterances (not only %r ones)", data_dir, len(text), cond)
        else:
            n = len(text)
            text = {u: t for u, t in text.items() if utt2cond.get(u) == cond}
            if not text:
                found = ", ".join(sorted(set(utt2cond.values())))
                raise DataError(f"{os.path.join(data_dir, 'utt2cond')}: no transcribed utterance of condition "
                                f"{cond!r} (conditions: {found})")
            log.info("%s: %d of %d transcribed utterances are %r", data_dir, len(text), n, cond)
    if not os.path.isfile(feats_scp):
        raise DataError(f"{feats_scp}: feature scp not found")
    with FeatReader(feats_scp) as reader:
        missing = [u for u in text if u not in reader]
    if missing:
        log.warning("%s: %d of %d transcribed utterance(s) of %s have no features, skipped (e.g. %s)",
                    feats_scp, len(missing), len(text), data_dir, missing[0])
    utts = sorted(set(text) - set(missing))
    if not utts:
        raise DataError(f"{feats_scp}: none of the {len(text)} transcribed utterances of {data_dir} has features")
    feats = load_features(feats_scp, utts, dim=dim)
    if not feats:
        raise DataError(f"{feats_scp}: every utterance of {data_dir} has 0 frames")
    return feats, {u: text[u] for u in feats}, utt2cond


def stats_of(feats) -> Stats:
    """Global mean / population variance (float64) over all frames of ``{utt: (T, D)}``."""
    x = np.concatenate([feats[u] for u in sorted(feats)]).astype(np.float64)
    return Stats(x.mean(0), x.var(0), int(x.shape[0]))


# ----------------------------------------------------------------------------- model

def _frame_mask(h, lengths):
    """(B, 1, T) mask of h (B, D, T) in h's dtype: 1 at the frames t < lengths[b] of sequence b, else 0."""
    keep = torch.arange(h.shape[2], device=h.device)[None, :] < lengths.to(h.device)[:, None]
    return keep.to(h.dtype)[:, None, :]


def _zero_past(h, lengths):
    """h (B, D, T) with the frames t >= lengths[b] of each sequence b set to 0."""
    return h * _frame_mask(h, lengths)


def reverse_index(lengths, T):
    """(B, T) time index that reverses each sequence within its length (frames past it stay put):
    x.gather(1, idx) reverses a padded batch, and the same gather undoes it."""
    t = torch.arange(T, device=lengths.device)[None, :]
    n = lengths[:, None].to(t.dtype)
    return torch.where(t < n, n - 1 - t, t)


class BiGRU(nn.Module):
    """Bidirectional GRU layer over a padded batch: (B, T, D) with lengths (B,) -> (B, T, 2H).

    Each direction is a unidirectional ``nn.GRU`` over the padded tensor (training epochs 1.24-1.31x
    as fast on CPU as with one bidirectional GRU over a packed sequence: egs/mini/v1/EXPERIMENTS.md,
    "Downstream ASR"); the backward direction reads every sequence reversed within its own length,
    so padding only ever follows a sequence's frames and never reaches them (the outputs at its
    frames are those of the sequence alone). Outputs past a sequence's length are undefined."""

    def __init__(self, in_dim, hidden):
        super().__init__()
        self.fwd = nn.GRU(in_dim, hidden, batch_first=True)
        self.bwd = nn.GRU(in_dim, hidden, batch_first=True)

    def forward(self, x, rev):
        """x (B, T, D); rev (B, T, 1): reverse_index(lengths, T)[:, :, None]."""
        f, _ = self.fwd(x)
        r, _ = self.bwd(x.gather(1, rev.expand(-1, -1, x.shape[2])))
        return torch.cat([f, r.gather(1, rev.expand(-1, -1, r.shape[2]))], dim=2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, C, T) whose training statistics (batch mean and variance, and so the running
    estimates) come from each sequence's frames t < lengths[b] only, not from the batch's padding.
    Evaluation mode is nn.BatchNorm1d's (running estimates); the parameters and buffers are its too."""

    def forward(self, h, lengths):
        if not self.training:
            return super().forward(h)
        keep = _frame_mask(h, lengths)
        n = keep.sum()
        mean = (h * keep).sum((0, 2)) / n
        var = (((h - mean[None, :, None]) * keep) ** 2).sum((0, 2)) / n
        with torch.no_grad():   # unbiased variance in the running estimate, as nn.BatchNorm1d
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1).clamp(min=1), self.momentum)
        h = (h - mean[None, :, None]) * torch.rsqrt(var + self.eps)[None, :, None]
        return h * self.weight[None, :, None] + self.bias[None, :, None]


class CtcModel(nn.Module):
    """(B, T, D) features -> (B, T', C) CTC logits, T' = ceil(T / subsample), C = n_labels.

    ``log2(subsample)`` stride-2 convolutions (kernel 3, batch norm over the frames, ReLU; one stride-1
    convolution for subsample 1), ``layers`` bidirectional GRU layers of ``hidden`` units per
    direction (dropout between them), a linear output.
    """

    def __init__(self, in_dim, n_labels, hidden=128, layers=2, subsample=4, dropout=0.2):
        super().__init__()
        mkl.warm_up_vml()   # before the first multi-threaded exp/log/sqrt (fhvae/cpu/mkl.py)
        self.config = dict(in_dim=in_dim, n_labels=n_labels, hidden=hidden, layers=layers,
                           subsample=subsample, dropout=dropout)
        self.n_strided = int(round(math.log2(subsample)))
        convs, d = [], in_dim
        for _ in range(max(1, self.n_strided)):
            convs.append(nn.Sequential(nn.Conv1d(d, hidden, 3, stride=2 if self.n_strided else 1, padding=1),
                                       MaskedBatchNorm1d(hidden), nn.ReLU()))
            d = hidden
        self.conv = nn.ModuleList(convs)
        self.rnn = nn.ModuleList(BiGRU(hidden if i == 0 else 2 * hidden, hidden) for i in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, n_labels)

    def out_lengths(self, lengths):
        """Output frames for input ``lengths`` (tensor of ints)."""
        for _ in range(self.n_strided):
            lengths = (lengths + 1) // 2
        return lengths

    def forward(self, x, lengths):
        """x (B, T, D), lengths (B,) -> logits (B, T', C), out lengths (B,)."""
        h, n = _zero_past(x.transpose(1, 2), lengths), lengths
        for conv, norm, relu in self.conv:   # frames past a sequence's end zeroed: the padding of a sequence alone
            n = (n + 1) // 2 if self.n_strided else n
            h = _zero_past(relu(norm(conv(h), n)), n)
        h, out_len = h.transpose(1, 2), n   # n: self.out_lengths(lengths)
        rev = reverse_index(out_len.to(h.device), h.shape[1])[:, :, None]
        for i, layer in enumerate(self.rnn):
            h = layer(self.drop(h) if i else h, rev)
        return self.out(self.drop(h)), out_len


def _batches(utts, lengths, batch_size, rng=None):
    """Lists of utterances of similar length (sorted, chunked); batch order shuffled by ``rng``."""
    order = sorted(utts, key=lambda u: (lengths[u], u))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


def _pad(xs):
    """List of (T_i, D) arrays -> (B, T_max, D) float tensor, (B,) lengths."""
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[1])
    for i, x in enumerate(xs):
        out[i, :len(x)] = torch.from_numpy(x)
    return out, lengths


def spec_augment(x, rng, n_masks=2, max_dims=0.15, max_frames=0.1):
    """Copy of normalized ``x`` (T, D) with ``n_masks`` random bands of up to ``max_dims`` * D dims
    and ``n_masks`` spans of up to ``max_frames`` * T frames set to 0 (the mean)."""
    x = x.copy()
    T, D = x.shape
    for _ in range(n_masks):
        w = int(rng.integers(0, max(1, int(max_dims * D)) + 1))
        d0 = int(rng.integers(0, D - w + 1))
        x[:, d0:d0 + w] = 0.0
        w = int(rng.integers(0, max(1, int(max_frames * T)) + 1))
        t0 = int(rng.integers(0, T - w + 1))
        x[t0:t0 + w] = 0.0
    return x


def _ctc_loss(model, ctc, feats, labels, batch, rng=None):
    """Mean CTC loss of ``batch``; ``rng``: SpecAugment the features with it."""
    x, lengths = _pad([spec_augment(feats[u], rng) if rng is not None else feats[u] for u in batch])
    logits, out_len = model(x, lengths)
    targets = torch.tensor([k for u in batch for k in labels[u]])
    target_len = torch.tensor([len(labels[u]) for u in batch])
    return ctc(logits.log_softmax(-1).transpose(0, 1), targets, out_len, target_len)


@torch.no_grad()
def transcribe(model, sp, feats, batch_size=32) -> Dict[str, str]:
    """Greedy CTC transcripts {utt: words} of normalized ``feats`` {utt: (T, D)}."""
    model.eval()
    hyps = {}
    for batch in _batches(list(feats), {u: len(x) for u, x in feats.items()}, batch_size):
        logits, out_len = model(*_pad([feats[u] for u in batch]))
        for u, lg, n in zip(batch, logits, out_len.tolist()):
            hyps[u] = decode_labels(sp, greedy_ctc(lg, n))
    return dict(sorted(hyps.items()))


@torch.no_grad()
def _evaluate(model, ctc, sp, feats, labels, text, batch_size=32):
    """(mean CTC loss, greedy WER in percent) on the utterances of ``text`` {utt: words}."""
    model.eval()
    utts = sorted(text)
    total = sum(_ctc_loss(model, ctc, feats, labels, b).item() * len(b)
                for b in _batches(utts, {u: len(feats[u]) for u in utts}, batch_size))
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
    h = hashlib.sha256(json.dumps([MODEL_VERSION, asdict(opts), os.path.abspath(feats_scp),
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
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as e:  # a corrupt checkpoint is not fatal: train again
            log.warning("%s: unreadable (%s); training from scratch", ckpt_path, e)
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
        batches = _batches(fit, lengths, opts.batch_size, rng)
        total, n = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{opts.epochs}", leave=False, disable=None if progress else True)
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
    opts.check()
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
    stats = stats_of(feats)
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


def format_table(results_list) -> str:
    """Markdown table of WER (%) overall and per condition, one row per results dict."""
    conds = sorted({c for r in results_list for c in r["per_cond"]})
    rows = [["features", "WER all"] + [f"WER {c}" for c in conds] + ["test utts"]]
    rows.append(["---"] * len(rows[0]))
    for r in results_list:
        rows.append([r["name"], f"{r['wer']:.1f}"]
                    + [f"{r['per_cond'][c]['wer']:.1f}" if c in r["per_cond"] else "-" for c in conds]
                    + [str(r["overall"]["n_utts"])])
    return "".join("| " + " | ".join(row) + " |\n" for row in rows)
