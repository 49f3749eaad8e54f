"""fhvae-compute-fbank: log-mel fbank features for a Kaldi data dir (steps/make_fbank.sh style)."""
import argparse
import sys

from fhvae.bin import run_cli
from fhvae.errors import ConfigError
from fhvae.features.fbank import FbankConfig, compute_fbank_job, make_fbank

EXAMPLES = """\
examples:
  fhvae-compute-fbank --nj 4 --config conf/fbank.yaml data/train exp/make_fbank/train fbank
  fhvae-compute-fbank --dither 1.0 --compress true data/dev

Writes <fbank-dir>/raw_fbank_<set>.JOB.{ark,scp} (one pair per job), then <data-dir>/feats.scp
(absolute ark paths, sorted), utt2num_frames and frame_shift. Jobs are split by speaker
(nj is clamped to the number of speakers) and log to <log-dir>/make_fbank_<set>.JOB.log.
Defaults: <log-dir> = <data-dir>/log, <fbank-dir> = <data-dir>/data.
Audio must be mono at the config's sample_rate (16 kHz by default); use a wav.scp pipe
(e.g. 'sox FILE -t wav -r 16000 - |') to convert. Utterances with no audio samples or shorter
than one frame are skipped (as Kaldi does) and listed in <log-dir>/make_fbank_<set>.skipped
(then run utils/fix_data_dir.sh). A segments end time of -1 means the end of the recording.
Each job runs 'python -m fhvae.bin.compute_fbank --job ...' on one split of the data dir.
"""


def _bool(s):
    v = s.lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _job(argv):
    """Worker mode, run once per job by the stage: one split data dir -> one ark/scp."""
    p = argparse.ArgumentParser(prog="fhvae-compute-fbank --job",
                                description="One fbank job (run by fhvae-compute-fbank).")
    p.add_argument("--config", required=True, help="resolved fbank options (YAML)")
    p.add_argument("--compress", action="store_true", help="write CM compressed matrices")
    p.add_argument("--source-dir", help="the unsplit data dir (named in error messages)")
    p.add_argument("split_dir")
    p.add_argument("ark")
    p.add_argument("scp")
    p.add_argument("utt2num_frames")
    a = p.parse_args(argv)
    compute_fbank_job(a.split_dir, a.ark, a.scp, a.utt2num_frames, FbankConfig.from_yaml(a.config),
                      compress=a.compress, source_dir=a.source_dir)
    return 0


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--job"]:
        return _job(argv[1:])
    p = argparse.ArgumentParser(
        prog="fhvae-compute-fbank", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute log-mel filterbank features (kaldi-native-fbank, int16 scale) for "
                    "every utterance of a Kaldi data dir, in parallel jobs.")
    p.add_argument("--nj", type=int, default=4, help="number of parallel jobs (default 4)")
    p.add_argument("--cmd", default="utils/run.sh",
                   help="job runner, as Kaldi's cmd.sh (default utils/run.sh: the jobs run on this "
                        "machine, one process each)")
    p.add_argument("--config", help="YAML file of fbank options (e.g. conf/fbank.yaml)")
    p.add_argument("--dither", type=float, help="dither (overrides the config; default 0.0)")
    p.add_argument("--compress", type=_bool, default=False, metavar="true|false",
                   help="write compressed (CM) matrices, as Kaldi's --compress (default false)")
    p.add_argument("data_dir", help="Kaldi data dir with wav.scp, utt2spk, spk2utt [, segments]")
    p.add_argument("log_dir", nargs="?", help="job logs (default <data-dir>/log)")
    p.add_argument("fbank_dir", nargs="?", help="where the arks go (default <data-dir>/data)")
    a = p.parse_args(argv)
    if a.nj < 1:
        raise ConfigError(f"--nj must be >= 1, got {a.nj}")
    cfg = FbankConfig.from_yaml(a.config) if a.config else FbankConfig()
    if a.dither is not None:
        cfg.dither = a.dither
    make_fbank(a.data_dir, a.log_dir, a.fbank_dir, nj=a.nj, cmd=a.cmd, cfg=cfg, compress=a.compress)
    return 0


def main(argv=None):
    run_cli("fhvae-compute-fbank", _main, argv)


if __name__ == "__main__":
    main()
