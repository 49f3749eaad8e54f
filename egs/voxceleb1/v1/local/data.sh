#!/usr/bin/env bash
# VoxCeleb1 data preparation (stage 1 of run.sh): the corpus as distributed -> Kaldi data dirs
#   <data-dir>/train  VoxCeleb1 dev speakers (1211), minus the held-out utterances
#   <data-dir>/dev    --dev-percent of their utterances (seeded random): the FHVAE dev bound
#   <data-dir>/test   the 40 test speakers; trials = the official cleaned list veri_test2.txt
# Each: wav.scp, utt2spk, spk2utt, spk2gender (vox1_meta.csv); every dir is validated.
set -euo pipefail

meta=""          # vox1_meta.csv (default <voxceleb1-dir>/vox1_meta.csv)
trials=""        # veri_test2.txt (default <voxceleb1-dir>/veri_test2.txt)
dev_percent=2
seed=1

help_message="Usage: $0 [--meta FILE] [--trials FILE] [--dev-percent 2] [--seed 1] <voxceleb1-dir> <data-dir>
  e.g. $0 /export/corpora/VoxCeleb1 data
  <voxceleb1-dir> holds wav/<id>/<video>/<nnnnn>.wav (or dev/wav and test/wav), vox1_meta.csv, veri_test2.txt"
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$recipe/path.sh"
. "$recipe/utils/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi

opts=(--dev-percent "$dev_percent" --seed "$seed")
if [ -n "$meta" ]; then opts+=(--meta "$meta"); fi
if [ -n "$trials" ]; then opts+=(--trials "$trials"); fi
python "$recipe/local/prepare_voxceleb1.py" "${opts[@]}" "$1" "$2"
