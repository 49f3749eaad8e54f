"""Transcripts, BPE units, CTC labels, greedy CTC decoding and the word error rate.

Units: sentencepiece BPE pieces trained on the ASR training transcripts. CTC label ``0`` is the
blank, label ``k >= 1`` is piece id ``k - 1``. WER (percent) is corpus level: total substitutions
+ deletions + insertions over the total number of reference words, computed with jiwer.
"""
import io
import logging
import os
from typing import Dict, List

import torch

from fhvae.errors import DataError
from fhvae.io.atomic import atomic_open, atomic_write_text
from fhvae.io.tables import read_kv

log = logging.getLogger(__name__)

BLANK = 0


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


def format_table(results_list) -> str:
    """Markdown table of WER (%) overall and per condition, one row per results dict of run_asr."""
    conds = sorted({c for r in results_list for c in r["per_cond"]})
    rows = [["features", "WER all"] + [f"WER {c}" for c in conds] + ["test utts"]]
    rows.append(["---"] * len(rows[0]))
    for r in results_list:
        rows.append([r["name"], f"{r['wer']:.1f}"]
                    + [f"{r['per_cond'][c]['wer']:.1f}" if c in r["per_cond"] else "-" for c in conds]
                    + [str(r["overall"]["n_utts"])])
    return "".join("| " + " | ".join(row) + " |\n" for row in rows)
