#!/usr/bin/env bash
# Split a data dir by speaker into data/x/splitN/{1..N} (N clamped to the number of speakers).
# Prints the effective N.
# Usage: utils/split_data.sh data/x N
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir split "$@"
