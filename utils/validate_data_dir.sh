#!/usr/bin/env bash
# Check a Kaldi data dir (sorting, unique keys, speaker prefixes, spk2utt, matching tables, files).
# Usage: utils/validate_data_dir.sh [--no-feats|--need-feats] [--no-wav] [--no-check-files] data/x
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir validate "$@"
