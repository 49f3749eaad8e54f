"""Keep freed memory in the process heap (glibc malloc), so that PyTorch's large CPU tensors do not
page-fault again on every step.

PyTorch has no caching allocator on CPU: every tensor is malloc'd and freed. glibc serves large
blocks (above its mmap threshold, a few MB) with fresh mmap'd pages and unmaps them on free, so the
next step's tensor of the same size faults in and zeroes its pages again. A training step of the
mini model took ~1,500-3,000 page faults (10-15 ms of system time); a z2-encoder pass over 2048
segments (the cache MAP estimate, the export) ran at 3/4 of its speed (BENCHMARKS.md 3d).
``keep_freed_memory()`` raises the mmap and trim thresholds so those blocks stay in the heap and are
reused. The resident size then stays at its peak instead of shrinking between steps.
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
TRIM_THRESHOLD = 32 << 20   # bytes of free memory at the top of the heap before it is given back


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
