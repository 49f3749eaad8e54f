#!/usr/bin/env bash
# TIMIT data preparation (stage 1 of run.sh): the corpus as distributed -> Kaldi data dirs.
#   <data-dir>/train  462 speakers (all of TRAIN, SA sentences excluded)
#   <data-dir>/dev    50 speakers of conf/dev_spk.list (from TEST), with trials
#   <data-dir>/test   24 core-test speakers of conf/test_spk.list (from TEST), with trials
# Each: wav.scp (sox pipes for the NIST SPHERE .WAV), utt2spk, spk2utt, text, spk2gender,
# phones.ctm (the 61 TIMIT phones of the .PHN files); every dir is validated.
set -euo pipefail

help_message="Usage: $0 <timit-dir> <data-dir>
  e.g. $0 /export/corpora/LDC/LDC93S1/timit/TIMIT data
  <timit-dir> holds TRAIN/ and TEST/ (upper or lower case)."
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$recipe/path.sh"
. "$recipe/utils/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi

python "$recipe/local/prepare_timit.py" \
  --dev-spk "$recipe/conf/dev_spk.list" --test-spk "$recipe/conf/test_spk.list" "$1" "$2"
