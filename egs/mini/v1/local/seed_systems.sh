#!/usr/bin/env bash
# Seed systems on the mini corpus: the FHVAE against the related systems its users compare it with,
# all trained the same number of steps with the same config (conf/train.yaml with --base-opts) and
# evaluated alike. --base-opts defaults to the settings the README / RESULTS.md table was measured
# with (alpha 10, constant lr 3e-3: conf/train.yaml before the 15-minute demo config).
#
#   gauss      the FHVAE (Gaussian z1)
#   jitter     gauss + time jitter on z1 (p = 0.12, neighbours 8 frames away)
#   jitter_s2  the same with neighbours 2 frames away
#   vq         vq z1 with both robust-training tricks (codebook lr 10x, k-means re-init)
#   vq_plain   vq z1 without them
#   ar         autoregressive decoder output
#   ar_zf      ar + Z-forcing auxiliary cost
#
# For each: stages 4-5 (train, export), ABX on test z1 (fhvae-abx), linear probes (fhvae-probe);
# once: ABX on fbank; ASR (fhvae-asr, trained on clean train, tested per condition) on fbank and on
# the z1 of --asr-systems. local/seed_table.py then writes exp/seed_systems.md from the results.
# Needs stages 1-3 of run.sh (data, fbank, stats).
#
# Usage: local/seed_systems.sh [--systems "gauss vq ..."] [--steps 2000] [--asr-systems "gauss vq"]
#   e.g. two at a time on a 2-core machine (one thread each):
#        local/seed_systems.sh --systems "gauss vq vq_plain" & local/seed_systems.sh --systems "jitter ar ar_zf"
#        local/seed_systems.sh --systems "" --asr-systems "gauss vq"     # ASR + the table once all are trained
set -euo pipefail

systems="gauss jitter jitter_s2 vq vq_plain ar ar_zf"
asr_systems=""
steps=2000
threads=1
train_config=conf/train.yaml
asr_opts=""
base_opts="--train.alpha 10 --train.lr 0.003 --train.lr_warmup_steps 0 --train.lr_decay_steps 0"
help_message="Usage: $0 [--systems 'gauss vq ...'] [--steps 2000] [--asr-systems 'gauss vq'] [--threads 1]
       [--base-opts '$base_opts']"
cd "$(dirname "$0")/.."
. ./path.sh
. utils/parse_options.sh

opts_of() {
  case $1 in
    gauss) echo "" ;;
    jitter) echo "--train.z1_jitter 0.12" ;;
    jitter_s2) echo "--train.z1_jitter 0.12 --train.z1_jitter_shift 2" ;;
    vq) echo "--model.z1_bottleneck vq" ;;
    vq_plain) echo "--model.z1_bottleneck vq --train.vq_lr_mult 1 --train.vq_reinit_epochs 0" ;;
    ar) echo "--model.decoder ar" ;;
    ar_zf) echo "--model.decoder ar --model.zforcing true" ;;
    *) echo "$0: unknown system '$1'" >&2; return 1 ;;
  esac
}

epoch_steps=$(python3 -c "import yaml; print(yaml.safe_load(open('$train_config'))['train']['epoch_steps'])")
epochs=$(( (steps + epoch_steps - 1) / epoch_steps ))
for s in $systems; do
  o=$(opts_of "$s")
  echo "$(date '+%Y-%m-%d %H:%M:%S') $0: system $s ($o), $epochs epochs of $epoch_steps steps"
  ./run.sh --stage 4 --stop-stage 5 --tag "$s" --train-config "$train_config" \
    --train-opts "$base_opts $o --train.max_epochs $epochs --train.num_threads $threads"
  fhvae-abx --feats exp/$s/export/test/z1.scp --data-dir data/test --out-dir exp/$s/abx/z1
  fhvae-probe --exp-dir exp/$s --train-dir data/train --test-dir data/dev \
    --phone-classes local/phone_classes.txt --out-dir exp/$s/probes
done

if [ -n "$asr_systems" ]; then
  [ -f exp/fbank/abx/results.json ] || \
    fhvae-abx --feats data/test/feats.scp --data-dir data/test --out-dir exp/fbank/abx
  # shellcheck disable=SC2086
  [ -f exp/fbank/asr/results.json ] || fhvae-asr --train-feats data/train_clean/feats.scp --train-dir data/train_clean \
    --test-feats data/test/feats.scp --test-dir data/test --out-dir exp/fbank/asr $asr_opts
  for s in $asr_systems; do
    # shellcheck disable=SC2086
    [ -f exp/$s/asr/z1/results.json ] || fhvae-asr --train-feats exp/$s/export/train_clean/z1.scp --train-dir data/train_clean \
      --test-feats exp/$s/export/test/z1.scp --test-dir data/test --out-dir exp/$s/asr/z1 $asr_opts
  done
  python3 local/seed_table.py --exp exp --systems "gauss jitter jitter_s2 vq vq_plain ar ar_zf" --out exp/seed_systems.md
fi
