"""torch.distributed set-up for ``torchrun --nproc_per_node N fhvae-train ...``.

gloo on CPU, NCCL on GPU. Model gradients are averaged by DDP; the sequence cache is a separate
rank-local tensor (each rank samples its own blocks), so DDP never touches it.
Without torchrun's environment (WORLD_SIZE unset or 1) everything is a no-op.
"""
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fhvae.errors import ConfigError

log = logging.getLogger(__name__)


def rank():
    return int(os.environ.get("RANK", "0"))


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    def wrap(self, model):
        """DDP-wrapped model when world > 1, else the model itself."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_true(self, flag):
        """True on every rank iff ``flag`` is True on every rank (so all ranks skip a batch together)."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0)

    def broadcast(self, tensor):
        """Overwrite ``tensor`` in place with rank 0's (e.g. a re-initialized codebook)."""
        if self.world > 1:
            dist.broadcast(tensor, src=0)

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def check_device(device, key="train.device", flag="--train.device"):
    """ConfigError (one line, with the override) when ``device`` is cuda[:N] but this machine has no
    CUDA device (or fewer than N + 1), or is not a device name."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={device}: not a device (cpu, cuda or cuda:N)") from None
    if dev.type != "cuda":
        return
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise ConfigError(f"{key}={device} but no CUDA device is available; run with {flag} cpu")
    index = dev.index
    if index is not None and index >= n:
        raise ConfigError(f"{key}={device} but this machine has {n} CUDA device(s); run with {flag} cuda:0")


def setup(device="cpu"):
    """Initialise the process group from torchrun's env vars; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    r = rank()
    check_device(device)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("distributed: rank %d of %d, backend %s, device %s", r, world, backend, dev)
    return Dist(r, world, dev)


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
