# Sourced by run.sh: puts the toolkit's venv (fhvae-* commands) and utils/ on PATH.
FHVAE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export FHVAE_ROOT
if [ ! -x "$FHVAE_ROOT/tools/venv/bin/fhvae-train" ]; then
  echo "path.sh: $FHVAE_ROOT/tools/venv is missing or incomplete; run 'make env' in $FHVAE_ROOT" >&2
  exit 1
fi
export PATH="$FHVAE_ROOT/tools/venv/bin:$FHVAE_ROOT/utils:$PATH"
export LC_ALL=C
export PYTHONUNBUFFERED=1
