#!/usr/bin/env bash
# Kaldi run.pl equivalent: run parallel jobs on this machine.
# Usage: utils/run.sh [--max-jobs-run N] [--num-threads N] JOB=1:N exp/log/name.JOB.log command args...
#        utils/run.sh exp/log/name.log command args...
# JOB is replaced by the job index in the log path and the command. Details: utils/run.sh --help
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.run_jobs --backend local "$@"
