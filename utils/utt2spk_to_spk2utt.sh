#!/usr/bin/env bash
# Usage: utils/utt2spk_to_spk2utt.sh < data/x/utt2spk > data/x/spk2utt   (or with the file as argument)
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir utt2spk-to-spk2utt "$@"
