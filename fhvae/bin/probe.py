"""fhvae-probe: linear-probe accuracy of speaker, condition, gender and phone (class) from z1, z2
and fbank segments: a quantitative disentanglement check."""
import argparse

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-probe --exp-dir exp/fhvae --train-dir data/train --test-dir data/dev \\
      --phone-classes local/phone_classes.txt --out-dir exp/fhvae/probes

Logistic regressions (standardized inputs) are trained on segments of TRAIN_DIR and tested on
segments of TEST_DIR, which must hold other utterances of the same speakers (speaker is a closed
set). Inputs per 20-frame segment: z1 and z2 posterior means computed with the model (no export
needed) and, as reference, fbank = [segment mean, centre frame] of the normalized features.
Chance = accuracy of always answering the most frequent training label. Factors without label
files (utt2cond, utt2gender/spk2gender, phones.ctm, --phone-classes) are skipped.

outputs: OUT_DIR/probes.json  {factor: {fbank, z1, z2, chance: accuracy, n_train, n_test, n_classes}}
         OUT_DIR/probes.md    the same as a Markdown table (accuracy in %), also printed"""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-probe", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="trained exp dir (config.yaml + checkpoints)")
    p.add_argument("--train-dir", required=True, help="data dir the probes are trained on")
    p.add_argument("--test-dir", required=True, help="data dir of held-out utterances of the same speakers")
    p.add_argument("--out-dir", required=True, help="writes probes.json and probes.md here")
    p.add_argument("--phone-classes", help="'<phone> <class>' lines (e.g. SON/OBS/SIL)")
    p.add_argument("--max-segments", type=int, default=5000, help="segments sampled per data dir (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.max_segments < 2:
        p.error("--max-segments must be >= 2")

    from fhvae.eval.probes import format_table, run_probes
    results = run_probes(a.exp_dir, a.train_dir, a.test_dir, a.out_dir, phone_classes=a.phone_classes,
                         max_segments=a.max_segments, seed=a.seed, which=a.checkpoint, device=a.device)
    print(format_table(results), end="")
    return 0


def main(argv=None):
    run_cli("fhvae-probe", _main, argv)


if __name__ == "__main__":
    main()
