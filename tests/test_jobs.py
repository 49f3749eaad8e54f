"""Job runner: utils/run.sh (local), utils/slurm.sh (with fake sbatch/squeue), fhvae.jobs.run_jobs
(local jobs run directly from Python; other backends get one command line)."""
import os
import re
import subprocess

import pytest

from fhvae import jobs
from fhvae.errors import FhvaeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "utils", "run.sh")
SLURM = os.path.join(REPO, "utils", "slurm.sh")


def run(argv, cwd, env=None):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)


def read(path):
    with open(path) as f:
        return f.read()


def check_log(path, command, rc):
    lines = read(path).splitlines()
    assert lines[0] == f"# {command}"
    assert lines[1].startswith("# Started at ")
    assert re.fullmatch(r"# Accounting: time=\d+ threads=1", lines[-2])
    assert lines[-1].startswith(f"# Ended (code {rc}) at ")
    return lines[2:-2]


def test_run_sh_success_logs_and_job_substitution(tmp_path):
    r = run([RUN, "JOB=1:3", "log/x.JOB.log", "echo", "job JOB of", "out.JOB"], tmp_path)
    assert r.returncode == 0, r.stderr
    for j in (1, 2, 3):
        body = check_log(str(tmp_path / f"log/x.{j}.log"), f"echo 'job {j} of' out.{j}", 0)
        assert body == [f"job {j} of out.{j}"]


def test_run_sh_pipes(tmp_path):
    r = run([RUN, "JOB=2:3", "log/p.JOB.log", "echo abc JOB | tr a-z A-Z"], tmp_path)  # one quoted command
    assert r.returncode == 0, r.stderr
    assert check_log(str(tmp_path / "log/p.3.log"), "echo abc 3 | tr a-z A-Z", 0) == ["ABC 3"]
    assert not os.path.exists(tmp_path / "log/p.1.log")
    r = run([RUN, "log/q.log", "echo", "x  y", "|", "wc", "-c"], tmp_path)  # escaped pipe, single job
    assert r.returncode == 0, r.stderr
    assert check_log(str(tmp_path / "log/q.log"), "echo 'x  y' | wc -c", 0) == ["5"]  # quoting kept 2 spaces


def test_run_sh_failure_names_first_failed_log(tmp_path):
    r = run([RUN, "JOB=1:3", "exp/log/f.JOB.log", "echo line-from-JOB; [ JOB -ne 2 ]"], tmp_path)
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first == "run.sh: 1 / 3 failed, log is in exp/log/f.2.log"
    assert "line-from-2" in r.stderr and "# Ended (code 1)" in r.stderr
    check_log(str(tmp_path / "exp/log/f.1.log"), "echo line-from-1; [ 1 -ne 2 ]", 0)
    check_log(str(tmp_path / "exp/log/f.2.log"), "echo line-from-2; [ 2 -ne 2 ]", 1)


def test_run_sh_tail_is_limited(tmp_path):
    r = run([RUN, "log/t.log", "seq 1 100; exit 3"], tmp_path)
    assert r.returncode == 1 and "run.sh: 1 / 1 failed, log is in log/t.log" in r.stderr
    assert "\n100\n" in r.stderr and "\n70\n" not in r.stderr


def test_max_jobs_run(tmp_path):
    # Mutual exclusion: mkdir of the lock fails if another job holds it.
    excl = "mkdir lock && sleep 0.3 && rmdir lock"
    r = run([RUN, "--max-jobs-run", "1", "JOB=1:3", "log/m.JOB.log", excl], tmp_path)
    assert r.returncode == 0, r.stderr
    # Barrier: each job waits (up to 10 s) until all 3 have started, so they must run at once.
    barrier = ("touch started.JOB; for i in $(seq 100); do [ $(ls started.* | wc -l) -eq 3 ] && exit 0; "
               "sleep 0.1; done; exit 1")
    r = run([RUN, "--max-jobs-run", "3", "JOB=1:3", "log/b.JOB.log", barrier], tmp_path)
    assert r.returncode == 0, r.stderr
    # At most 2 at once: a job fails if it sees more than 2 running markers.
    two = "touch running.JOB; [ $(ls running.* | wc -l) -le 2 ] || exit 1; sleep 0.3; rm running.JOB"
    r = run([RUN, "--max-jobs-run", "2", "JOB=1:4", "log/t.JOB.log", two], tmp_path)
    assert r.returncode == 0, r.stderr


