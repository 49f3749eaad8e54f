"""fhvae-compute-stats: global per-dimension feature mean/variance of a data dir."""
import argparse

from fhvae.bin import run_cli
from fhvae.features.stats import compute_data_dir_stats

EXAMPLES = """\
examples:
  fhvae-compute-stats data/train                  # -> data/train/stats.npz
  fhvae-compute-stats --out exp/stats.npz data/train

Reads <data-dir>/feats.scp (any feature dimension, FM/DM/CM matrices) one utterance at a time
and writes an .npz with arrays mean (D,), var (D,) (population variance), count (frames), dim.
Broken utterances (unreadable, NaN/inf) are skipped with a warning naming utterance and ark, up
to --max-bad-utts of them; beyond that it stops, naming the first, and writes nothing.
"""


def _main(argv):
    p = argparse.ArgumentParser(
        prog="fhvae-compute-stats", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Global per-dimension mean and variance over all frames of a data dir's "
                    "features (float64 accumulation, streamed utterance by utterance).")
    p.add_argument("--out", help="output file (default <data-dir>/stats.npz)")
    p.add_argument("--max-bad-utts", type=float, default=0.05,
                   help="fraction of broken utterances (unreadable, NaN/inf) skipped with a warning before "
                        "stopping, as training and export do (default %(default)s)")
    p.add_argument("data_dir", help="Kaldi data dir with feats.scp")
    a = p.parse_args(argv)
    if not 0 <= a.max_bad_utts <= 1:
        p.error(f"--max-bad-utts must be a fraction in [0, 1], got {a.max_bad_utts}")
    compute_data_dir_stats(a.data_dir, a.out, max_bad=a.max_bad_utts)
    return 0


def main(argv=None):
    run_cli("fhvae-compute-stats", _main, argv)


if __name__ == "__main__":
    main()
