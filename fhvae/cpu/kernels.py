"""The LSTM layer kernels of ``lstm_kernels.c``, compiled on first use and loaded with ctypes.

The C file is built with the machine's C compiler (``$CC``, else ``cc``) for the machine it runs on
(``-O3 -march=native``) into ``$FHVAE_CACHE`` (default ``~/.cache/fhvae``), once per source, compiler
and CPU. Its matrix products call the BLAS ``sgemm_`` that PyTorch's own library exports (MKL in the
x86 wheels), and split the batch over threads where MKL's ``MKL_Set_Num_Threads_Local`` (its C API)
lets each thread run a one-thread sgemm. Without a compiler or an ``sgemm_``, or with ``FHVAE_FUSED_LSTM=0``,
``kernels()`` returns None and the model uses its PyTorch formulation of the same math (same results
to float32 rounding).
"""
import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile

import torch

log = logging.getLogger(__name__)

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lstm_kernels.c")
# Not -ffast-math: with it gcc < 13 links crtfastmath.o into shared libraries too, whose constructor
# sets flush-to-zero / denormals-are-zero for the thread that loads the library (and the threads it
# starts later), so that every float computation there, numpy's and PyTorch's included, would
# depend on whether the kernels had been loaded. These two are all the loops need to vectorize.
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=256", "-fno-math-errno", "-fno-trapping-math", "-fPIC",
          "-shared"]
_lib = None
_tried = False
enabled = True  # see use()
max_chunks = 0  # batch chunks (threads) per LSTM layer; 0: torch.get_num_threads(). See chunks()


def _cpu_id():
    """What -march=native depends on: the CPU's model name and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + "".join(lines)


def _build(cc, out):
    """Compile _SRC into the shared library ``out`` (atomically: a temp file, then rename), with
    OpenMP (-fopenmp) if the compiler has it, else without (the batch chunks then run one after
    another)."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(out))
    os.close(fd)
    try:
        try:
            subprocess.run([cc, *_FLAGS, "-fopenmp", _SRC, "-o", tmp, "-lm"], check=True, capture_output=True,
                           text=True)
        except subprocess.CalledProcessError:
            subprocess.run([cc, *_FLAGS, _SRC, "-o", tmp, "-lm"], check=True, capture_output=True, text=True)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def use(on):
    """Within the block, kernels() returns None unless ``on`` (benchmarks compare both paths)."""
    global enabled
    old, enabled = enabled, bool(on)
    try:
        yield
    finally:
        enabled = old


def _blas():
    """(sgemm_, mkl_set_num_threads_local or None) from the library PyTorch runs its products with."""
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", None):
        try:
            lib = ctypes.CDLL(os.path.join(libdir, name) if name else None)
            sgemm = lib.sgemm_
        except (OSError, AttributeError):
            continue
        threads = getattr(lib, "MKL_Set_Num_Threads_Local", None)  # the C API (lowercase: Fortran)
        return sgemm, threads
    return None, None


def chunks():
    """How many batch chunks (threads, each with a one-thread sgemm) the layer kernels split into."""
    return max_chunks or torch.get_num_threads()


@contextlib.contextmanager
def split(n):
    """Within the block, the layer kernels use at most n batch chunks (1: one chunk whose sgemm
    uses all of PyTorch's threads, the way the kernels ran before the split; benchmarks)."""
    global max_chunks
    old, max_chunks = max_chunks, int(n)
    try:
        yield
    finally:
        max_chunks = old


def kernels():
    """The loaded library (functions lstm_layer_forward, lstm_layer_backward), or None."""
    global _lib, _tried
    if not enabled:
        return None
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("FHVAE_FUSED_LSTM", "1") == "0":
        return None
    sgemm, threads = _blas()
    if sgemm is None:
        log.warning("PyTorch's library exports no BLAS sgemm_: using the slower PyTorch LSTM element-wise ops")
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.warning("no C compiler (cc): using the slower PyTorch LSTM element-wise ops")
        return None
    with open(_SRC, "rb") as f:
        key = hashlib.sha1(f.read() + " ".join([cc, *_FLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    caches = [os.environ.get("FHVAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fhvae"),
              os.path.join(tempfile.gettempdir(), f"fhvae-cache-{os.getuid()}")]  # if the first is read-only
    error = None
    for cache in caches:
        path = os.path.join(cache, f"lstm_kernels-{key}.so")
        try:
            if not os.path.exists(path):
                _build(cc, path)
            lib = ctypes.CDLL(path)
            break
        except (OSError, subprocess.CalledProcessError) as e:
            error = (getattr(e, "stderr", "") or str(e)).strip()
    else:
        log.warning("could not build %s (%s): using the slower PyTorch LSTM element-wise ops",
                    _SRC, error.splitlines()[-1] if error else "unknown error")
        return None
    p, n, i = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int
    lib.lstm_init.argtypes = [p, p]
    lib.lstm_init(ctypes.cast(sgemm, p), ctypes.cast(threads, p) if threads is not None else None)
    lib.lstm_layer_forward.argtypes = [p, n, n, p, p, p, p, p, i, i, i, i, i]
    lib.lstm_layer_forward.restype = None
    lib.lstm_layer_backward.argtypes = [p, p, p, p, p, n, n, p, p, p, i, i, i, i]
    lib.lstm_layer_backward.restype = None
    _lib = lib
    return lib
