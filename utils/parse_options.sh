# Kaldi-style option parsing; source it after declaring the defaults:
#
#   stage=0
#   use_gpu=false
#   help_message="Usage: $0 [options] <data-dir>"
#   . utils/parse_options.sh
#
# --foo-bar VALUE (or --foo-bar=VALUE) sets the variable foo_bar, which must have been declared
# before sourcing: an undeclared option is an error. If the current value is true or false, the
# new one must be true or false too. --config FILE sources FILE first (command-line options win
# over it). --help / -h prints $help_message and exits 0. Parsing stops at the first argument
# that is not an option (or after "--"); the remaining arguments are left in "$@".
# Safe under `set -euo pipefail`; its own variables start with _po_.

# Source the --config files first, in order, so that command-line options override them.
_po_args=("$@")
_po_i=0
while [ "$_po_i" -lt "${#_po_args[@]}" ]; do
  _po_arg=${_po_args[$_po_i]}
  case "$_po_arg" in
    --config=*|--config)
      if [ "$_po_arg" = --config ]; then
        if [ $((_po_i + 1)) -ge "${#_po_args[@]}" ]; then
          echo "$0: option --config needs a value" >&2; exit 1
        fi
        _po_file=${_po_args[$((_po_i + 1))]}
        _po_i=$((_po_i + 2))
      else
        _po_file=${_po_arg#--config=}
        _po_i=$((_po_i + 1))
      fi
      if [ ! -r "$_po_file" ]; then
        echo "$0: cannot read config file '$_po_file'" >&2; exit 1
      fi
      . "$_po_file"
      ;;
    --help|-h|--) break ;;
    --*=*) _po_i=$((_po_i + 1)) ;;
    --*) _po_i=$((_po_i + 2)) ;;
    *) break ;;
  esac
done

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      if [ -n "${help_message:-}" ]; then printf '%s\n' "$help_message"; else echo "$0: no help available"; fi
      exit 0 ;;
    --) shift; break ;;
    --config=*) shift; continue ;;
    --config) shift 2; continue ;;
    --*=*) _po_opt=${1%%=*}; _po_val=${1#*=}; shift ;;
    --*)
      _po_opt=$1
      if [ $# -lt 2 ]; then echo "$0: option $_po_opt needs a value" >&2; exit 1; fi
      _po_val=$2; shift 2 ;;
    *) break ;;
  esac
  _po_name=${_po_opt#--}
  _po_name=${_po_name//-/_}
  if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
    echo "$0: invalid option $_po_opt (no variable '$_po_name' is declared; see $0 --help)" >&2; exit 1
  fi
  if [ "${!_po_name}" = true ] || [ "${!_po_name}" = false ]; then
    if [ "$_po_val" != true ] && [ "$_po_val" != false ]; then
      echo "$0: option $_po_opt expects true or false, got '$_po_val'" >&2; exit 1
    fi
  fi
  printf -v "$_po_name" '%s' "$_po_val"
done
unset _po_args _po_i _po_arg _po_file _po_opt _po_val _po_name
true
