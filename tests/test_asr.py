"""Downstream ASR (fhvae.asr, fhvae-asr) on tiny synthetic data: features are one-hot letters."""
import json
import logging
import os

import kaldiio
import numpy as np
import pytest
import torch

from fhvae.asr.data import load_set, spec_augment
from fhvae.asr.model import CtcModel, MaskedBatchNorm1d, reverse_index
from fhvae.asr.text import (BLANK, corpus_wer, decode_labels, encode_labels, format_table, greedy_ctc, load_bpe,
                            train_bpe, wer_by_condition)
from fhvae.asr.train import AsrOptions, _fingerprint, run_asr
from fhvae.errors import DataError
from fhvae.io.ark import ArkScpWriter
from fhvae.io.tables import write_kv

LETTERS = "abcde "
WORDS = ["ab", "bad", "cab", "dec", "ace", "bee"]
# Tiny and fast, but enough to overfit the toy set.
TOY = dict(vocab_size=12, epochs=30, patience=30, batch_size=4, lr=2e-2, hidden=48, layers=1,
           subsample=1, dropout=0.0, heldout=0.0, specaug=False, seed=1)


def toy_sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 4)))) for _ in range(n)]


def letter_feats(sentence, rng, frames=3):
    """(T, 7): 3 frames of one-hot per character (space included), silence (dim 6) at both ends."""
    rows = [6] * 2 + [LETTERS.index(c) for c in sentence for _ in range(frames)] + [6] * 2
    return (np.eye(7)[rows] + 0.05 * rng.normal(size=(len(rows), 7))).astype(np.float32)


def toy_utts(n):
    """n utterance ids of two speakers, in C order."""
    return [f"spk{2 * i // n}-u{i:03d}" for i in range(n)]


