"""Parallel job runner in the style of Kaldi's run.pl / slurm.pl.

Backend interface (``$cmd`` in recipes, chosen in cmd.sh)::

    utils/run.sh   [options] JOB=1:N exp/log/name.JOB.log command args...
    utils/slurm.sh [options] JOB=1:N exp/log/name.JOB.log command args...

``JOB`` is replaced by the job index in the log path and in every argument. The command runs
in bash: a single argument is a whole command line (``'a JOB | b'``); several arguments are
joined like run.pl does (one containing whitespace is quoted, the others are passed as they
are, so an escaped ``\\|`` becomes a pipe). Each log file starts with
``# <command>`` and ``# Started at <date>`` and ends with ``# Accounting: time=<s> threads=<n>``
and ``# Ended (code <rc>) at <date>``.

From Python (``run_jobs``, used by the stages) the local backend runs each job's argv directly,
one subprocess per job (no utils/run.sh, no bash); other backends get the command line.
"""
import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

from fhvae.errors import FhvaeError

log = logging.getLogger(__name__)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAIL_LINES = 20
_ENDED = re.compile(r"^# Ended \(code (-?\d+)\) at ")
_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")


def _now():
    return time.strftime("%a %b %d %H:%M:%S %Z %Y")


def _run_one(log_path, command, threads):
    """Run one job with its output (stdout and stderr) in ``log_path``; return its exit code."""
    shown = command if isinstance(command, str) else shlex.join(command)
    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write(f"# {shown}\n# Started at {_now()}\n")
        logf.flush()
        t0 = time.monotonic()
        try:
            rc = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT).returncode
        except OSError as e:
            logf.write(f"cannot run {argv[0]}: {e}\n")
            rc = 127
        if rc < 0:  # killed by a signal: report it like bash does
            rc = 128 - rc
        logf.write(f"# Accounting: time={int(round(time.monotonic() - t0))} threads={threads}\n"
                   f"# Ended (code {rc}) at {_now()}\n")
    return rc


def run_local(jobs: Sequence[Tuple[str, Union[str, Sequence[str]]]], max_parallel=None, *, threads=1) -> List[int]:
    """Run ``jobs`` = [(log_path, argv or bash command string)] on this machine.

    At most ``max_parallel`` (default: number of CPUs) run at once. Returns the exit codes in
    job order.
    """
    if not jobs:
        return []
    n = max(1, min(int(max_parallel or os.cpu_count() or 1), len(jobs)))
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda job: _run_one(job[0], job[1], threads), jobs))


def log_exit_code(log_path) -> Optional[int]:
    """The code of a job log's ``# Ended (code N)`` line; None if absent (job not finished or killed)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        m = _ENDED.match(line)
        if m:
            return int(m.group(1))
    return None


def log_tail(log_path, n=TAIL_LINES) -> str:
    """The last ``n`` lines of a log file (a note if it cannot be read)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return f"(cannot read {log_path}: {e.strerror or e})"
    return "\n".join(lines[-n:])


def failure_message(logs, rcs) -> Optional[str]:
    """``"k / N failed, log is in <first failed log>"`` plus that log's tail; None if all succeeded."""
    failed = [lp for lp, rc in zip(logs, rcs) if rc != 0]
    if not failed:
        return None
    note = ""
    if log_exit_code(failed[0]) is None:
        note = " (it has no '# Ended' line: the job was killed, e.g. by a time or memory limit)"
    return f"{len(failed)} / {len(logs)} failed, log is in {failed[0]}{note}\n{log_tail(failed[0])}"


# ----------------------------------------------------------------------------- backend arguments

def _join_args(args):
    """The bash command for ``args``: a single argument is taken as a whole command line
    ('a | b'); several are joined like run.pl does, quoting those with whitespace (or empty)
    and keeping the others as shell words (so an escaped \\| is a pipe)."""
    if len(args) == 1:
        return args[0]
    return " ".join(shlex.quote(a) if (not a or re.search(r"\s", a)) else a for a in args)


@dataclass
class JobRequest:
    """What ``run.sh`` / ``slurm.sh`` were asked to run: one (log, bash command) per job."""
    jobs: List[Tuple[str, str]]
    max_jobs_run: Optional[int] = None
    num_threads: int = 1
    mem: Optional[str] = None
    gpu: int = 0
    time: Optional[str] = None
    partition: Optional[str] = None
    sbatch_opts: List[str] = field(default_factory=list)


def add_backend_options(parser):
    """The options of utils/run.sh and utils/slurm.sh; the local backend ignores the Slurm ones
    (as run.pl does), so cmd.sh can switch backends without touching recipes."""
    parser.add_argument("--max-jobs-run", type=int, help="at most this many jobs at once "
                        "(local default: number of CPUs; Slurm default: no limit)")
    parser.add_argument("--num-threads", type=int, default=1, help="threads (CPUs) per job")
    parser.add_argument("--mem", help="Slurm: memory per job, e.g. 4G")
    parser.add_argument("--gpu", type=int, default=0, help="Slurm: GPUs per job")
    parser.add_argument("--time", help="Slurm: time limit per job, e.g. 2:00:00")
    parser.add_argument("--partition", help="Slurm: partition")
    parser.add_argument("--sbatch-opts", default="", help="Slurm: more sbatch options, e.g. '--account=x --qos=y'")
    parser.add_argument("--poll-interval", type=float, default=10.0, help="Slurm: seconds between squeue polls")
    return parser


