"""fhvae-score-sv: score speaker-verification trials with a cosine or LDA+PLDA backend."""
import argparse

from fhvae.bin import run_cli
from fhvae.eval.sv import score_sv

EXAMPLES = """\
examples:
  # cosine scoring of s-vectors (fhvae-export --out-dir exp/fhvae/export/<set>), mean from train
  fhvae-score-sv --trials data/test/trials --vectors exp/fhvae/export/test/svector.scp \\
      --backend cosine --train-vectors exp/fhvae/export/train/svector.scp --out-dir exp/fhvae/sv_cosine

  # LDA + PLDA trained on labelled training vectors (Kaldi x-vectors work too)
  fhvae-score-sv --trials data/test/trials --vectors exp/fhvae/export/test/svector.scp --backend plda \\
      --train-vectors exp/fhvae/export/train/svector.scp --train-utt2spk data/train/utt2spk \\
      --lda-dim 200 --out-dir exp/fhvae/sv_plda

  # the fbank mean+std baseline (fhvae-extract-baseline --out-dir exp/baseline/<set>)
  fhvae-score-sv --trials data/test/trials --vectors exp/baseline/test/vectors.scp --backend plda \\
      --train-vectors exp/baseline/train/vectors.scp --train-utt2spk data/train/utt2spk \\
      --out-dir exp/baseline/sv_plda

  # enroll speaker models (mean over each speaker's utterances) instead of single utterances
  fhvae-score-sv ... --enroll-vectors exp/fhvae/export/enroll/svector.scp \\
      --enroll-spk2utt data/enroll/spk2utt
  # or one vector per speaker, e.g. fhvae-export's per-speaker mean s-vectors (speaker ids as keys)
  fhvae-score-sv ... --enroll-vectors exp/fhvae/export/enroll/spk_svector.scp

vector scps: fhvae-export writes OUT/svector.scp (per utterance) and OUT/spk_svector.scp (per
speaker); fhvae-extract-baseline writes OUT/vectors.scp.

outputs:
  DIR/scores        'enroll test score' per trial (trials order, 6 decimals)
  DIR/results.json  eer (percent, exactly Kaldi's compute-eer on DIR/scores), eer_interp
                    (percent, ROC crossing with linear interpolation), mindcf_p0.01,
                    mindcf_p0.001 (Cmiss = Cfa = 1), n_target, n_nontarget, backend, inputs
"""


def _main(argv):
    p = argparse.ArgumentParser(
        prog="fhvae-score-sv",
        description="Score Kaldi trials ('enroll test target|nontarget') on vectors from any Kaldi "
                    "vector scp and report EER and minDCF.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trials", required=True, help="trials file: enroll test target|nontarget")
    p.add_argument("--vectors", required=True, help="vector scp with the test (and enroll) vectors")
    p.add_argument("--backend", required=True, choices=["cosine", "plda"])
    p.add_argument("--out-dir", required=True, help="writes scores and results.json here")
    p.add_argument("--train-vectors", help="training vector scp (cosine: mean; plda: required)")
    p.add_argument("--train-utt2spk", help="speakers of the training vectors (plda: required)")
    p.add_argument("--lda-dim", type=int, default=200,
                   help="LDA output dim for plda, capped at #speakers - 1 and the vector dim "
                        "(default %(default)s)")
    p.add_argument("--enroll-vectors", help="vector scp for the enroll side (default: --vectors)")
    p.add_argument("--enroll-spk2utt",
                   help="enroll ids in trials are speakers; model = mean over their utterances")
    a = p.parse_args(argv)
    if a.lda_dim < 1:
        p.error("--lda-dim must be at least 1")
    r = score_sv(a.trials, a.vectors, a.backend, a.out_dir, train_vectors=a.train_vectors,
                 train_utt2spk=a.train_utt2spk, lda_dim=a.lda_dim,
                 enroll_vectors=a.enroll_vectors, enroll_spk2utt=a.enroll_spk2utt)
    print(f"{a.backend}: EER {r['eer']:.2f}% (Kaldi) {r['eer_interp']:.2f}% (interpolated), "
          f"minDCF(0.01) {r['mindcf_p0.01']:.4f}, minDCF(0.001) {r['mindcf_p0.001']:.4f}, "
          f"{r['n_target']} target / {r['n_nontarget']} nontarget trials -> {a.out_dir}")
    return 0


def main(argv=None):
    run_cli("fhvae-score-sv", _main, argv)


if __name__ == "__main__":
    main()
