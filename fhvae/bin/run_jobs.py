"""fhvae-run-jobs: the job backend behind utils/run.sh (local) and utils/slurm.sh (Slurm)."""
import argparse
import shlex
import sys

from fhvae import jobs
from fhvae.bin import run_cli

DESCRIPTION = """\
Run JOB=1:N parallel jobs like Kaldi's run.pl / slurm.pl. JOB is replaced by the job index in the
log path and in every argument. The command runs in bash: a single argument is a whole command
line ('a JOB | b'); several arguments are joined like run.pl does: one with whitespace is quoted,
the others are passed as they are, so an escaped \\| makes a pipe. Each log
starts with '# <command>' and '# Started at <date>' and ends with
'# Accounting: time=<s> threads=<n>' and '# Ended (code <rc>) at <date>'. If any job fails the
exit status is 1 and '<k> / <N> failed, log is in <log>' is printed with the end of that log.
--mem, --gpu, --time, --partition, --sbatch-opts and --poll-interval only matter for Slurm; the
local backend ignores them (as run.pl does), so cmd.sh can switch backends without touching recipes.
The stages (e.g. fhvae-compute-fbank --cmd utils/run.sh) run local jobs themselves, without this
command."""

EXAMPLES = """examples:
  utils/run.sh JOB=1:4 exp/log/fbank.JOB.log fhvae-compute-fbank data/train/split4/JOB
  utils/run.sh --max-jobs-run 2 JOB=1:8 exp/log/x.JOB.log gunzip -c in.JOB.gz \\| wc -l
  utils/run.sh JOB=1:2 exp/log/y.JOB.log 'sort in.JOB | uniq -c > out.JOB'
  utils/run.sh exp/log/stats.log fhvae-compute-stats data/train exp/stats
  utils/slurm.sh --mem 4G --num-threads 2 --time 2:00:00 JOB=1:100 exp/log/x.JOB.log cmd JOB"""


def _main(argv):
    parser = argparse.ArgumentParser(
        prog="fhvae-run-jobs", usage="%(prog)s [--backend local|slurm] [options] [JOB=1:N] LOG COMMAND [ARG ...]",
        description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    jobs.add_backend_options(parser)
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="[JOB=1:N] LOG COMMAND [ARG ...]")
    a = parser.parse_args(argv)
    rest = list(a.args)
    spec = rest.pop(0) if rest and jobs.is_job_range(rest[0]) else None
    if len(rest) < 2:
        parser.error("need a log file and a command")
    req = jobs.JobRequest(jobs=jobs.expand_jobs(spec, rest[0], rest[1:]), max_jobs_run=a.max_jobs_run,
                          num_threads=a.num_threads, mem=a.mem, gpu=a.gpu, time=a.time, partition=a.partition,
                          sbatch_opts=shlex.split(a.sbatch_opts))
    if a.backend == "local":
        rcs = jobs.run_local(req.jobs, req.max_jobs_run, threads=req.num_threads)
    else:
        rcs = jobs.run_slurm(req, poll_s=a.poll_interval)
    msg = jobs.failure_message([lp for lp, _ in req.jobs], rcs)
    if msg:
        print(f"{'run.sh' if a.backend == 'local' else 'slurm.sh'}: {msg}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    run_cli("fhvae-run-jobs", _main, argv)


if __name__ == "__main__":
    main()
