#!/usr/bin/env bash
# LibriSpeech data preparation (stage 1 of run.sh): the corpus as distributed -> Kaldi data dirs
#   <data-dir>/train  the --subsets (default train-clean-100; all 960 h:
#                     "train-clean-100 train-clean-360 train-other-500")
#   <data-dir>/dev    --dev-subsets (default dev-clean), with trials
#   <data-dir>/test   --test-subsets (default test-clean), with trials
# Each: wav.scp (sox pipes decoding the FLAC), utt2spk (speaker = reader), spk2utt, text,
# spk2gender (SPEAKERS.TXT); every dir is validated.
set -euo pipefail

subsets="train-clean-100"
dev_subsets="dev-clean"
test_subsets="test-clean"
trial_utts_per_spk=20   # trials: every pair among this many utterances per speaker
seed=1

help_message="Usage: $0 [--subsets 'train-clean-100'] [--dev-subsets dev-clean] [--test-subsets test-clean]
          [--trial-utts-per-spk 20] [--seed 1] <librispeech-dir> <data-dir>
  e.g. $0 --subsets 'train-clean-100 train-clean-360 train-other-500' /export/corpora/LibriSpeech data"
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$recipe/path.sh"
. "$recipe/utils/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi

python "$recipe/local/prepare_librispeech.py" --subsets "$subsets" --dev-subsets "$dev_subsets" \
  --test-subsets "$test_subsets" --trial-utts-per-spk "$trial_utts_per_spk" --seed "$seed" "$1" "$2"