def is_job_range(arg) -> bool:
    """Whether ``arg`` is a job range like 'JOB=1:4' (or 'JOB=3')."""
    return bool(_RANGE.match(arg))


def expand_jobs(spec, log_template, command) -> List[Tuple[str, str]]:
    """Jobs for a range ``spec`` like 'JOB=1:4' (or None: one job): [(log, bash command)].

    The variable name is replaced by the job index in the log path and every argument.
    """
    if spec is None:
        if "JOB" in log_template:
            raise FhvaeError(f"log path {log_template!r} contains JOB but no JOB=1:N range was given")
        return [(log_template, _join_args(command))]
    m = _RANGE.match(spec)
    if not m:
        raise FhvaeError(f"bad job range {spec!r}: expected e.g. JOB=1:4")
    var, start = m.group(1), int(m.group(2))
    end = int(m.group(3) or start)
    if end < start:
        raise FhvaeError(f"bad job range {spec!r}: end < start")
    if end > start and var not in log_template:
        raise FhvaeError(f"running jobs {start}..{end} into one log file {log_template!r}: "
                         f"put {var} in the log path")
    return [(log_template.replace(var, str(j)), _join_args([a.replace(var, str(j)) for a in command]))
            for j in range(start, end + 1)]


# ----------------------------------------------------------------------------- Slurm

SLURM_SCRIPT = """#!/usr/bin/env bash
# Written by utils/slurm.sh: Slurm array task i runs job i with its output in its log.
cd {cwd}
if [ -f ./path.sh ]; then . ./path.sh; fi
case "${{SLURM_ARRAY_TASK_ID:-}}" in
{cases}
  *) echo "$0: no job for array task '${{SLURM_ARRAY_TASK_ID:-}}'" >&2; exit 1 ;;
esac
mkdir -p "$(dirname "$log")"
printf '# %s\\n# Started at %s\\n' "$cmd" "$(date)" > "$log"
start=$(date +%s)
bash -c "$cmd" >> "$log" 2>&1 && rc=0 || rc=$?
end=$(date +%s)
printf '# Accounting: time=%s threads=%s\\n# Ended (code %s) at %s\\n' \\
  "$((end - start))" {threads} "$rc" "$(date)" >> "$log"
exit "$rc"
"""


def sbatch_command(req: JobRequest, script, job_name) -> List[str]:
    """The sbatch argv that submits ``script`` as an array of ``len(req.jobs)`` tasks."""
    qdir = os.path.dirname(script)
    array = f"1-{len(req.jobs)}" + (f"%{req.max_jobs_run}" if req.max_jobs_run else "")
    argv = ["sbatch", "--parsable", f"--job-name={job_name}", f"--array={array}",
            f"--output={os.path.join(qdir, job_name)}.%a.out", f"--cpus-per-task={req.num_threads}"]
    if req.mem:
        argv.append(f"--mem-per-cpu={req.mem}" if req.num_threads > 1 else f"--mem={req.mem}")
    if req.gpu:
        argv.append(f"--gres=gpu:{req.gpu}")
    if req.time:
        argv.append(f"--time={req.time}")
    if req.partition:
        argv.append(f"--partition={req.partition}")
    return argv + list(req.sbatch_opts) + [script]


def run_slurm(req: JobRequest, *, poll_s=10.0, nfs_wait_s=30.0) -> List[int]:
    """Submit ``req.jobs`` as one sbatch array, wait for it, return the exit codes from the logs.

    The job script goes to ``<log dir>/q/<name>.sh``. A job whose log has no ``# Ended`` line
    (killed) counts as failed with code 1, after waiting up to ``nfs_wait_s`` for the log.
    """
    first_log = req.jobs[0][0]
    job_name = re.sub(r"(\.\d+)?\.log$", "", os.path.basename(first_log)) or "job"
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "_", job_name)
    script = os.path.join(os.path.dirname(os.path.abspath(first_log)), "q", f"{job_name}.sh")
    cases = "\n".join(f"  {i}) log={shlex.quote(lp)}; cmd={shlex.quote(cmd)} ;;"
                      for i, (lp, cmd) in enumerate(req.jobs, 1))
    os.makedirs(os.path.dirname(script), exist_ok=True)
    with open(script, "w", encoding="utf-8") as f:
        f.write(SLURM_SCRIPT.format(cwd=shlex.quote(os.getcwd()), cases=cases, threads=req.num_threads))
    os.chmod(script, 0o755)
    for lp, _ in req.jobs:  # stale logs of an earlier run must not count as results
        if os.path.exists(lp):
            os.unlink(lp)
    argv = sbatch_command(req, script, job_name)
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
    except OSError as e:
        raise FhvaeError(f"cannot run sbatch: {e}") from None
    if out.returncode != 0:
        raise FhvaeError(f"sbatch failed (code {out.returncode}): {out.stderr.strip() or out.stdout.strip()}\n"
                         f"command: {shlex.join(argv)}")
    job_id = out.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise FhvaeError(f"sbatch printed no job id: {out.stdout.strip()!r}")
    log.info("submitted Slurm array job %s (%d tasks); script %s", job_id, len(req.jobs), script)
    try:
        _wait_slurm(job_id, poll_s)
    except KeyboardInterrupt:
        subprocess.run(["scancel", job_id])
        raise
    deadline = time.monotonic() + nfs_wait_s
    rcs = [log_exit_code(lp) for lp, _ in req.jobs]
    while None in rcs and time.monotonic() < deadline:  # log files can lag behind on NFS
        time.sleep(1.0)
        rcs = [log_exit_code(lp) for lp, _ in req.jobs]
    return [1 if rc is None else rc for rc in rcs]


