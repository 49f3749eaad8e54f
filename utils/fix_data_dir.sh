#!/usr/bin/env bash
# Sort every table of a data dir, keep utterances present in all of them, regenerate spk2utt.
# Originals are saved in data/x/.backup/.
# Usage: utils/fix_data_dir.sh data/x
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir fix "$@"
