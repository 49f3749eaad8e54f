#!/usr/bin/env bash
# Experiment helper (EXPERIMENTS.md): train exp/<tag> with extra fhvae-train overrides, export
# s-vectors only (fast) for every set, score every trial list; print the EERs of each backend.
# Run it again with a larger --train.max_epochs to continue the same run and rescore.
#   local/train_and_score.sh <tag> "<train-opts>"      (after ./run.sh --stop-stage 3)
set -euo pipefail
[ $# -eq 2 ] || { echo "Usage: $0 <tag> \"<train-opts>\"" >&2; exit 1; }
tag=$1
train_opts=$2
cd "$(dirname "$0")/.."
. ./path.sh
sets="train dev test test_1s"
utils/run_stages.sh --stage 4 --stop-stage 6 --nj 2 --exp exp/$tag --sets "$sets" \
  --train-config conf/train.yaml --fbank-config conf/fbank.yaml --train-opts "$train_opts" \
  --svectors-only-sets "$sets" \
  --trials "data/test/trials data/test/trials_same_cond data/test_1s/trials data/test_1s/trials_same_cond"
python3 - "exp/$tag" <<'PY'
import glob, json, os, sys
exp = sys.argv[1]
for f in sorted(glob.glob(f"{exp}/sv/**/results.json", recursive=True)):
    r = json.load(open(f))
    print(f"{os.path.relpath(os.path.dirname(f), exp + '/sv'):45s} EER {r.get('eer', r.get('eer_percent'))}")
PY