def make_toy_dir(path, sentences, conds=("clean", "noise"), seed=0, feats=None):
    """Data dir (text, utt2spk, utt2cond, feats.scp) with one utterance per sentence."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    utts = toy_utts(len(sentences))
    write_kv(os.path.join(path, "text"), dict(zip(utts, sentences)))
    write_kv(os.path.join(path, "utt2spk"), {u: u.split("-")[0] for u in utts})
    write_kv(os.path.join(path, "utt2cond"), {u: conds[i % len(conds)] for i, u in enumerate(utts)})
    feats = feats or {u: letter_feats(s, rng) for u, s in zip(utts, sentences)}
    if all(np.isfinite(x).all() for x in feats.values()):
        with ArkScpWriter(os.path.join(path, "feats.ark"), os.path.join(path, "feats.scp")) as w:
            for u in sorted(feats):
                w.write(u, feats[u])
    else:  # ArkScpWriter refuses NaN; kaldiio writes them
        kaldiio.save_ark(os.path.join(path, "feats.ark"), dict(sorted(feats.items())),
                         scp=os.path.join(path, "feats.scp"))
    return utts


# ----------------------------------------------------------------------------- units

def test_bpe_roundtrip_and_deterministic(tmp_path):
    texts = toy_sentences(30)
    sp = train_bpe(texts, tmp_path / "a", vocab_size=15)
    assert (tmp_path / "a" / "bpe.model").is_file() and (tmp_path / "a" / "bpe.vocab").is_file()
    assert 6 < sp.get_piece_size() <= 15
    for t in texts[:5] + ["dec ace bad"]:
        labels = encode_labels(sp, t)
        assert BLANK not in labels
        assert decode_labels(sp, labels) == t
    train_bpe(texts, tmp_path / "b", vocab_size=15)
    assert (tmp_path / "a" / "bpe.model").read_bytes() == (tmp_path / "b" / "bpe.model").read_bytes()
    assert load_bpe(tmp_path / "b" / "bpe.model").encode("ab bad") == sp.encode("ab bad")
    # more pieces than the corpus allows: fewer pieces, no error
    assert train_bpe(["ab ab"], tmp_path / "c", vocab_size=500).get_piece_size() < 20


def test_greedy_ctc_collapses_repeats_and_drops_blanks():
    path = [0, 1, 1, 0, 1, 2, 2, 0, 0, 3, 3, 0]
    logits = torch.full((len(path), 4), -5.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 5.0
    assert greedy_ctc(logits) == [1, 1, 2, 3]
    assert greedy_ctc(logits, length=6) == [1, 1, 2]
    assert greedy_ctc(torch.zeros(0, 4)) == []


def test_corpus_wer_hand_computed():
    refs = {"u1": "a b c", "u2": "d e", "u3": "f g h i"}
    hyps = {"u1": "a x c d",   # 1 substitution, 1 insertion
            "u2": "",          # 2 deletions
            "u3": "f g h i"}   # correct
    r = corpus_wer(refs, hyps)
    assert (r["sub"], r["del"], r["ins"], r["n_words"], r["n_utts"]) == (1, 2, 1, 9, 3)
    assert r["wer"] == pytest.approx(100 * 4 / 9)   # corpus level, not the mean of per-utt WERs
    # a missing hypothesis is all deletions
    assert corpus_wer(refs, {"u1": "a b c", "u3": "f g h i"})["wer"] == pytest.approx(100 * 2 / 9)


def test_wer_by_condition():
    refs = {"u1": "a b", "u2": "c d", "u3": "e f g h"}
    hyps = {"u1": "a b", "u2": "c", "u3": "e x"}
    r = wer_by_condition(refs, hyps, {"u1": "clean", "u2": "clean", "u3": "noise"})
    assert r["overall"]["wer"] == pytest.approx(100 * 4 / 8)
    assert r["per_cond"]["clean"]["wer"] == pytest.approx(25.0)
    assert r["per_cond"]["noise"]["wer"] == pytest.approx(75.0)
    assert r["per_cond"]["noise"]["n_utts"] == 1 and r["per_cond"]["clean"]["n_words"] == 4
    assert wer_by_condition(refs, hyps)["per_cond"] == {}
    table = format_table([{"name": "z1", "wer": 50.0, **r}])
    assert table.splitlines()[0] == "| features | WER all | WER clean | WER noise | test utts |"
    assert table.splitlines()[2] == "| z1 | 50.0 | 25.0 | 75.0 | 3 |"


def test_spec_augment_masks_within_bounds():
    x = np.ones((100, 20), np.float32)
    y = spec_augment(x, np.random.default_rng(0))
    assert y.shape == x.shape and (x == 1).all()   # input untouched
    assert 0 < (y == 0).mean() < 0.6


def test_model_shapes():
    m = CtcModel(7, 10, hidden=8, layers=2, subsample=4)
    x = torch.randn(3, 37, 7)
    logits, out_len = m(x, torch.tensor([37, 20, 5]))
    assert out_len.tolist() == [10, 5, 2] and logits.shape == (3, 10, 10)


def test_reverse_index_reverses_within_length_and_undoes_itself():
    idx = reverse_index(torch.tensor([3, 5, 1]), 5)
    assert idx.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    x = torch.arange(15.0).view(3, 5)
    assert torch.equal(x.gather(1, idx).gather(1, idx), x)


@pytest.mark.parametrize("subsample", [1, 2, 4])
def test_outputs_do_not_depend_on_the_padding(subsample):
    """Each utterance's logits in a padded batch (eval mode) are those of the utterance alone: odd
    lengths put padding next to the last frame of every strided convolution and the GRUs' backward
    direction would read it first."""
    torch.manual_seed(0)
    m = CtcModel(7, 10, hidden=8, layers=2, subsample=subsample).eval()
    lengths = torch.tensor([37, 21, 5, 13])
    x = torch.randn(4, 37, 7)
    with torch.no_grad():
        logits, out_len = m(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone, n_out = m(x[i:i + 1, :n], lengths[i:i + 1])
            assert n_out.item() == out_len[i].item() == alone.shape[1]
            torch.testing.assert_close(logits[i, :alone.shape[1]], alone[0], rtol=1e-5, atol=1e-6)


def test_masked_batch_norm_takes_its_training_statistics_from_the_frames_only():
    """In training mode the statistics (output and running estimates) are those of nn.BatchNorm1d over
    the sequences' frames alone, whatever the padding holds; in eval mode it is nn.BatchNorm1d."""
    torch.manual_seed(0)
    lengths = torch.tensor([6, 3, 1])
    x = 5 + 3 * torch.randn(3, 4, 6)
    x[1, :, 3:], x[2, :, 1:] = 100.0, -50.0   # padding far from the data
    bn, ref = MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    ref.load_state_dict(bn.state_dict())
    frames = torch.cat([x[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1)   # (C, 10)
    y, y_ref = bn(x, lengths), ref(frames[None])[0]
    got = torch.cat([y[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1)
    torch.testing.assert_close(got, y_ref, rtol=1e-5, atol=1e-5)
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, k), getattr(ref, k))
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x, lengths), ref(x))