def _wait_slurm(job_id, poll_s):
    """Poll squeue until no task of ``job_id`` is pending or running."""
    errors = 0
    while True:
        try:
            q = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
        except OSError as e:
            raise FhvaeError(f"cannot run squeue: {e}") from None
        if q.returncode == 0 and not q.stdout.strip():
            return
        if q.returncode != 0:
            if "invalid job id" in q.stderr.lower():  # finished and purged
                return
            errors += 1
            if errors >= 5:
                raise FhvaeError(f"squeue failed 5 times for job {job_id}: {q.stderr.strip()}")
        else:
            errors = 0
        time.sleep(poll_s)


# ----------------------------------------------------------------------------- from Python

def _resolve_cmd(argv0):
    """A backend named in cmd.sh: a bare name ('run.sh') is looked up in the repo's utils/;
    a relative path that does not exist here ('utils/run.sh') is taken relative to the repo."""
    if "/" not in argv0 and os.path.exists(os.path.join(REPO, "utils", argv0)):
        return os.path.join(REPO, "utils", argv0)
    if "/" in argv0 and not os.path.isabs(argv0) and not os.path.exists(argv0) \
            and os.path.exists(os.path.join(REPO, argv0)):
        return os.path.join(REPO, argv0)
    return argv0


class _OptionParser(argparse.ArgumentParser):
    def error(self, message):
        raise FhvaeError(f"{self.prog}: {message}")


def _is_local(backend):
    return os.path.realpath(backend) == os.path.realpath(os.path.join(REPO, "utils", "run.sh"))


def _run_backend(argv, logs) -> List[int]:
    """Run a backend command line (e.g. utils/slurm.sh ... JOB=1:N LOG CMD); the exit codes of
    the jobs whose logs it wrote (0 for a log it did not write)."""
    t0 = time.time()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise FhvaeError(f"cannot run job backend {argv[0]!r}: {e}") from None
    if proc.returncode == 0:
        sys.stderr.write(proc.stdout)
        return [0] * len(logs)
    fresh = [os.path.exists(lp) and os.path.getmtime(lp) >= t0 - 1 for lp in logs]
    rcs = [(log_exit_code(lp) if is_new else 0) for lp, is_new in zip(logs, fresh)]
    rcs = [1 if rc is None else rc for rc in rcs]
    if not any(rcs):
        raise FhvaeError(f"job backend {shlex.join(argv[:1])} failed (code {proc.returncode}):\n"
                         f"{proc.stdout.strip()[-4000:]}")
    return rcs


def run_jobs(cmd: str, nj: int, log_template: str, command: Union[str, Sequence[str]]) -> None:
    """Run ``command`` as jobs 1..nj through backend ``cmd`` (cmd.sh's, e.g. "utils/run.sh --max-jobs-run 4").

    ``command`` is an argv (no shell) or one bash command line (a str); JOB in it and in
    ``log_template`` becomes the job index. The local backend (utils/run.sh) runs the jobs from
    here with ``run_local``; another backend is run as ``cmd JOB=1:nj LOG '<command line>'``.
    Raises FhvaeError "k / N failed, log is in <log>" with the tail of that log if any job fails.
    """
    argv = shlex.split(cmd)
    if not argv:
        raise FhvaeError("empty job backend command (check cmd.sh)")
    argv[0] = _resolve_cmd(argv[0])
    logs = [log_template.replace("JOB", str(j)) for j in range(1, nj + 1)]
    if _is_local(argv[0]):
        parser = _OptionParser(prog=cmd, add_help=False, allow_abbrev=False)
        opts = add_backend_options(parser).parse_args(argv[1:])
        if isinstance(command, str):
            job_commands = [command.replace("JOB", str(j)) for j in range(1, nj + 1)]
        else:
            job_commands = [[a.replace("JOB", str(j)) for a in command] for j in range(1, nj + 1)]
        rcs = run_local(list(zip(logs, job_commands)), opts.max_jobs_run, threads=opts.num_threads)
    else:
        line = command if isinstance(command, str) else shlex.join(command)
        rcs = _run_backend(argv + [f"JOB=1:{nj}", log_template, line], logs)
    msg = failure_message(logs, rcs)
    if msg:
        raise FhvaeError(msg)
