"""fhvae-report: write RESULTS.md of a recipe run from its outputs (SV results, probes, plots)."""
import argparse

from fhvae.bin import run_cli

EPILOG = """example (from egs/mini/v1):
  fhvae-report --exp-dir exp/fhvae --out RESULTS.md --assets results --command "make demo"
"""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-report", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.add_argument("--command", default="./run.sh", help="the command that produced the run (recorded)")
    p.add_argument("--title", default="Results")
    p.add_argument("--assets", help="copy the PNGs here and link the copies (exp/ is not in git)")
    args = p.parse_args(argv)
    from fhvae.eval.report import write_report
    print(write_report(args.exp_dir, args.out, args.command, args.title, args.assets))
    return 0


def main(argv=None):
    run_cli("fhvae-report", _main, argv)


if __name__ == "__main__":
    main()
