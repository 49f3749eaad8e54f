"""Checkpoints that are never read half-written.

Layout under ``exp/<tag>/checkpoints/``:
  step00001000/model.pt      model + optimizer + trainer state (rank 0)
  step00001000/rank0.pt ...  rank-local state: the sequence cache, its optimizer, the block position
  last                       text file naming the newest complete step dir (replaced atomically,
                             after every rank's files are in place)
  best.pt                    model weights with the best dev bound (atomic copy)
Older step dirs are removed once ``last`` points past them.

Checkpoints hold only tensors and plain Python values, and are read with ``weights_only=True``: a
file that would import or call anything when unpickled (someone else's, tampered) is refused.
"""
import os
import pickle
import re
import shutil

import torch

from fhvae.errors import FhvaeError
from fhvae.io.atomic import atomic_open, atomic_write_text


def _save(obj, path):
    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:   # torch.save reports a full disk as RuntimeError
        raise FhvaeError(f"cannot write checkpoint {path}: {e}; the previous checkpoint is kept "
                         f"(free space and re-run the same command to resume)") from None


def step_dir(ckpt_dir, step):
    return os.path.join(ckpt_dir, f"step{step:08d}")


def save_part(ckpt_dir, step, name, obj):
    """Write one part (``model`` or ``rank<r>``) of the checkpoint of ``step`` atomically."""
    d = step_dir(ckpt_dir, step)
    os.makedirs(d, exist_ok=True)
    _save(obj, os.path.join(d, f"{name}.pt"))


def commit(ckpt_dir, step, keep_last=1):
    """Point ``last`` at ``step`` (all parts are written) and delete older step dirs."""
    atomic_write_text(os.path.join(ckpt_dir, "last"), os.path.basename(step_dir(ckpt_dir, step)) + "\n")
    dirs = sorted(d for d in os.listdir(ckpt_dir) if d.startswith("step") and
                  os.path.isdir(os.path.join(ckpt_dir, d)))
    current = os.path.basename(step_dir(ckpt_dir, step))
    for d in dirs:
        if d < current and d not in dirs[-keep_last - 1:]:
            shutil.rmtree(os.path.join(ckpt_dir, d), ignore_errors=True)


def last_step_dir(ckpt_dir):
    """The newest committed step dir, or None if training never checkpointed."""
    p = os.path.join(ckpt_dir, "last")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        name = f.read().strip()
    d = os.path.join(ckpt_dir, name)
    if not os.path.isdir(d):
        raise FhvaeError(f"{p} names '{name}', which does not exist (checkpoint dir damaged?)")
    return d


def load_part(d, name, map_location="cpu"):
    path = os.path.join(d, f"{name}.pt")
    if not os.path.isfile(path):
        raise FhvaeError(f"{path}: missing checkpoint part (resuming with a different number of ranks?)")
    return load_file(path, map_location)


def load_file(path, map_location="cpu"):
    """The tensors and plain values saved in ``path``; FhvaeError naming the file if it is unreadable
    or not a plain-weights checkpoint (it would import or call code when loaded)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e)
        if isinstance(e, pickle.UnpicklingError):
            m = re.search(r"GLOBAL (\S+)", msg)
            if m:
                raise FhvaeError(f"{path}: not a plain-weights checkpoint (it refers to {m.group(1)}); "
                                 f"refusing to load it (only tensors and plain values are read)") from None
            m = re.search(r"WeightsUnpickler error:\s*(.+)", msg)   # torch's message is a page long
            msg = m.group(1).strip() if m else msg
        raise FhvaeError(f"{path}: cannot read checkpoint: {msg}") from None


def save_best(ckpt_dir, model_state, info):
    """Atomically write ``best.pt`` (model weights + info such as step and dev bound)."""
    _save({"model": model_state, **info}, os.path.join(ckpt_dir, "best.pt"))


def load_model_weights(exp_dir, which="best", map_location="cpu"):
    """Model state dict from ``best.pt`` (default) or the last committed checkpoint."""
    ckpt_dir = os.path.join(exp_dir, "checkpoints")
    if which == "best":
        path = os.path.join(ckpt_dir, "best.pt")
        if not os.path.isfile(path):
            raise FhvaeError(f"{path}: not found (has training run at least one epoch?)")
        return load_file(path, map_location)["model"]
    d = last_step_dir(ckpt_dir)
    if d is None:
        raise FhvaeError(f"{ckpt_dir}: no checkpoint")
    return load_part(d, "model", map_location)["model"]
