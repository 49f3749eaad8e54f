"""fhvae-data-dir: Kaldi data-dir tools (validate, fix, split, subset, crop, spk2utt, trials).

The utils/*.sh wrappers (validate_data_dir.sh, fix_data_dir.sh, split_data.sh, ...) call these.
"""
import argparse
import sys

from fhvae import datadir
from fhvae.bin import run_cli
from fhvae.io import tables

EXAMPLES = """examples:
  fhvae-data-dir validate --need-feats data/train
  fhvae-data-dir fix data/train
  fhvae-data-dir split data/train 8          # prints the effective number of parts
  fhvae-data-dir subset --spk-list dev.spk data/train data/dev
  fhvae-data-dir crop --duration 1.0 data/test data/test_1s   # central 1 s of each utterance
  fhvae-data-dir utt2spk-to-spk2utt < data/train/utt2spk > data/train/spk2utt
  fhvae-data-dir make-trials --n-target 1000 --n-nontarget 10000 data/test/utt2spk data/test/trials
"""


def _write_table(table):
    for key, value in table.items():
        sys.stdout.write(f"{key} {' '.join(value) if isinstance(value, list) else value}\n")


def _main(argv):
    parser = argparse.ArgumentParser(
        prog="fhvae-data-dir", description="Tools for Kaldi data directories.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a data dir against Kaldi's rules",
                       description="Check sorting, unique keys, speaker prefixes, spk2utt, and that every "
                       "table covers the same utterances; report every problem with file:line.")
    feats = p.add_mutually_exclusive_group()
    feats.add_argument("--need-feats", action="store_true", help="feats.scp must exist")
    feats.add_argument("--no-feats", action="store_true",
                       help="feats.scp is not required (the default; checked when present)")
    p.add_argument("--no-wav", action="store_true", help="wav.scp is not required (checked when present)")
    p.add_argument("--no-check-files", action="store_true",
                   help="do not check that wav files and feature arks exist")
    p.add_argument("data", help="data dir, e.g. data/train")

    p = sub.add_parser("fix", help="sort tables, keep utterances present in all of them",
                       description="Like Kaldi's fix_data_dir.sh: sort every table, drop duplicates, keep "
                       "the utterances found in every table, regenerate spk2utt. Originals go to DATA/.backup/.")
    p.add_argument("data")

    p = sub.add_parser("split", help="split by speaker into DATA/splitN/{1..N}",
                       description="Split a data dir by speaker into DATA/splitN/{1..N}, parts balanced by "
                       "utterance count. N is clamped to the number of speakers; the effective N is printed.")
    p.add_argument("data")
    p.add_argument("nj", type=int, help="number of parts")

    p = sub.add_parser("subset", help="copy the utterances or speakers in a list to a new data dir")
    lists = p.add_mutually_exclusive_group(required=True)
    lists.add_argument("--utt-list", help="file with one utterance id per line (first field)")
    lists.add_argument("--spk-list", help="file with one speaker id per line (first field)")
    p.add_argument("src")
    p.add_argument("dst")

    p = sub.add_parser("crop", help="cut every utterance to its central --duration seconds (segments)",
                       description="Write DST with a segments file that keeps the central --duration seconds "
                       "of every utterance of SRC (same utterance ids; shorter ones are kept whole). "
                       "Features are not copied: compute them for DST.")
    p.add_argument("--duration", type=float, required=True, help="seconds to keep, e.g. 1.0")
    p.add_argument("src")
    p.add_argument("dst")

    p = sub.add_parser("utt2spk-to-spk2utt", help="utt2spk (file or stdin) -> spk2utt on stdout")
    p.add_argument("file", nargs="?", default="-")
    p = sub.add_parser("spk2utt-to-utt2spk", help="spk2utt (file or stdin) -> utt2spk on stdout")
    p.add_argument("file", nargs="?", default="-")

    p = sub.add_parser("make-trials", help="utterance-vs-utterance speaker-verification trials",
                       description="Write Kaldi trials 'enroll test target|nontarget' from utt2spk. Without "
                       "--n-target/--n-nontarget every pair is written; otherwise pairs are drawn uniformly, "
                       "deterministically from --seed.")
    p.add_argument("--n-target", type=int, help="number of target trials (default: all)")
    p.add_argument("--n-nontarget", type=int, help="number of nontarget trials (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("utt2spk")
    p.add_argument("trials", help="output file")

    args = parser.parse_args(argv)
    if args.command == "validate":
        datadir.validate_data_dir(args.data, need_feats=args.need_feats,
                                  need_wav=False if args.no_wav else None, check_files=not args.no_check_files)
    elif args.command == "fix":
        datadir.fix_data_dir(args.data)
    elif args.command == "split":
        print(len(datadir.split_data_dir(args.data, args.nj)))
    elif args.command == "subset":
        ids = tables.read_id_list(args.utt_list or args.spk_list)
        if args.utt_list:
            datadir.subset_data_dir(args.src, args.dst, utts=ids)
        else:
            datadir.subset_data_dir(args.src, args.dst, spks=ids)
    elif args.command == "crop":
        datadir.crop_data_dir(args.src, args.dst, args.duration)
    elif args.command == "utt2spk-to-spk2utt":
        utt2spk = tables.read_kv(args.file, min_fields=2, max_fields=2, check_sorted=False)
        _write_table(tables.utt2spk_to_spk2utt(utt2spk))
    elif args.command == "spk2utt-to-utt2spk":
        spk2utt = tables.read_table(args.file, min_fields=2, check_sorted=False)
        _write_table(tables.spk2utt_to_utt2spk(spk2utt))
    elif args.command == "make-trials":
        utt2spk = tables.read_kv(args.utt2spk, min_fields=2, max_fields=2)
        trials = datadir.make_trials(utt2spk, n_target=args.n_target, n_nontarget=args.n_nontarget,
                                     seed=args.seed)
        datadir.write_trials(args.trials, trials)
    return 0


def main(argv=None):
    run_cli("fhvae-data-dir", _main, argv)


if __name__ == "__main__":
    main()
