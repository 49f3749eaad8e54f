"""Progress of one training epoch: a tqdm bar on a terminal, plain log lines otherwise.

Redirected output (a log file, a Slurm job) gets no carriage-return bar lines but one line every
``max(1, epoch_steps // 10)`` steps: ``epoch 3 step 820/1200: loss 123.4 (9.8 steps/s)``.
"""
import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)

TERMS = ("loss", "log_px", "kl_z1", "kl_z2", "disc")


class EpochProgress:
    """Reports the steps of epoch ``epoch`` (1-based) of ``total`` steps, ``start`` of them done before
    (a resumed run); silent when not ``show``. The loss and steps/s are over the steps seen here."""

    def __init__(self, epoch, total, start=0, show=True, tty=None):
        self.epoch, self.total, self.show = epoch, total, show
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every = max(1, total // 10)
        self.n0 = self.n = start
        self.loss_sum, self.t0 = 0.0, time.time()
        self.bar = tqdm(total=total, initial=start, desc=f"epoch {epoch}", unit="step", dynamic_ncols=True,
                        mininterval=2.0) if show and self.tty else None

    def update(self, terms):
        """One step done with the batch means ``terms`` (empty for a skipped batch)."""
        self.n += 1
        self.loss_sum += terms.get("loss", 0.0)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{terms[k]:.1f}" for k in TERMS if k in terms}, refresh=False)
        elif self.show and self.n % self.every == 0:
            done = self.n - self.n0
            log.info("epoch %d step %d/%d: loss %.1f (%.1f steps/s)", self.epoch, self.n, self.total,
                     self.loss_sum / done, done / max(time.time() - self.t0, 1e-9))

    def close(self):
        if self.bar is not None:
            self.bar.close()
