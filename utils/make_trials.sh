#!/usr/bin/env bash
# Speaker-verification trials 'enroll test target|nontarget' (utterance vs utterance) from utt2spk.
# Without --n-target/--n-nontarget every pair is written; otherwise pairs are drawn from --seed.
# Usage: utils/make_trials.sh [--n-target N] [--n-nontarget N] [--seed S] data/test/utt2spk data/test/trials
set -euo pipefail
root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m fhvae.bin.data_dir make-trials "$@"
