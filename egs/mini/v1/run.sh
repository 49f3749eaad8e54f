#!/usr/bin/env bash
# Mini recipe: a self-contained espeak-ng corpus, end to end on a laptop (no download).
#
# Stages (the same numbers in every recipe; 2-7 are utils/run_stages.sh):
#   1 data preparation   local/data.sh -> data/{train,dev,test}, data/test/trials{,_same_cond};
#                        data/test_1s: the central 1 s of each test utterance, same trials;
#                        data/train_clean: the clean train utterances (what stage 8 trains on)
#   2 fbank              fhvae-compute-fbank -> data/<set>/feats.scp, utt2num_frames
#   3 stats              fhvae-compute-stats -> data/train/stats.npz
#   4 training           fhvae-train -> exp/<tag>/{config.yaml,checkpoints,metrics.jsonl,training_curve.png}
#   5 export             fhvae-export -> exp/<tag>/export/<set>/{z1,z2,svector,spk_svector}.scp; train,
#                        dev and test_1s as s-vectors only (frame-level z1 of test and train_clean)
#   6 scoring            fhvae-score-sv (cosine, PLDA) on s-vectors and the fbank baseline, both trial lists,
#                        on whole test utterances and on their 1 s crops
#   7 plots, probes, ABX fhvae-plot, fhvae-probe, fhvae-abx, fhvae-report
#                        -> exp/<tag>/{plots,probes,abx/{fbank,z1},RESULTS.md}
#   8 downstream ASR     utils/asr_stage.sh: CTC (BPE units) on fbank and on z1, trained on
#                        data/train_clean, WER per test condition -> exp/<tag>/asr/{fbank,z1}
# Seed systems (vq z1, time jitter, autoregressive decoder, Z-forcing) against this FHVAE:
# local/seed_systems.sh (exp/seed_systems.md).
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 4] [--tag fhvae] [--train-opts '--train.lr 1e-3']
#                 [--train-nproc 2] [--jobs 2]
set -euo pipefail

stage=1
stop_stage=8
nj=4
seed=1
tag=fhvae
corpus_dir=corpus
num_train_spk=24
num_test_spk=16
utts_per_spk=30
num_dev_utts=4
train_config=conf/train.yaml
fbank_config=conf/fbank.yaml
train_opts=""        # extra fhvae-train overrides, e.g. "--train.max_epochs 2"
asr_opts=""          # extra fhvae-asr options (stage 8), e.g. "--epochs 30"
train_nproc=1        # training processes (>1: torchrun, one torch thread each; conf/train.yaml's
                     # batch_size is per process. 2 x 64 on 2 cores: 1.07x per step, no gain in training, BENCHMARKS 3c)
jobs=2               # stages 2, 5-8: commands at the same time, one thread each (utils/run_stages.sh)
tsne_segments=2000
sets="train train_clean dev test test_1s"
svectors_only_sets="train dev test_1s"  # nothing reads their frame-level z1/z2 (a third of the export time)
short_test_dur=1.0  # seconds kept of each test utterance in data/test_1s

help_message="Usage: $0 [--stage N] [--stop-stage M] [--nj N] [--tag NAME] [--train-opts '--train.lr 1e-3']
       [--num-train-spk 24] [--num-test-spk 16] [--utts-per-spk 30] [--num-dev-utts 4] [--seed 1]
       [--short-test-dur 1.0] [--train-nproc 2] [--jobs 2]"
start_s=$SECONDS
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

exp=exp/$tag

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: stage 1: data preparation (espeak-ng mini corpus)"
  local/data.sh --seed "$seed" --nj "$nj" --num-train-spk "$num_train_spk" --num-test-spk "$num_test_spk" \
    --utts-per-spk "$utts_per_spk" --num-dev-utts "$num_dev_utts" "$corpus_dir" data
  # short-duration condition: the same trials on the central second of each test utterance
  fhvae-data-dir crop --duration "$short_test_dur" data/test data/test_1s
  cp data/test/trials data/test/trials_same_cond data/test_1s/
  # the training set of the downstream ASR (stage 8): fhvae-asr trains on clean utterances
  fhvae-data-dir subset --utt-list <(awk '$2 == "clean" { print $1 }' data/train/utt2cond) data/train data/train_clean
  for s in $sets; do utils/validate_data_dir.sh --no-feats data/$s; done
fi

utils/run_stages.sh --stage "$stage" --stop-stage "$stop_stage" --nj "$nj" --exp "$exp" --sets "$sets" \
  --train-config "$train_config" --fbank-config "$fbank_config" --train-opts "$train_opts" \
  --phone-classes local/phone_classes.txt --tsne-segments "$tsne_segments" \
  --svectors-only-sets "$svectors_only_sets" --asr-train-set train_clean --asr-opts "$asr_opts" --train-nproc "$train_nproc" --jobs "$jobs" \
  --trials "data/test/trials data/test/trials_same_cond data/test_1s/trials data/test_1s/trials_same_cond"

elapsed=$((SECONDS - start_s))
echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: done (stages $stage-$stop_stage in $((elapsed / 60)) min $((elapsed % 60)) s):" \
  "$exp/RESULTS.md, $exp/sv/{,test_1s/}*/*/results.json, $exp/plots, $exp/probes"
