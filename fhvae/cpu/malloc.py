"""Keep freed memory in the process heap (glibc malloc), so that PyTorch's large CPU tensors do not
page-fault again on every step.

PyTorch has no caching allocator on CPU: every tensor is malloc'd and freed. glibc serves large
blocks (above its mmap threshold, a few MB) with fresh mmap'd pages and unmaps them on free, so the
next step's tensor of the same size faults in and zeroes its pages again: ~2,500-3,000 page faults
(10-13 ms of system time) per mini-model training step. ``keep_freed_memory()`` serves blocks up to
64 MiB from the heap and keeps up to 128 MiB free at its top: 9.2x fewer faults, the step 1.03x and
the export's encoders 1.35x as fast in one run of ``fhvae-bench malloc`` (BENCHMARKS.md 3d). The
peak resident size then varies by up to ~100 MB between identical runs (BENCHMARKS.md 2).
"""
import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)
# Bytes: blocks up to 64 MiB come from the heap (every tensor of a training step or an export batch);
# larger ones (the flat baseline's (batch x M) matrices) stay mmap'd and are returned on free, since
# kept in the heap they double the peak resident size (BENCHMARKS.md 2).
MMAP_THRESHOLD = 64 << 20
# Bytes of free memory at the top of the heap before it is given back: twice the mmap threshold (glibc's
# own rule when it adjusts the threshold itself). At 32 MiB a freed 32 MB tensor was trimmed and
# faulted in again on the next step.
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory():
    """Set glibc's malloc thresholds (above). Returns True if set; False (and nothing changes) off glibc,
    with ``FHVAE_MALLOC_TUNE=0``, or when ``GLIBC_TUNABLES`` already sets malloc options."""
    if os.environ.get("FHVAE_MALLOC_TUNE", "1") == "0" or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; malloc unchanged")
    return ok
