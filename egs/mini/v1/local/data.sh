#!/usr/bin/env bash
# Data preparation of the mini recipe: synthesize the espeak-ng corpus and make Kaldi data dirs.
#
# Usage: local/data.sh [--seed 1] [--num-train-spk 24] [--num-test-spk 16] [--utts-per-spk 30]
#                      [--num-dev-utts 4] [--nj N] <corpus-dir> <data-dir>
#   e.g. local/data.sh corpus data
# Writes <corpus-dir>/wav/<spk>/<utt>.wav (16 kHz 16-bit mono), <corpus-dir>/speakers.txt and
# <data-dir>/{train,dev,test}/{wav.scp,utt2spk,spk2utt,text,utt2cond,spk2gender,phones.ctm}
# plus <data-dir>/test/trials. dev = --num-dev-utts more utterances of each train speaker; test
# speakers are disjoint from train. Conditions (utt2cond): clean, noise (pink noise, SNR 15 dB),
# telephone (300-3400 Hz band-pass + 8-bit mu-law). Details: local/make_mini_corpus.py.
# Deterministic given the options (whatever --nj); a rerun with the same options finds
# <data-dir>/.mini_corpus.done (written last) and does nothing.
# Needs libespeak-ng (Debian package espeak-ng): run: make debian (or sudo apt-get install espeak-ng sox)
set -euo pipefail

seed=1
num_train_spk=24
num_test_spk=16
utts_per_spk=30
num_dev_utts=4
nj=$(nproc 2>/dev/null || echo 1)

help_message="Usage: $0 [--seed 1] [--num-train-spk 24] [--num-test-spk 16] [--utts-per-spk 30] [--num-dev-utts 4] [--nj N] <corpus-dir> <data-dir>
  e.g. $0 corpus data"
local_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$local_dir/../../../.." && pwd)
. "$root/utils/parse_options.sh"

if [ $# -ne 2 ]; then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
corpus_dir=$1
data_dir=$2

# make_mini_corpus.py checks for libespeak-ng and says how to install it.
py=$root/tools/venv/bin/python
[ -x "$py" ] || py=python3
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export LC_ALL=C

echo "$(date '+%Y-%m-%d %H:%M:%S') $0: mini corpus (seed $seed) -> $corpus_dir, $data_dir/{train,dev,test}"
"$py" "$local_dir/make_mini_corpus.py" --seed "$seed" --num-train-spk "$num_train_spk" \
  --num-test-spk "$num_test_spk" --utts-per-spk "$utts_per_spk" --num-dev-utts "$num_dev_utts" \
  --nj "$nj" "$corpus_dir" "$data_dir"

# Condition-matched trials (enroll and test recorded in the same channel condition): the channel is
# a sequence-level factor as strong as the speaker here, so scores are reported on both lists.
awk 'NR == FNR { cond[$1] = $2; next } cond[$1] == cond[$2]' \
  "$data_dir/test/utt2cond" "$data_dir/test/trials" > "$data_dir/test/trials_same_cond.tmp"
if cmp -s "$data_dir/test/trials_same_cond.tmp" "$data_dir/test/trials_same_cond"; then
  rm "$data_dir/test/trials_same_cond.tmp"    # unchanged: a skipped rerun touches nothing
else
  mv "$data_dir/test/trials_same_cond.tmp" "$data_dir/test/trials_same_cond"
fi
