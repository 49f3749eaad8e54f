#!/usr/bin/env bash
# Kaldi slurm.pl equivalent: run parallel jobs as one Slurm sbatch array and wait for it.
# Usage: utils/slurm.sh [--max-jobs-run N] [--num-threads N] [--mem 4G] [--gpu N] [--time T]
#                       [--partition P] [--sbatch-opts '...'] JOB=1:N exp/log/name.JOB.log command args...
# Same interface and log format as utils/run.sh. Details: utils/slurm.sh --help
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.run_jobs --backend slurm "$@"
