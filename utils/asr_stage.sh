#!/usr/bin/env bash
# Stage 8 of the recipes: downstream ASR (BPE + CTC, fhvae-asr) on fbank and on the exported z1,
# trained on the clean training utterances, WER per channel condition of the test set.
# Run in the recipe directory after stage 5 (export):
#
#   utils/asr_stage.sh --exp exp/fhvae [--train-set train] [--test-set test] [--asr-opts "--epochs 20"]
#
# Writes <exp>/asr/{fbank,z1}/{hyp.txt,results.json,results.md,...} and <exp>/asr/results.md (both
# rows in one table, also printed). Started again, each fhvae-asr run resumes from its checkpoint.
set -euo pipefail

exp=exp/fhvae
train_set=train
test_set=test
asr_opts=""
help_message="Usage: $0 --exp DIR [--train-set train] [--test-set test] [--asr-opts '--vocab-size 100']"
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
if [ $# -ne 0 ]; then
  printf '%s\n' "$help_message" >&2
  exit 1
fi

if command -v fhvae-asr > /dev/null; then
  asr=(fhvae-asr)
else  # not on PATH (path.sh not sourced): the toolkit's venv
  root=$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
  asr=("$root/tools/venv/bin/python" -m fhvae.bin.asr)
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi

for f in data/$train_set/feats.scp data/$test_set/feats.scp \
         "$exp/export/$train_set/z1.scp" "$exp/export/$test_set/z1.scp"; do
  if [ ! -f "$f" ]; then
    echo "$0: $f not found (fbank: stage 2; z1: stage 5, fhvae-export)" >&2
    exit 1
  fi
done

# The two trainings run at the same time (one CPU thread each: the small model gains little from
# more); each one's log is <exp>/asr/<feat>/log.
feats=(fbank z1) pids=()
for feat in "${feats[@]}"; do
  if [ $feat = fbank ]; then
    train_feats=data/$train_set/feats.scp test_feats=data/$test_set/feats.scp
  else
    train_feats=$exp/export/$train_set/z1.scp test_feats=$exp/export/$test_set/z1.scp
  fi
  echo "$(date '+%Y-%m-%d %H:%M:%S') $0: ASR on $feat -> $exp/asr/$feat (log: $exp/asr/$feat/log)"
  mkdir -p "$exp/asr/$feat"
  # shellcheck disable=SC2086
  "${asr[@]}" --train-feats "$train_feats" --train-dir "data/$train_set" --test-feats "$test_feats" \
    --test-dir "data/$test_set" --out-dir "$exp/asr/$feat" --name "$feat" $asr_opts \
    > "$exp/asr/$feat/log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!feats[@]}"; do
  feat=${feats[$i]}
  if ! wait "${pids[$i]}"; then
    echo "$0: ASR on $feat failed; the end of $exp/asr/$feat/log:" >&2
    tail -n 20 "$exp/asr/$feat/log" >&2
    failed=1
  fi
done
[ $failed = 0 ] || exit 1

# One table: the header of the first results.md, then the row of each.
{
  head -n 2 "$exp/asr/fbank/results.md"
  for feat in fbank z1; do tail -n 1 "$exp/asr/$feat/results.md"; done
} > "$exp/asr/results.md.tmp"
mv "$exp/asr/results.md.tmp" "$exp/asr/results.md"
echo "ASR word error rate (%) on data/$test_set, trained on the clean utterances of data/$train_set:"
cat "$exp/asr/results.md"
