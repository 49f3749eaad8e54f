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
jobs=1                     # stages 2, 5-8: commands run at the same time (>1: one torch thread each, logs
                           # in <exp>/log; stages 6-8 share the slots and print their results at the end)
help_message="Usage: $0 [--stage N] [--stop-stage M] [--exp DIR] [--sets 'train dev test'] [--nj N] ..."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
: "${train_cmd:=utils/run.sh}"

log_stage() { echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: stage $1: $2"; }
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# stages 7 and 8 read frame-level z1 (of test, of the ASR's training set): fail now, not after training
needs_frames() {  # STAGE SET WHY
  if [[ " $sets " != *" $2 "* ]]; then
    echo "$0: stage $1 $3 $2, which is not in --sets '$sets'" >&2; exit 1
  fi
  if [[ " $svectors_only_sets " == *" $2 "* ]]; then
    echo "$0: stage $1 $3 $2, which --svectors-only-sets '$svectors_only_sets' exports as s-vectors" \
      "only (no z1.scp); drop it from that list, or pass --stop-stage $(( $1 - 1 ))" >&2; exit 1
  fi
}
if run 7; then needs_frames 7 test "plots and scores ABX on the frame-level z1 of"; fi
if run 8; then needs_frames 8 "$asr_train_set" "trains the ASR (--asr-train-set) on the frame-level z1 of"; fi
pc_opts=()
[ -n "$phone_classes" ] && pc_opts=(--phone-classes "$phone_classes")

# spawn LOG CMD...: with jobs > 1, run CMD in the background (output to LOG, one torch thread), at most
# $jobs at a time; with jobs = 1, run it here. reap: wait for all, fail naming the logs of failed ones.
pids=() logs=() score_logs=() asr_log=""
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

fbank_set() {  # stage 2 of one set
  fhvae-compute-fbank --nj "$nj" --cmd "$train_cmd" --config "$fbank_config" data/$1 exp/make_fbank/$1 fbank
  utils/fix_data_dir.sh data/$1    # drops utterances fbank skipped (too short), as in Kaldi
  utils/validate_data_dir.sh data/$1
}

if run 2; then
  log_stage 2 "fbank features"
  mkdir -p exp/make_fbank
  for s in $sets; do
    spawn exp/make_fbank/$s.log fbank_set $s
  done
  reap
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
  mkdir -p "$exp/log"
  trial_sets=$(for t in $trials; do basename "$(dirname "$t")"; done | sort -u)
  for s in train $trial_sets; do
    spawn "$exp/log/baseline.$s.log" \
      fhvae-extract-baseline --data-dir data/$s --out-dir "$exp/baseline/$s" --stats data/train/stats.npz
  done
  reap
  # with --jobs > 1 the scorings, stage 7 and stage 8 share the job slots; the EER lines are printed
  # at the end (from the logs)
  for t in $trials; do
    s=$(basename "$(dirname "$t")")
    out=$exp/sv/$(basename "$t")
    [ "$s" = test ] || out=$exp/sv/$s/$(basename "$t")
    for backend in cosine plda; do
      for vec in svector baseline; do
        if [ $vec = svector ]; then dir=$exp/export; name=svector.scp; else dir=$exp/baseline; name=vectors.scp; fi
        list=${out#"$exp/sv/"}
        log=$exp/log/score.${list//\//_}.${vec}_$backend.log
        spawn "$log" fhvae-score-sv --trials "$t" --vectors "$dir/$s/$name" --train-vectors "$dir/train/$name" \
          --train-utt2spk data/train/utt2spk --backend $backend --out-dir "$out/${vec}_$backend"
        [ "$jobs" -le 1 ] || score_logs+=("$log")
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
fi

if run 8; then
  log_stage 8 "downstream ASR on fbank and z1"
  # one job slot, two processes: utils/asr_stage.sh trains on fbank and on z1 at the same time
  spawn "$exp/log/asr.log" \
    utils/asr_stage.sh --exp "$exp" --train-set "$asr_train_set" --asr-opts "$asr_opts"
  [ "$jobs" -le 1 ] || asr_log=$exp/log/asr.log
fi

# stages 6-8 with --jobs > 1: wait for their jobs, then print what they would have printed
reap
[ ${#score_logs[@]} -eq 0 ] || tail -q -n 1 "${score_logs[@]}"
[ -z "$asr_log" ] || sed -n '/^ASR word error rate/,$p' "$asr_log"
if run 7 || run 8; then
  fhvae-report --exp-dir "$exp" --out "$exp/RESULTS.md" --command "run.sh (recipe $(basename "$(dirname "$PWD")"))"
fi