def test_checkpoint_fingerprint_names_the_model_version(monkeypatch):
    stats = type("S", (), {"mean": np.zeros(2, np.float32), "var": np.ones(2, np.float32)})()
    a = _fingerprint(AsrOptions(), "f.scp", {"u": "a b"}, stats)
    monkeypatch.setattr(CtcModel, "VERSION", "other")
    assert _fingerprint(AsrOptions(), "f.scp", {"u": "a b"}, stats) != a


# ----------------------------------------------------------------------------- training

def test_overfits_toy_set_and_cli_outputs(tmp_path, caplog):
    sents = toy_sentences(12, seed=1)
    make_toy_dir(tmp_path / "train", sents, conds=("clean",))
    make_toy_dir(tmp_path / "test", sents[:8], conds=("clean", "noise"), seed=2)
    out = tmp_path / "out"
    argv = ["--train-feats", str(tmp_path / "train/feats.scp"), "--train-dir", str(tmp_path / "train"),
            "--test-feats", str(tmp_path / "test/feats.scp"), "--test-dir", str(tmp_path / "test"),
            "--out-dir", str(out), "--num-threads", "1", "--name", "toy"]
    for k, v in TOY.items():
        if k != "specaug":
            argv += ["--" + k.replace("_", "-"), str(v)]
    from fhvae.bin.asr import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    r = json.loads((out / "results.json").read_text())
    hist = r["train"]["history"]
    assert hist[-1]["loss"] < 0.1 * hist[0]["loss"]
    assert r["wer"] <= 20.0, (out / "hyp.txt").read_text()   # untrained: 100
    assert set(r["per_cond"]) == {"clean", "noise"} and r["per_cond"]["noise"]["n_utts"] == 4
    assert r["overall"]["n_words"] == sum(len(s.split()) for s in sents[:8])
    for name in ("bpe.model", "bpe.vocab", "stats.npz", "model.pt", "checkpoint.pt", "results.md"):
        assert (out / name).is_file(), name
    hyp = dict(line.split(" ", 1) for line in (out / "hyp.txt").read_text().splitlines())
    assert len(hyp) == 8 and sorted(hyp) == list(hyp)
    assert (out / "results.md").read_text().splitlines()[2].startswith("| toy | ")

    # a finished run started again resumes from its checkpoint: no training, same results
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit):
        main(argv)
    assert "resuming after epoch 30" in caplog.text
    assert json.loads((out / "results.json").read_text())["wer"] == r["wer"]


def test_killed_run_resumes_to_the_same_model(tmp_path, monkeypatch, caplog):
    sents = toy_sentences(8, seed=3)
    make_toy_dir(tmp_path / "d", sents, conds=("clean",))
    opts = AsrOptions(**{**TOY, "epochs": 4})
    args = (tmp_path / "d/feats.scp", tmp_path / "d", tmp_path / "d/feats.scp", tmp_path / "d")
    ref = run_asr(*args, tmp_path / "ref", opts, progress=False)

    steps = {"n": 0}
    real_step = torch.optim.Adam.step

    def dying_step(self, *a, **k):
        steps["n"] += 1
        if steps["n"] == 5:   # in epoch 3 (2 batches per epoch)
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_asr(*args, tmp_path / "out", opts, progress=False)
    assert not (tmp_path / "out/results.json").exists()
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    caplog.set_level(logging.INFO)
    r = run_asr(*args, tmp_path / "out", opts, progress=False)
    assert "resuming after epoch 2" in caplog.text
    assert [h["loss"] for h in r["train"]["history"]] == pytest.approx(
        [h["loss"] for h in ref["train"]["history"]], rel=1e-5)


