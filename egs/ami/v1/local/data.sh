#!/usr/bin/env bash
# AMI data preparation (stage 1 of run.sh): the corpus as distributed -> Kaldi data dirs with
# IHM (close-talk headset) and SDM (array 1, mic 1) copies of every manual segment, mixed:
#   <data-dir>/train  every annotated meeting not in the dev/test lists
#   <data-dir>/dev    conf/dev_meetings.list (Kaldi's split_dev), with trials
#   <data-dir>/test   conf/test_meetings.list (Kaldi's split_eval), with trials
# Each: wav.scp (recordings) + segments, utt2spk, spk2utt, text, utt2mic and utt2cond (ihm|sdm),
# spk2gender; every dir is validated.
set -euo pipefail

annotations=""          # ami_public_manual dir (default <ami-dir>/annotations)
mics="ihm sdm"
min_dur=0.1             # seconds; shorter manual segments are left out
trial_segs_per_spk=20   # trials: every pair among this many segments per speaker
seed=1

help_message="Usage: $0 [--annotations DIR] [--mics 'ihm sdm'] [--min-dur 0.1] [--trial-segs-per-spk 20]
          [--seed 1] <ami-dir> <data-dir>
  e.g. $0 /export/corpora/amicorpus data
  <ami-dir> holds <meeting>/audio/*.wav (or amicorpus/<meeting>/audio) and annotations/ (ami_public_manual)"
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$recipe/path.sh"
. "$recipe/utils/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi

opts=(--mics "$mics" --min-dur "$min_dur" --trial-segs-per-spk "$trial_segs_per_spk" --seed "$seed"
      --dev-meetings "$recipe/conf/dev_meetings.list" --test-meetings "$recipe/conf/test_meetings.list")
if [ -n "$annotations" ]; then opts+=(--annotations "$annotations"); fi
python "$recipe/local/prepare_ami.py" "${opts[@]}" "$1" "$2"
