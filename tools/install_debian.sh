#!/usr/bin/env bash
# Install the Debian packages the mini corpus needs (espeak-ng, sox).
# As root: installs them with apt-get. Otherwise: says exactly what to install.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
# libespeak-ng is needed for phoneme events (alignments); it comes with espeak-ng.
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "tools/install_debian.sh: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "tools/install_debian.sh: missing ${need[*]}; please run: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