def test_run_sh_usage_errors(tmp_path):
    r = run([RUN, "JOB=1:2", "log/one.log", "true"], tmp_path)
    assert r.returncode == 1 and "put JOB in the log path" in r.stderr
    r = run([RUN, "log/x.JOB.log", "true"], tmp_path)
    assert r.returncode == 1 and "no JOB=1:N range" in r.stderr
    r = run([RUN, "JOB=1:2"], tmp_path)
    assert r.returncode == 2 and "need a log file and a command" in r.stderr
    r = run([RUN, "--help"], tmp_path)
    assert r.returncode == 0 and "JOB=1:N" in r.stdout


def test_run_local_library(tmp_path):
    logs = [str(tmp_path / f"l{i}.log") for i in range(3)]
    rcs = jobs.run_local([(logs[0], ["true"]), (logs[1], "exit 4"), (logs[2], ["/no/such/program"])], 2)
    assert rcs == [0, 4, 127]
    assert jobs.log_exit_code(logs[1]) == 4 and "cannot run /no/such/program" in read(logs[2])
    msg = jobs.failure_message(logs, rcs)
    assert msg.startswith(f"2 / 3 failed, log is in {logs[1]}\n# exit 4\n")
    assert jobs.failure_message(logs[:1], rcs[:1]) is None


def test_run_jobs_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs.run_jobs("run.sh", 3, "log/ok.JOB.log", ["echo", "JOB"])  # bare name resolved in the repo's utils/
    assert check_log("log/ok.2.log", "echo 2", 0) == ["2"]
    with pytest.raises(FhvaeError) as e:
        jobs.run_jobs("utils/run.sh --max-jobs-run 2", 3, "log/bad.JOB.log", "echo oops-JOB; test JOB != 3")
    msg = str(e.value)
    assert msg.startswith("1 / 3 failed, log is in log/bad.3.log\n") and "oops-3" in msg
    with pytest.raises(FhvaeError, match="cannot run job backend"):
        jobs.run_jobs("/no/such/backend.sh", 1, "log/z.log", ["true"])
    with pytest.raises(FhvaeError, match="unrecognized arguments: --bogus"):
        jobs.run_jobs(f"{RUN} --bogus", 1, "log/z.log", ["true"])


def test_run_jobs_local_runs_argv_directly(tmp_path, monkeypatch):
    """The local backend from Python: one process per job running its argv (no run.sh, no bash)."""
    monkeypatch.chdir(tmp_path)
    spawned = []
    real_run = subprocess.run

    def spy(argv, *args, **kwargs):
        spawned.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(jobs.subprocess, "run", spy)
    jobs.run_jobs(f"{RUN} --mem 4G --num-threads 1", 2, "log/d.JOB.log", ["echo", "a b", "x;JOB"])
    assert sorted(spawned) == [["echo", "a b", "x;1"], ["echo", "a b", "x;2"]]
    assert check_log("log/d.2.log", "echo 'a b' 'x;2'", 0) == ["a b x;2"]


# ----------------------------------------------------------------------------- Slurm (faked)

FAKE_SBATCH = """\
#!/usr/bin/env bash
# Fake sbatch: records its arguments, runs every array task now, prints a job id.
printf '%s\\n' "$@" > "$FAKE_DIR/sbatch.args"
array=""; for a in "$@"; do case "$a" in --array=*) array=${a#--array=};; esac; done
array=${array%%%*}
script=${!#}
for i in $(seq "${array%-*}" "${array#*-}"); do
  if [ -n "${FAKE_KILL:-}" ] && [ "$i" = "$FAKE_KILL" ]; then continue; fi  # task killed: no log footer
  SLURM_ARRAY_TASK_ID=$i bash "$script" > /dev/null 2>&1 || true
done
echo 4242
"""
FAKE_SQUEUE = """\
#!/usr/bin/env bash
# Fake squeue: reports the job as running for the first FAKE_RUNNING calls.
echo x >> "$FAKE_DIR/squeue.calls"
[ "$(wc -l < "$FAKE_DIR/squeue.calls")" -le "${FAKE_RUNNING:-0}" ] && echo "4242_1"
exit 0
"""


@pytest.fixture
def fake_slurm(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path))
    return env


