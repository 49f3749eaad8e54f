#!/usr/bin/env bash
# Copy the utterances (or speakers) listed in a file to a new data dir.
# Usage: utils/subset_data_dir.sh --utt-list uttlist | --spk-list spklist src-data dest-data
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir subset "$@"
