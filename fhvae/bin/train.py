"""fhvae-train: train an FHVAE with hierarchical (default) or flat sampling."""
import argparse
import json
import logging

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-train --config conf/train.yaml --train-dir data/train --dev-dir data/dev --exp-dir exp/fhvae
  fhvae-train ... --train.seq_batch_size 5000 --train.lr 5e-4 --model.z1_dim 16
  fhvae-train ... --train.sampling flat            # the original 2017 algorithm (baseline)
  torchrun --nproc_per_node 2 $(which fhvae-train) ...   # distributed (gloo on CPU, NCCL on GPU)

Any config value can be overridden with --section.key value (sections: data, model, train).
The resolved config is written to <exp-dir>/config.yaml. Re-running the same command after a
crash (even SIGKILL) resumes from the last checkpoint; a finished run is not redone."""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-train", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (sections data, model, train); defaults if omitted")
    p.add_argument("--train-dir", required=True, help="Kaldi data dir with feats.scp, utt2num_frames")
    p.add_argument("--dev-dir", required=True, help="data dir for the dev lower bound")
    p.add_argument("--exp-dir", required=True, help="output: checkpoints, config.yaml, metrics.jsonl, PNG")
    p.add_argument("--stats", help="normalization stats (default <train-dir>/stats.npz)")
    args, extra = p.parse_known_args(argv)

    from fhvae import config
    from fhvae.train import distributed
    from fhvae.train.expdir import prepare_exp_dir
    from fhvae.train.trainer import Trainer

    cfg = config.load_config(args.config, config.parse_overrides(extra))
    stats = args.stats or f"{args.train_dir}/stats.npz"
    prepare_exp_dir(cfg, args.exp_dir, args.train_dir, args.dev_dir, stats)
    if distributed.rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        summary = Trainer(cfg, args.train_dir, args.dev_dir, args.exp_dir, stats).run()
    finally:
        distributed.cleanup()
    if distributed.rank() == 0:
        print(json.dumps(summary))
    return 0


def main(argv=None):
    run_cli("fhvae-train", _main, argv)


if __name__ == "__main__":
    main()
