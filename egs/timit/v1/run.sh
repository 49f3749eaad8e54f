#!/usr/bin/env bash
# TIMIT recipe (Hsu & Glass 2018, Sec. 4): FHVAE with hierarchical sampling (K = 2000) on the
# 3696 SI/SX training utterances; speaker verification on the 24 core-test speakers.
#
# Stages (the same numbers in every recipe):
#   1 data preparation   local/data.sh -> data/{train,dev,test} (Kaldi's split, phones.ctm, trials)
#   2 fbank              fhvae-compute-fbank -> data/<set>/feats.scp, utt2num_frames
#   3 stats              fhvae-compute-stats -> data/train/stats.npz
#   4 training           fhvae-train -> exp/<tag>/{config.yaml,checkpoints,metrics.jsonl,training_curve.png}
#   5 export             fhvae-export -> exp/<tag>/export/<set>/{z1,z2,svector,spk_svector}.scp
#   6 scoring            fhvae-score-sv (cosine, PLDA) on s-vectors and the fbank baseline
#   7 plots and probes   fhvae-plot, fhvae-probe -> exp/<tag>/plots, exp/<tag>/probes
#
# Usage: ./run.sh --corpus-dir /export/corpora/LDC/LDC93S1/timit/TIMIT [--stage N] [--stop-stage M]
#        (or put corpus_dir=/path/to/TIMIT in db.sh next to this script)
set -euo pipefail

stage=1
stop_stage=7
nj=4
tag=fhvae
corpus_dir=""        # the TIMIT directory holding TRAIN/ and TEST/; relative: from the caller's cwd
train_config=conf/train.yaml
fbank_config=conf/fbank.yaml
train_opts=""        # extra fhvae-train overrides, e.g. "--train.device cpu"
sets="train dev test"

help_message="Usage: $0 --corpus-dir /path/to/TIMIT [--stage N] [--stop-stage M] [--nj N] [--tag NAME]
       [--train-opts '--train.device cpu'] [--sets 'train dev test']"
caller_dir=$PWD
cd "$(dirname "$0")"
if [ -f ./db.sh ]; then . ./db.sh; fi
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
case "$corpus_dir" in /*|"") ;; *) corpus_dir=$caller_dir/$corpus_dir ;; esac

exp=exp/$tag
log_stage() { echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: stage $1: $2"; }

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log_stage 1 "data preparation (TIMIT at ${corpus_dir:-<unset>})"
  if [ -z "$corpus_dir" ]; then
    echo "$0: no corpus: pass --corpus-dir /path/to/TIMIT or set corpus_dir in $(pwd)/db.sh" >&2; exit 1
  fi
  local/data.sh "$corpus_dir" data
fi

# stages 2-7 are shared by every recipe (utils/run_stages.sh); the train set is exported as
# s-vectors only (it feeds the speaker-verification backends).
utils/run_stages.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --exp "$exp" --sets "$sets" \
  --train-config "$train_config" --fbank-config "$fbank_config" --train-opts "$train_opts" \
  --svectors-only-sets train \
  --phone-classes local/phone_classes.txt

log_stage done "results: $exp/sv/*/results.json, $exp/plots, $exp/probes"
