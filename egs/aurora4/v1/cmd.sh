# Job backend for parallel stages (Kaldi's cmd.sh).
#   local (default): utils/run.sh runs the jobs on this machine.
#   Slurm:           export train_cmd="utils/slurm.sh --partition cpu --time 4:00:00"
export train_cmd="utils/run.sh"
