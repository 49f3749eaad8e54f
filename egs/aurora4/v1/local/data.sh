#!/usr/bin/env bash
# Aurora-4 data preparation (stage 1 of run.sh): the 16 kHz corpus as distributed -> Kaldi data dirs
#   <data-dir>/train  90 % of the multi-condition development set (devtest01..14_0330_16k lists)
#   <data-dir>/dev    the other --dev-percent (seeded random): the FHVAE dev bound
#   <data-dir>/test   eval92 in all 14 conditions (test01..14_0330_16k lists), with trials
# Each: wav.scp (sox pipes for the headerless .wv1/.wv2 PCM), utt2spk, spk2utt, utt2cond
# (<noise>-<mic>), utt2noise, utt2mic; every dir is validated.
set -euo pipefail

dev_percent=10
trial_utts_per_spk=20   # trials: every pair among this many utterances per speaker
seed=1

help_message="Usage: $0 [--dev-percent 10] [--trial-utts-per-spk 20] [--seed 1] <aurora4-dir> <data-dir>
  e.g. $0 /export/corpora/aurora4 data     (<aurora4-dir> holds lists/ and the audio)"
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$recipe/path.sh"
. "$recipe/utils/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi

python "$recipe/local/prepare_aurora4.py" --dev-percent "$dev_percent" \
  --trial-utts-per-spk "$trial_utts_per_spk" --seed "$seed" "$1" "$2"