def test_train_condition_filter_and_missing_utt2cond(tmp_path, caplog):
    sents = toy_sentences(6)
    make_toy_dir(tmp_path / "d", sents, conds=("clean", "noise", "telephone"))
    feats, text, utt2cond = load_set(tmp_path / "d", tmp_path / "d/feats.scp", cond="clean")
    assert len(feats) == 2 and {utt2cond[u] for u in feats} == {"clean"} and list(text) == list(feats)
    assert len(load_set(tmp_path / "d", tmp_path / "d/feats.scp", cond="all")[0]) == 6
    with pytest.raises(DataError, match="utt2cond.*no transcribed utterance of condition 'studio'"):
        load_set(tmp_path / "d", tmp_path / "d/feats.scp", cond="studio")
    os.remove(tmp_path / "d/utt2cond")
    caplog.set_level(logging.INFO)
    feats, _, utt2cond = load_set(tmp_path / "d", tmp_path / "d/feats.scp", cond="clean")
    assert len(feats) == 6 and utt2cond is None and "no utt2cond; using all 6" in caplog.text


# ----------------------------------------------------------------------------- bad input

def test_missing_text_and_feats(tmp_path):
    make_toy_dir(tmp_path / "d", toy_sentences(4))
    with pytest.raises(DataError, match="feature scp not found"):
        load_set(tmp_path / "d", tmp_path / "nope.scp")
    os.remove(tmp_path / "d/text")
    with pytest.raises(DataError, match=r"d/text: not found"):
        load_set(tmp_path / "d", tmp_path / "d/feats.scp")


def test_utterances_without_features_skipped_then_error(tmp_path, caplog):
    sents = toy_sentences(4)
    rng = np.random.default_rng(0)
    utts = make_toy_dir(tmp_path / "d", sents, feats={"spk0-u000": letter_feats(sents[0], rng)})
    caplog.set_level(logging.INFO)
    feats, text, _ = load_set(tmp_path / "d", tmp_path / "d/feats.scp")
    assert list(feats) == ["spk0-u000"] == list(text)
    assert "3 of 4 transcribed utterance(s)" in caplog.text and "no features" in caplog.text
    write_kv(tmp_path / "d/text", {u: s for u, s in zip(utts[1:], sents[1:])})
    with pytest.raises(DataError, match="none of the 3 transcribed utterances"):
        load_set(tmp_path / "d", tmp_path / "d/feats.scp")


def test_empty_transcripts_skipped(tmp_path, caplog):
    utts = make_toy_dir(tmp_path / "d", toy_sentences(3))
    (tmp_path / "d/text").write_text(f"{utts[0]} ab\n{utts[1]}\n{utts[2]} bad cab\n")
    caplog.set_level(logging.INFO)
    feats, text, _ = load_set(tmp_path / "d", tmp_path / "d/feats.scp")
    assert list(text) == [utts[0], utts[2]] and text[utts[2]] == "bad cab"
    assert "1 utterance(s) with an empty transcript" in caplog.text


def test_dim_mismatch_and_nan_name_the_utterance(tmp_path):
    sents = toy_sentences(3)
    rng = np.random.default_rng(0)
    utts = toy_utts(3)
    feats = {u: letter_feats(s, rng) for u, s in zip(utts, sents)}
    feats[utts[2]] = feats[utts[2]][:, :5]
    make_toy_dir(tmp_path / "a", sents, feats=feats)
    with pytest.raises(DataError, match=f"utt '{utts[2]}' has dim 5, but utt '{utts[0]}' has dim 7"):
        load_set(tmp_path / "a", tmp_path / "a/feats.scp")
    feats[utts[2]] = letter_feats(sents[2], rng)
    feats[utts[1]][3, 2] = np.nan
    make_toy_dir(tmp_path / "b", sents, feats=feats)
    with pytest.raises(DataError, match=f"utt '{utts[1]}' has NaN"):
        load_set(tmp_path / "b", tmp_path / "b/feats.scp")
    # test features of another dim than the training ones
    with pytest.raises(DataError, match="the training features have dim 9"):
        load_set(tmp_path / "b", tmp_path / "b/feats.scp", dim=9)


def test_bad_options(tmp_path):
    from fhvae.errors import ConfigError
    with pytest.raises(ConfigError, match=r"heldout must be a share in \[0, 1\), got 1.5"):
        AsrOptions(heldout=1.5).validate()
    with pytest.raises(ConfigError, match="subsample must be 1, 2 or 4, got 3"):
        AsrOptions(subsample=3).validate()
