"""fhvae-extract-baseline: per-utterance fbank mean + std vectors, the speaker-verification baseline."""
import argparse
import logging

from fhvae.bin import run_cli
from fhvae.eval.sv import extract_baseline

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  fhvae-extract-baseline --data-dir data/test --stats data/train/stats.npz --out-dir exp/baseline/test
  fhvae-score-sv --trials data/test/trials --vectors exp/baseline/test/vectors.scp \\
      --backend cosine --out-dir exp/baseline/sv_cosine

Each vector is [mean over frames, std over frames] of the (optionally globally normalized)
features: 2 x feature-dim values, written as Kaldi float vectors (FV) to DIR/vectors.{ark,scp}.
Score it with the same backend and trials as the s-vectors so every EER has its baseline.
"""


def _main(argv):
    p = argparse.ArgumentParser(
        prog="fhvae-extract-baseline",
        description="Baseline utterance vectors: per-utterance mean and std of the features in "
                    "DATA_DIR/feats.scp.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", required=True, help="Kaldi data dir with feats.scp")
    p.add_argument("--out-dir", required=True, help="writes vectors.ark and vectors.scp here")
    p.add_argument("--stats", help="npz with global per-dim 'mean' and 'var' (fhvae-compute-stats) "
                                   "to normalize frames first")
    a = p.parse_args(argv)
    n = extract_baseline(a.data_dir, a.out_dir, stats=a.stats)
    log.info("wrote %d baseline vectors to %s/vectors.scp", n, a.out_dir)
    return 0


def main(argv=None):
    run_cli("fhvae-extract-baseline", _main, argv)


if __name__ == "__main__":
    main()
