"""fhvae-train: train an FHVAE with hierarchical (default) or flat sampling."""
import argparse
import json
import logging
import os

from fhvae.bin import run_cli
from fhvae.errors import FhvaeError

EPILOG = """examples:
  fhvae-train --config conf/train.yaml --train-dir data/train --dev-dir data/dev --exp-dir exp/fhvae
  fhvae-train ... --train.seq_batch_size 5000 --train.lr 5e-4 --model.z1_dim 16
  fhvae-train ... --train.sampling flat            # the original 2017 algorithm (baseline)
  torchrun --nproc_per_node 2 $(which fhvae-train) ...   # distributed (gloo on CPU, NCCL on GPU)

Any config value can be overridden with --section.key value (sections: data, model, train).
The resolved config is written to <exp-dir>/config.yaml, the log to <exp-dir>/log/train.log.
Re-running the same command after a crash (even SIGKILL) resumes from the last checkpoint; a
finished run is not redone (--overwrite trains again from scratch)."""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-train", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (sections data, model, train); defaults if omitted")
    p.add_argument("--train-dir", required=True, help="Kaldi data dir with feats.scp, utt2num_frames")
    p.add_argument("--dev-dir", required=True, help="data dir for the dev lower bound")
    p.add_argument("--exp-dir", required=True, help="output: checkpoints, config.yaml, metrics.jsonl, PNG")
    p.add_argument("--stats", help="normalization stats (default <train-dir>/stats.npz)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the exp dir's checkpoints, metrics, done marker and config first: train "
                        "again from scratch")
    args, extra = p.parse_known_args(argv)

    from fhvae import config
    from fhvae.train import distributed
    from fhvae.train.expdir import prepare_exp_dir
    from fhvae.train.trainer import Trainer

    cfg = config.load_config(args.config, config.parse_overrides(extra))
    distributed.check_device(cfg.train.device)   # before anything is written
    stats = args.stats or f"{args.train_dir}/stats.npz"
    if distributed.rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    handler = _log_file(args.exp_dir) if distributed.rank() == 0 else None
    try:
        prepare_exp_dir(cfg, args.exp_dir, args.train_dir, args.dev_dir, stats, overwrite=args.overwrite)
        summary = Trainer(cfg, args.train_dir, args.dev_dir, args.exp_dir, stats).run()
    except FhvaeError as e:   # stderr gets it from run_cli; the log file says why training stopped too
        if handler is not None:
            handler.handle(logging.makeLogRecord({"levelno": logging.ERROR, "levelname": "ERROR",
                                                  "msg": str(e)}))
        raise
    finally:
        distributed.cleanup()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if distributed.rank() == 0:
        print(json.dumps(summary))
    return 0


def _log_file(exp_dir):
    """Append the log (the lines stderr gets) to <exp_dir>/log/train.log too."""
    os.makedirs(os.path.join(exp_dir, "log"), exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(os.path.join(exp_dir, "log", "train.log"), mode="a")
    handler.setFormatter(next((h.formatter for h in root.handlers if h.formatter), None))
    root.addHandler(handler)
    return handler


def main(argv=None):
    run_cli("fhvae-train", _main, argv)


if __name__ == "__main__":
    main()