def test_slurm_sh_submits_array_and_collects(tmp_path, fake_slurm):
    env = dict(fake_slurm, FAKE_RUNNING="2")
    r = run([SLURM, "--max-jobs-run", "2", "--mem", "4G", "--gpu", "1", "--time", "1:00:00",
             "--partition", "cpu", "--sbatch-opts", "--account=me --qos=low", "--poll-interval", "0.05",
             "JOB=1:3", "exp/log/feat.JOB.log", "echo", "part JOB", "data/split3/JOB"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    args = read(tmp_path / "sbatch.args").splitlines()
    script = str(tmp_path / "exp/log/q/feat.sh")
    assert args == ["--parsable", "--job-name=feat", "--array=1-3%2", f"--output={tmp_path}/exp/log/q/feat.%a.out",
                    "--cpus-per-task=1", "--mem=4G", "--gres=gpu:1", "--time=1:00:00", "--partition=cpu",
                    "--account=me", "--qos=low", script]
    assert len(read(tmp_path / "squeue.calls").splitlines()) == 3  # polled until the job left the queue
    for j in (1, 2, 3):
        assert check_log(str(tmp_path / f"exp/log/feat.{j}.log"), f"echo 'part {j}' data/split3/{j}", 0) == \
            [f"part {j} data/split3/{j}"]


def test_slurm_sh_reports_failures(tmp_path, fake_slurm):
    r = run([SLURM, "JOB=1:3", "log/f.JOB.log", "echo hello-JOB; [ JOB != 3 ]"], tmp_path, fake_slurm)
    assert r.returncode == 1
    assert "submitted Slurm array job 4242 (3 tasks)" in r.stderr
    assert "\nslurm.sh: 1 / 3 failed, log is in log/f.3.log\n" in r.stderr
    assert "hello-3" in r.stderr


def test_slurm_killed_task_counts_as_failed(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in ("PATH", "FAKE_DIR"):
        monkeypatch.setenv(k, fake_slurm[k])
    monkeypatch.setenv("FAKE_KILL", "2")  # task 2 never writes its log footer
    req = jobs.JobRequest(jobs=jobs.expand_jobs("JOB=1:3", "log/k.JOB.log", ["true"]))
    rcs = jobs.run_slurm(req, poll_s=0, nfs_wait_s=0)
    assert rcs == [0, 1, 0]
    assert jobs.failure_message([lp for lp, _ in req.jobs], rcs).startswith(
        "1 / 3 failed, log is in log/k.2.log (it has no '# Ended' line")


def test_run_jobs_slurm_gets_one_command_line(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", fake_slurm["PATH"])
    monkeypatch.setenv("FAKE_DIR", fake_slurm["FAKE_DIR"])
    jobs.run_jobs("utils/slurm.sh --poll-interval 0", 2, "log/w.JOB.log", ["echo", "a  b", "x;JOB"])
    assert check_log("log/w.2.log", "echo 'a  b' 'x;2'", 0) == ["a  b x;2"]
    with pytest.raises(FhvaeError) as e:
        jobs.run_jobs("slurm.sh --poll-interval 0", 3, "log/v.JOB.log", "echo v-JOB; [ JOB != 2 ]")
    assert str(e.value).startswith("1 / 3 failed, log is in log/v.2.log\n") and "v-2" in str(e.value)


def test_slurm_sbatch_failure(tmp_path, fake_slurm):
    (tmp_path / "fakebin" / "sbatch").write_text(
        "#!/usr/bin/env bash\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    r = run([SLURM, "JOB=1:2", "log/s.JOB.log", "true"], tmp_path, fake_slurm)
    assert r.returncode == 1 and "sbatch failed (code 1): sbatch: error: invalid partition" in r.stderr


def test_sbatch_command_threads_use_mem_per_cpu():
    req = jobs.JobRequest(jobs=[("a.1.log", "x"), ("a.2.log", "y")], num_threads=4, mem="2G")
    argv = jobs.sbatch_command(req, "/e/log/q/a.sh", "a")
    assert "--cpus-per-task=4" in argv and "--mem-per-cpu=2G" in argv and "--array=1-2" in argv


def test_slurm_script_runs_one_task(tmp_path):
    """The generated array script alone: task 2 runs job 2 only, exit code is the job's."""
    req = jobs.JobRequest(jobs=jobs.expand_jobs("JOB=1:2", "log/s.JOB.log", ["echo hi JOB; exit JOB"]))
    script = tmp_path / "s.sh"
    script.write_text(jobs.SLURM_SCRIPT.format(cwd=str(tmp_path), threads=1, cases="\n".join(
        f"  {i}) log={lp}; cmd='{c}' ;;" for i, (lp, c) in enumerate(req.jobs, 1))))
    r = subprocess.run(["bash", str(script)], env=dict(os.environ, SLURM_ARRAY_TASK_ID="2"), cwd="/")
    assert r.returncode == 2
    assert check_log(str(tmp_path / "log/s.2.log"), "echo hi 2; exit 2", 2) == ["hi 2"]
    assert not (tmp_path / "log/s.1.log").exists()
    assert subprocess.run(["bash", str(script)], env=dict(os.environ, SLURM_ARRAY_TASK_ID="7"),
                          capture_output=True).returncode == 1
