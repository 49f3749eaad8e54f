#!/usr/bin/env bash
# The shared stages 2-7 of every recipe (stage 1, data preparation, is the recipe's own local/).
# Called from egs/<corpus>/v1/run.sh after path.sh and cmd.sh, in the recipe directory:
#
#   utils/run_stages.sh --stage 2 --stop-stage 7 --exp exp/fhvae --sets "train dev test" \
#     [--nj 4] [--train-config conf/train.yaml] [--fbank-config conf/fbank.yaml] [--train-opts ""] \
#     [--phone-classes local/phone_classes.txt] [--svectors-only-sets train] [--trials data/test/trials] \
#     [--train-nproc 1] [--jobs 1] [--asr-train-set train] [--asr-opts ""]
#
# Stages: 2 fbank (+ fix/validate data dirs), 3 stats (train), 4 training, 5 export,
# 6 speaker verification (cosine and PLDA on s-vectors and the fbank mean+std baseline),
# 7 t-SNE / recombination plots, linear probes and ABX (fbank and z1 of the test set, where it has
# phones.ctm), 8 downstream ASR (utils/asr_stage.sh: CTC on fbank and on z1; --asr-opts). Sets are named train, dev and test (plus any
# other set a trial list lives in, e.g. data/test_1s/trials).
set -euo pipefail

stage=2
stop_stage=7
nj=4
exp=exp/fhvae
sets="train dev test"
train_config=conf/train.yaml
fbank_config=conf/fbank.yaml
train_opts=""
phone_classes=""           # phone -> SON/OBS/SIL map for phone-class plots/probes; "" if the corpus has none
svectors_only_sets=""      # sets exported as s-vectors only (no frame-level z1/z2), e.g. a large train set
trials=data/test/trials    # trial lists data/<set>/<list>; scores go to <exp>/sv/<list>/<vectors>_<backend>
                           # (<exp>/sv/<set>/<list>/... for sets other than test)
tsne_segments=2000         # test segments in the t-SNE plots
asr_opts=""                # stage 8: extra fhvae-asr options, e.g. "--epochs 30"
asr_train_set=train        # stage 8: the ASR's training set (a set of --sets, exported frame-level)
train_nproc=1              # stage 4: >1 trains with that many processes (torchrun, gloo on CPU; each rank
                           # samples its own blocks, DDP averages gradients: train.batch_size is per rank)
jobs=1                     # stages 5 and 7: commands run at the same time (>1: one torch thread each)
help_message="Usage: $0 [--stage N] [--stop-stage M] [--exp DIR] [--sets 'train dev test'] [--nj N] ..."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
: "${train_cmd:=utils/run.sh}"

