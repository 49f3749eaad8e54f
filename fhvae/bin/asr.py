"""fhvae-asr: downstream ASR (BPE + CTC, greedy decoding) on any frame-level feature scp, with the
word error rate overall and per channel condition of the test set."""
import argparse

from fhvae.bin import run_cli

EPILOG = """examples:
  # z1 of a trained FHVAE (exported per frame) vs the fbank features it was trained on
  fhvae-asr --train-feats exp/fhvae/export/train/z1.scp --train-dir data/train \\
      --test-feats exp/fhvae/export/test/z1.scp --test-dir data/test --out-dir exp/fhvae/asr/z1
  fhvae-asr --train-feats data/train/feats.scp --train-dir data/train \\
      --test-feats data/test/feats.scp --test-dir data/test --out-dir exp/fhvae/asr/fbank

The model (conv subsampling + 2-layer BiGRU + CTC over sentencepiece BPE units) is trained on the
TRAIN_DIR utterances of condition --train-cond (utt2cond; 'all' or no utt2cond: every utterance),
a --heldout share of them picking the best epoch, and tested on every transcribed utterance of
TEST_DIR. Features are normalized with the mean/variance of the ASR training utterances. A killed
run started again with the same options resumes from OUT_DIR/checkpoint.pt.

outputs (OUT_DIR): bpe.model, bpe.vocab, stats.npz, checkpoint.pt, model.pt (best epoch),
  hyp.txt       'utt word word ...' greedy transcripts of the test set
  results.json  wer (percent, corpus level: errors / reference words), overall and per_cond
                {wer, n_utts, n_words, sub, del, ins}, training summary, options
  results.md    the same as a Markdown table row (also printed)"""


def _main(argv):
    from fhvae.asr.train import AsrOptions

    d = AsrOptions()
    p = argparse.ArgumentParser(prog="fhvae-asr", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-feats", required=True, help="frame-level feature scp of the training utterances")
    p.add_argument("--train-dir", required=True, help="training data dir (text, utt2cond)")
    p.add_argument("--test-feats", required=True, help="frame-level feature scp of the test utterances")
    p.add_argument("--test-dir", required=True, help="test data dir (text; utt2cond for the breakdown)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", help="row label in results.md (default: basename of --out-dir)")
    p.add_argument("--train-cond", default=d.train_cond,
                   help="train on utterances of this condition; 'all': every one (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help="BPE pieces at most (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="at most (default %(default)s)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without held-out improvement (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--hidden", type=int, default=d.hidden, help="GRU units per direction (default %(default)s)")
    p.add_argument("--layers", type=int, default=d.layers, help="GRU layers (default %(default)s)")
    p.add_argument("--subsample", type=int, choices=[1, 2, 4], default=d.subsample,
                   help="frame subsampling of the conv front end (default %(default)s)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="(default %(default)s)")
    p.add_argument("--heldout", type=float, default=d.heldout,
                   help="share of the training utterances held out to pick the epoch (default %(default)s)")
    p.add_argument("--specaug", action="store_true",
                   help="mask random feature bands / time spans during training (needs more --epochs)")
    p.add_argument("--seed", type=int, default=d.seed, help="(default %(default)s)")
    p.add_argument("--num-threads", type=int, default=1,
                   help="torch CPU threads; the small model gains little from more (default %(default)s)")
    a = p.parse_args(argv)
    if a.num_threads < 1:
        p.error("--num-threads must be >= 1")

    import torch

    from fhvae.asr.train import run_asr
    torch.set_num_threads(a.num_threads)
    opts = AsrOptions(vocab_size=a.vocab_size, epochs=a.epochs, patience=a.patience, batch_size=a.batch_size,
                      lr=a.lr, hidden=a.hidden, layers=a.layers, subsample=a.subsample, dropout=a.dropout,
                      heldout=a.heldout, specaug=a.specaug, seed=a.seed, train_cond=a.train_cond)
    r = run_asr(a.train_feats, a.train_dir, a.test_feats, a.test_dir, a.out_dir, opts, name=a.name)
    with open(f"{a.out_dir}/results.md", encoding="utf-8") as f:
        print(f.read(), end="")
    return 0 if r else 1


def main(argv=None):
    run_cli("fhvae-asr", _main, argv)


if __name__ == "__main__":
    main()
