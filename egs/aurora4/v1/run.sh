#!/usr/bin/env bash
# Aurora-4 recipe (Hsu & Glass 2018, Sec. 4): FHVAE with hierarchical sampling (K = 2000) on the
# multi-condition development set (4620 utterances, 7 noise types x 2 microphones).
#
# Stages (the same numbers in every recipe):
#   1 data preparation   local/data.sh -> data/{train,dev,test} (utt2cond/noise/mic, trials)
#   2 fbank              fhvae-compute-fbank -> data/<set>/feats.scp, utt2num_frames
#   3 stats              fhvae-compute-stats -> data/train/stats.npz
#   4 training           fhvae-train -> exp/<tag>/{config.yaml,checkpoints,metrics.jsonl,training_curve.png}
#   5 export             fhvae-export -> exp/<tag>/export/<set>/{z1,z2,svector,spk_svector}.scp
#   6 scoring            fhvae-score-sv (cosine, PLDA) on s-vectors and the fbank baseline
#   7 plots and probes   fhvae-plot, fhvae-probe -> exp/<tag>/plots, exp/<tag>/probes
#
# Usage: ./run.sh --corpus-dir /export/corpora/aurora4 [--stage N] [--stop-stage M]
#        (or put corpus_dir=/path/to/aurora4 in db.sh next to this script)
set -euo pipefail

stage=1
stop_stage=7
nj=4
tag=fhvae
corpus_dir=""        # the Aurora-4 16 kHz directory holding lists/; relative: from the caller's cwd
dev_percent=10       # share of the development set held out for the FHVAE dev bound
trial_utts_per_spk=20
train_config=conf/train.yaml
fbank_config=conf/fbank.yaml
train_opts=""        # extra fhvae-train overrides, e.g. "--train.device cpu"
sets="train dev test"

help_message="Usage: $0 --corpus-dir /path/to/Aurora-4 [--stage N] [--stop-stage M] [--nj N] [--tag NAME]
       [--train-opts '--train.device cpu'] [--sets 'train dev test']
       [--dev-percent 10] [--trial-utts-per-spk 20]"
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
  log_stage 1 "data preparation (Aurora-4 at ${corpus_dir:-<unset>})"
  if [ -z "$corpus_dir" ]; then
    echo "$0: no corpus: pass --corpus-dir /path/to/Aurora-4 or set corpus_dir in $(pwd)/db.sh" >&2; exit 1
  fi
  local/data.sh --dev-percent "$dev_percent" --trial-utts-per-spk "$trial_utts_per_spk" "$corpus_dir" data
fi

# stages 2-7 are shared by every recipe (utils/run_stages.sh); the train set is exported as
# s-vectors only (it feeds the speaker-verification backends).
utils/run_stages.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --exp "$exp" --sets "$sets" \
  --train-config "$train_config" --fbank-config "$fbank_config" --train-opts "$train_opts" \
  --svectors-only-sets train

log_stage done "results: $exp/sv/*/results.json, $exp/plots, $exp/probes"
