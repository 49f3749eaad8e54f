"""Atomic outputs: write to a temp file in the same directory, then rename.

A crash never leaves a half-written file under the final name. For ark/scp pairs the
ark is renamed first and the scp last, so an scp never points at data that is not there.
"""
import contextlib
import os
import tempfile


def _new_file_mode():
    """0o666 less the process umask: the mode open() gives a new file (mkstemp's temp files are 0600)."""
    try:
        with open("/proc/self/status") as f:   # reads the umask without changing it (Linux >= 4.7)
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def new_temp(path):
    """(fd, name) of a new hidden temp file next to ``path`` (its directory created), with the mode a
    file the user writes gets, not mkstemp's 0600, so the renamed output is readable as any other."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    os.fchmod(fd, _new_file_mode())
    return fd, tmp


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temp file next to ``path``; on clean exit fsync and rename it to ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    fd, tmp = new_temp(path)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
