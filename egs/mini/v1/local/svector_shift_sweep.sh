#!/usr/bin/env bash
# Experiment helper (EXPERIMENTS.md, "Segments of an s-vector"): re-export the s-vectors of a trained
# exp dir with each --svector-shift (frames between the segments an s-vector averages) and score
# every trial list with LDA + PLDA; prints one line per shift and trial list. No retraining.
#   local/svector_shift_sweep.sh exp/fhvae "20 8 4"     (after run.sh's stage 4 or train_and_score.sh)
# Outputs: <exp>/svector_shift/<shift>/{train,test,test_1s}/svector.scp, .../sv/<set>/<list>/, logs in .../log.
set -euo pipefail
[ $# -eq 2 ] || { echo "Usage: $0 <exp-dir> \"<shift> ...\"" >&2; exit 1; }
exp=$1
shifts=$2
cd "$(dirname "$0")/.."
. ./path.sh
[ -f "$exp/config.yaml" ] || { echo "$0: $exp/config.yaml not found: train first" >&2; exit 1; }
for s in $shifts; do
  out=$exp/svector_shift/$s
  mkdir -p $out/log
  for set in train test test_1s; do
    log=$out/log/export.$set.log
    fhvae-export --exp-dir "$exp" --data-dir data/$set --out-dir $out/$set --svectors-only \
      --svector-shift "$s" > $log 2>&1 || { cat $log >&2; exit 1; }
  done
  for t in test/trials test/trials_same_cond test_1s/trials test_1s/trials_same_cond; do
    log=$out/log/score.${t/\//_}.log
    fhvae-score-sv --trials data/$t --vectors $out/${t%%/*}/svector.scp --backend plda \
      --train-vectors $out/train/svector.scp --train-utt2spk data/train/utt2spk --out-dir $out/sv/$t \
      > $log 2>&1 || { cat $log >&2; exit 1; }
    python3 -c 'import json, sys; print(f"svector_shift {sys.argv[1]:>3s}  {sys.argv[2]:28s} PLDA EER %",
      round(json.load(open(sys.argv[3]))["eer"], 2))' "$s" "$t" $out/sv/$t/results.json
  done
done