log_stage() { echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: stage $1: $2"; }
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
pc_opts=()
[ -n "$phone_classes" ] && pc_opts=(--phone-classes "$phone_classes")

# spawn LOG CMD...: with jobs > 1, run CMD in the background (output to LOG, one torch thread), at most
# $jobs at a time; with jobs = 1, run it here. reap: wait for all, fail naming the logs of failed ones.
pids=() logs=()
spawn() {
  local log=$1; shift
  if [ "$jobs" -le 1 ]; then "$@"; return; fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  OMP_NUM_THREADS=1 "$@" > "$log" 2>&1 &
  pids+=($!) logs+=("$log")
}
reap() {
  local i failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "$0: failed: see ${logs[$i]}:" >&2; tail -n 20 "${logs[$i]}" >&2; failed=1
    fi
  done
  pids=() logs=()
  return $failed
}

if run 2; then
  log_stage 2 "fbank features"
  for s in $sets; do
    fhvae-compute-fbank --nj "$nj" --cmd "$train_cmd" --config "$fbank_config" data/$s exp/make_fbank/$s fbank
    utils/fix_data_dir.sh data/$s    # drops utterances fbank skipped (too short), as in Kaldi
    utils/validate_data_dir.sh data/$s
  done
fi

if run 3; then
  log_stage 3 "global normalization stats"
  fhvae-compute-stats data/train
fi

if run 4; then
  log_stage 4 "training ($exp)"
  train=(fhvae-train)
  [ "$train_nproc" -gt 1 ] && train=(env OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" python3 -m torch.distributed.run
                                     --standalone --nproc_per_node "$train_nproc" "$(command -v fhvae-train)")
  # shellcheck disable=SC2086
  "${train[@]}" --config "$train_config" --train-dir data/train --dev-dir data/dev --exp-dir "$exp" $train_opts
fi

if run 5; then
  log_stage 5 "export z1, z2, s-vectors"
  mkdir -p "$exp/log"
  # frame-level sets first: they take ~20x longer, so with --jobs > 1 none of them is started last
  frame_sets=() svec_sets=()
  for s in $sets; do
    if [[ " $svectors_only_sets " == *" $s "* ]]; then svec_sets+=("$s"); else frame_sets+=("$s"); fi
  done
  for s in "${frame_sets[@]}" "${svec_sets[@]}"; do
    opts=()
    [[ " $svectors_only_sets " == *" $s "* ]] && opts=(--svectors-only)
    spawn "$exp/log/export.$s.log" \
      fhvae-export --exp-dir "$exp" --data-dir data/$s --out-dir "$exp/export/$s" "${opts[@]}"
  done
  reap
fi

if run 6; then
  log_stage 6 "speaker verification on $trials (s-vectors vs fbank mean+std baseline)"
  # A trial list data/<set>/<list> scores the vectors of <set> (exported in stage 5).
  trial_sets=$(for t in $trials; do basename "$(dirname "$t")"; done | sort -u)
  for s in train $trial_sets; do
    fhvae-extract-baseline --data-dir data/$s --out-dir "$exp/baseline/$s" --stats data/train/stats.npz
  done
  for t in $trials; do
    s=$(basename "$(dirname "$t")")
    out=$exp/sv/$(basename "$t")
    [ "$s" = test ] || out=$exp/sv/$s/$(basename "$t")
    for backend in cosine plda; do
      for vec in svector baseline; do
        if [ $vec = svector ]; then dir=$exp/export; name=svector.scp; else dir=$exp/baseline; name=vectors.scp; fi
        fhvae-score-sv --trials "$t" --vectors "$dir/$s/$name" --train-vectors "$dir/train/$name" \
          --train-utt2spk data/train/utt2spk --backend $backend --out-dir "$out/${vec}_$backend"
      done
    done
  done
fi

if run 7; then
  log_stage 7 "plots and probes"
  # t-SNE of z1/z2 by speaker, condition and phone class (paper Fig. 3), recombination (Fig. 4);
  # probes trained on train and tested on dev (where dev speakers are training speakers, the
  # speaker probe is closed-set; otherwise it is skipped).
  mkdir -p "$exp/log"
  spawn "$exp/log/plot.log" fhvae-plot --exp-dir "$exp" --data-dir data/test --export-dir "$exp/export/test" \
    "${pc_opts[@]}" --max-segments "$tsne_segments" --out-dir "$exp/plots"
  spawn "$exp/log/probe.log" \
    fhvae-probe --exp-dir "$exp" --train-dir data/train --test-dir data/dev "${pc_opts[@]}" --out-dir "$exp/probes"
  if [ -f data/test/phones.ctm ]; then
    spawn "$exp/log/abx.fbank.log" fhvae-abx --feats data/test/feats.scp --data-dir data/test --out-dir "$exp/abx/fbank"
    spawn "$exp/log/abx.z1.log" \
      fhvae-abx --feats "$exp/export/test/z1.scp" --data-dir data/test --out-dir "$exp/abx/z1"
  fi
  reap
  fhvae-report --exp-dir "$exp" --out "$exp/RESULTS.md" --command "run.sh (recipe $(basename "$(dirname "$PWD")"))"
fi

if run 8; then
  log_stage 8 "downstream ASR on fbank and z1"
  utils/asr_stage.sh --exp "$exp" --train-set "$asr_train_set" --asr-opts "$asr_opts"
  fhvae-report --exp-dir "$exp" --out "$exp/RESULTS.md" --command "run.sh (recipe $(basename "$(dirname "$PWD")"))"
fi
