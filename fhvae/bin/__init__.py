"""Thin command-line entry points: parse args, call the library, nothing else.

Each module ``fhvae/bin/<name>.py`` defines ``main(argv=None)`` and is installed as
``fhvae-<name-with-dashes>`` (also runnable as ``python -m fhvae.bin.<name>``).
"""
import logging
import sys

from fhvae.errors import FhvaeError
from fhvae.cpu.malloc import keep_freed_memory


def run_cli(prog, fn, argv=None):
    """Run ``fn(argv)``; turn FhvaeError into ``prog: error: message`` and exit status 1.
    Every command keeps freed memory in its heap (fhvae/cpu/malloc.py: no page faults on reuse)."""
    keep_freed_memory()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {prog} %(levelname)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr,
    )
    try:
        rc = fn(argv)
    except FhvaeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:   # disk full, permission denied, ...: one clear line, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)
