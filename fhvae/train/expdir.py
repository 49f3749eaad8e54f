"""The exp dir of fhvae-train: its resolved config (written, or checked on resume) and metrics.jsonl."""
import contextlib
import json
import logging
import os
import shutil

from fhvae import config as config_mod
from fhvae.errors import ConfigError
from fhvae.io.atomic import atomic_write_text
from fhvae.train import checkpoint as ckpt
from fhvae.train import distributed

log = logging.getLogger(__name__)

# Keys that only say when to stop: changing them on an exp dir with checkpoints continues training.
STOPPING_KEYS = ("train.max_epochs", "train.patience")


def prepare_exp_dir(cfg, exp_dir, train_dir, dev_dir, stats_path, overwrite=False):
    """Write (or check) the resolved config in exp_dir. A different config in an exp dir that already
    has checkpoints is a ConfigError naming the keys that differ and their values, except for the
    stopping rule (STOPPING_KEYS): a new max_epochs / patience continues from the last checkpoint (a
    finished run's ``done`` marker is removed). ``overwrite``: clear_exp_dir first (rank 0; the other
    ranks skip the check, as the old run is being removed)."""
    os.makedirs(exp_dir, exist_ok=True)
    if overwrite:
        clear_exp_dir(exp_dir)
    extra = {"train_dir": os.path.abspath(train_dir), "dev_dir": os.path.abspath(dev_dir),
             "stats": os.path.abspath(stats_path)}
    path = os.path.join(exp_dir, "config.yaml")
    if not overwrite and os.path.isfile(path) and \
            ckpt.last_step_dir(os.path.join(exp_dir, "checkpoints")) is not None:
        old, old_extra = config_mod.read_exp_config(exp_dir)
        diffs = _diff(old.to_dict(), cfg.to_dict()) + [(k, old_extra.get(k), v) for k, v in extra.items()
                                                       if old_extra.get(k) != v]
        other = [d for d in diffs if d[0] not in STOPPING_KEYS]
        if other:
            raise ConfigError(f"{exp_dir} was trained with another config; differs in: {_changes(other)}; use "
                              f"--overwrite to train again from scratch, or a new --exp-dir")
        if diffs:
            log.info("%s: stopping rule changed (%s): training continues from the last checkpoint", exp_dir,
                     _changes(diffs))
            if distributed.rank() == 0 and os.path.isfile(os.path.join(exp_dir, "done")):
                os.unlink(os.path.join(exp_dir, "done"))
    if distributed.rank() == 0:
        config_mod.save_config(cfg, path, extra)


def clear_exp_dir(exp_dir):
    """Remove what training wrote in exp_dir (checkpoints, metrics, curve, done marker, config), so that
    the next run trains from scratch; logs and exports are kept. Rank 0 only."""
    if distributed.rank() != 0:
        return
    log.info("%s: removing the previous run's checkpoints, metrics and config (--overwrite)", exp_dir)
    shutil.rmtree(os.path.join(exp_dir, "checkpoints"), ignore_errors=True)
    for name in ("done", "metrics.jsonl", "training_curve.png", "config.yaml"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(exp_dir, name))


def _changes(diffs):
    return ", ".join(f"{k} (was {a}, now {b})" for k, a, b in diffs)


def _diff(a, b, prefix=""):
    """(key, old value, new value) of the keys of nested dicts a and b whose values differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append((prefix + k, a.get(k), b.get(k)))
    return out


def append_metrics(exp_dir, rec):
    """Append one epoch's record to exp_dir/metrics.jsonl."""
    with open(os.path.join(exp_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_metrics(exp_dir):
    """The records of exp_dir/metrics.jsonl (a line cut short by a kill is skipped)."""
    path = os.path.join(exp_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    recs = []
    with open(path) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except ValueError:
                continue
    return recs


def truncate_metrics(exp_dir, step):
    """Drop metric lines written after ``step`` (by a run killed before its next checkpoint)."""
    if os.path.isfile(os.path.join(exp_dir, "metrics.jsonl")):
        keep = [json.dumps(r) + "\n" for r in read_metrics(exp_dir) if r["step"] <= step]
        atomic_write_text(os.path.join(exp_dir, "metrics.jsonl"), "".join(keep))
