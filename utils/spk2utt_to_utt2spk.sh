#!/usr/bin/env bash
# Usage: utils/spk2utt_to_utt2spk.sh < data/x/spk2utt > data/x/utt2spk   (or with the file as argument)
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir spk2utt-to-utt2spk "$@"
