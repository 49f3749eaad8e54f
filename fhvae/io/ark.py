"""Kaldi binary ark/scp: random-access feature reading and atomic writing.

Reading: the one feature-scp grammar of the toolkit is here, used by ``FeatReader`` and by
training/export (``fhvae.data.index.UttIndex``): ``scp_lines`` splits a line as Kaldi does
(key = first field, rxfilename = the rest, stripped: ark paths may contain spaces) and
``parse_entry`` reads ``ark:offset``, optionally with a Kaldi row range ``ark:offset[first:last]``
(inclusive), or a whole-file entry (a binary Kaldi matrix at offset 0, or a ``.npy`` file).
``MatrixReader`` reads such entries: it opens the arks lazily, keeps at most ``max_open``
handles (LRU), seeks to the entry's byte offset and decodes the binary matrix with kaldiio's
low-level reader. Matrix types: ``FM``/``DM`` and compressed ``CM``/``CM2``/``CM3``; returned
as float32 ``(T, D)``.

Writing: ``ArkScpWriter`` writes ``FM`` (2-D), ``CM`` (2-D, ``compress=True``) or ``FV`` (1-D)
entries to a temp ark next to the final one. Keys must come in strictly increasing C (byte)
order, so the scp is sorted as Kaldi requires without a second pass; out-of-order or duplicate
keys raise. On clean exit the ark is fsynced and renamed first, the scp (absolute final ark
path + byte offsets) is written atomically last; an older scp of the same name is removed
just before the new ark lands, so an scp never points into another ark. Any exception
removes the temps and leaves the final names as they were (nothing, on a first run).
"""
import collections
import contextlib
import os
import re
import struct
import threading

import numpy as np
from kaldiio.matio import read_matrix_or_vector, write_array

from fhvae.errors import DataError
from fhvae.io.atomic import atomic_write_text, new_temp
from fhvae.io.tables import check_line_ending

# Bytes per element of the uncompressed binary types.
_FLOAT_TYPES = {"FM": 4, "DM": 8, "FV": 4, "DV": 8}
_COMPRESSED = ("CM", "CM2", "CM3")
_ENTRY_RE = re.compile(r"^(?P<path>.+?)(?::(?P<offset>\d+))?(?:\[(?P<range>[^\]]*)\])?$")
_KALDI_SPEECH_COMPRESSION = 1  # kaldiio/Kaldi kAutomaticMethod: CM for > 8 rows, else CM2


def scp_lines(path):
    """Yield ``(lineno, key, rxfilename)`` for each line of a Kaldi scp, streaming.

    As Kaldi splits them: key = the first field, rxfilename = the rest of the line, stripped of
    (ASCII) whitespace, so it may contain spaces. Keys must be unique and sorted (LC_ALL=C); a
    Windows (CRLF) line ending is an error. Errors are DataError naming ``path:line``.
    """
    prev = None
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            check_line_ending(raw, path, lineno)
            parts = raw.split(None, 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{lineno}: expected '<key> <rxfilename>', got {raw[:80]!r}")
            if prev is not None and parts[0] <= prev:
                key = parts[0].decode(errors="replace")
                raise DataError(f"{path}:{lineno}: duplicate key {key!r}" if parts[0] == prev else
                                f"{path}:{lineno}: keys not sorted (LC_ALL=C): {key!r} after "
                                f"{prev.decode(errors='replace')!r}")
            prev = parts[0]
            try:
                key, value = parts[0].decode("utf-8"), parts[1].rstrip().decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            yield lineno, key, value


def scp_entries(path):
    """Yield ``(lineno, key, (path, offset, rows))`` of a feature scp (see ``parse_entry``)."""
    for lineno, key, value in scp_lines(path):
        try:
            yield lineno, key, parse_entry(value)
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None


def read_scp(path):
    """Read a Kaldi scp (``key rxfilename`` per line) into ``{key: rxfilename}``."""
    return {key: value for _, key, value in scp_lines(path)}


def parse_entry(value):
    """The feature scp grammar: ``'a b.ark:12[0:9]'`` -> ``('a b.ark', 12, slice(0, 10))``.

    ``<path>[:<byte offset>][[<first>:<last>]]`` (rows inclusive, as Kaldi); offset and rows
    may be None (a whole-file entry: a binary Kaldi matrix at offset 0, or a ``.npy`` file).
    Raises ValueError for pipes and other ranges.
    """
    value = value.strip()
    path, _, offset = value.rpartition(":")
    if path and offset.isdigit() and offset.isascii() and not path.startswith("|"):   # fast path: ark:offset
        return path, int(offset), None
    if value.endswith("|") or value.startswith("|"):
        raise ValueError("pipes are not supported in a feature scp (run copy-feats to make an ark)")
    m = _ENTRY_RE.match(value)
    if not m:
        raise ValueError(f"cannot parse {value!r}")
    offset = int(m.group("offset")) if m.group("offset") is not None else None
    rows = None
    if m.group("range") is not None:
        parts = m.group("range").split(",")
        r = parts[0].split(":")
        if len(parts) > 1 or len(r) != 2 or not all(p.strip().isdigit() for p in r) or int(r[0]) > int(r[1]):
            raise ValueError(f"unsupported range {m.group('range')!r} (only [first:last] rows, first <= last)")
        rows = slice(int(r[0]), int(r[1]) + 1)
    return m.group("path"), offset, rows


def _read_header(fd):
    """Read a binary Kaldi matrix/vector header at the current position of ``fd``.

    Returns ``(type, shape, nbytes)``: the type token (FM, DM, FV, DV, CM, CM2, CM3), the
    shape, and the total size in bytes of the object starting at the header.
    """
    head = fd.read(32)
    if head[:2] != b"\0B":
        raise ValueError("not a binary Kaldi matrix (no '\\0B' header)")
    typ = head[2:].split(b" ", 1)[0].decode("ascii", "replace")
    p = 2 + len(typ) + 1
    try:
        if typ in ("FM", "DM"):
            shape = struct.unpack("<xixi", head[p:p + 10])
            nbytes = p + 10 + shape[0] * shape[1] * _FLOAT_TYPES[typ]
        elif typ in ("FV", "DV"):
            shape = struct.unpack("<xi", head[p:p + 5])
            nbytes = p + 5 + shape[0] * _FLOAT_TYPES[typ]
        elif typ in _COMPRESSED:
            shape = struct.unpack("<ii", head[p + 8:p + 16])
            per_col = 8 * shape[1] if typ == "CM" else 0
            nbytes = p + 16 + per_col + shape[0] * shape[1] * (2 if typ == "CM2" else 1)
        else:
            raise ValueError(
                f"unsupported matrix type {typ!r} (expected FM, DM, FV, DV, CM, CM2, CM3)"
            )
    except struct.error:
        raise ValueError(f"truncated {typ} header") from None
    if min(shape) < 0:
        raise ValueError(f"corrupt {typ} header (shape {shape})")
    return typ, tuple(shape), nbytes


def _read_binary_matrix(fd):
    """Decode the binary Kaldi matrix/vector at the current position of ``fd`` (float32).

    Raises ValueError on a bad header or truncated data.
    """
    start = fd.tell()
    typ, shape, nbytes = _read_header(fd)
    left = os.fstat(fd.fileno()).st_size - start
    if nbytes > left:
        raise ValueError(f"truncated: {typ} {shape} needs {nbytes} bytes, the file has {left} left")
    fd.seek(start)
    try:
        array = read_matrix_or_vector(fd)
    except (AssertionError, ValueError, struct.error, IndexError) as e:
        raise ValueError(f"corrupt {typ} data ({e or type(e).__name__})") from None
    if not array.flags.writeable or array.dtype != np.float32:
        array = np.array(array, dtype=np.float32)
    return array


class MatrixReader:
    """Reads binary Kaldi matrices at ``(path, byte offset)`` through cached file handles.

    At most ``max_open`` handles stay open (least recently used closed first). Thread-safe.
    Picklable: handles are dropped when pickled and reopened lazily in the worker process.
    ``where`` (e.g. ``"data/train/feats.scp (utt u1)"``) prefixes every error message.
    """

    def __init__(self, max_open=64):
        self.max_open = max(1, int(max_open))
        self._handles = collections.OrderedDict()
        self._lock = threading.Lock()

    def read(self, path, offset=0, where="", rows=None):
        """float32 array (``(T, D)``, or 1-D for a vector) stored at ``path``:``offset``.

        An entry of ``parse_entry``: offset None is a whole file (``.npy``, or a Kaldi matrix at
        byte 0); ``rows`` (a slice) keeps those rows of the matrix.
        """
        if offset is None and path.endswith(".npy"):
            array = np.asarray(self._load_npy(path, where), dtype=np.float32)
        else:
            with self._lock:
                fd = self._open(path, where)
                try:
                    fd.seek(offset or 0)
                    array = _read_binary_matrix(fd)
                except (ValueError, OSError) as e:
                    msg = f"cannot read matrix from {path} at offset {offset or 0}: {e}"
                    raise DataError(_prefix(where, msg)) from None
        if rows is not None:
            _check_rows(array.shape, rows, path, where)
            array = array[rows]
        return array

    def shape(self, path, offset=0, where="", rows=None):
        """Shape of the matrix at ``path``:``offset`` (``rows`` applied), reading only its header."""
        if offset is None and path.endswith(".npy"):
            shape = tuple(self._load_npy(path, where, mmap_mode="r").shape)
        else:
            with self._lock:
                fd = self._open(path, where)
                try:
                    fd.seek(offset or 0)
                    shape = _read_header(fd)[1]
                except (ValueError, OSError) as e:
                    msg = f"cannot read matrix header from {path} at offset {offset or 0}: {e}"
                    raise DataError(_prefix(where, msg)) from None
        if rows is not None:
            _check_rows(shape, rows, path, where)
            shape = (rows.stop - rows.start,) + tuple(shape[1:])
        return tuple(shape)

    def _load_npy(self, path, where, mmap_mode=None):
        try:
            return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(_prefix(where, f"file not found: {path}")) from None
        except (ValueError, OSError) as e:
            raise DataError(_prefix(where, f"cannot read {path}: {e}")) from None

    def _open(self, path, where):
        fd = self._handles.get(path)
        if fd is not None:
            self._handles.move_to_end(path)
            return fd
        try:
            fd = open(path, "rb")
        except FileNotFoundError:
            raise DataError(_prefix(where, f"ark file not found: {path}")) from None
        except OSError as e:
            raise DataError(_prefix(where, f"cannot open ark {path}: {e.strerror}")) from None
        self._handles[path] = fd
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)[1].close()
        return fd

    def close(self):
        """Close all cached handles (the reader stays usable: they reopen lazily)."""
        with self._lock:
            while self._handles:
                self._handles.popitem()[1].close()

    def __getstate__(self):
        return {"max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["max_open"])

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def _prefix(where, msg):
    return f"{where}: {msg}" if where else msg


def _check_rows(shape, rows, path, where):
    if len(shape) != 2 or rows.stop > shape[0]:
        raise DataError(_prefix(where, f"row range [{rows.start}:{rows.stop - 1}] outside the "
                                       f"{shape[0]}-row matrix in {path}"))


class FeatReader:
    """Random access to the matrices of a Kaldi ``feats.scp`` (any dimension, FM/DM/CM).

    ``reader[utt]`` -> float32 ``(T, D)`` (vectors come back 1-D). Errors are DataError naming
    the scp line, the ark and the offset. Picklable (handles reopen lazily in workers).
    """

    def __init__(self, feats_scp, *, max_open=64):
        self.scp_path = os.fspath(feats_scp)
        self._reader = MatrixReader(max_open)
        self._entries = {key: (lineno, entry) for lineno, key, entry in scp_entries(self.scp_path)}
        self._dim = None

    def keys(self):
        """Utterance ids in scp (sorted) order."""
        return list(self._entries)

    def __contains__(self, utt):
        return utt in self._entries

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def __getitem__(self, utt):
        lineno, (path, offset, rows) = self._entry(utt)
        return self._reader.read(path, offset, f"{self.scp_path}:{lineno}: utt {utt!r}", rows)

    def shape(self, utt):
        """``(T, D)`` of ``utt``, reading only the matrix header (row ranges applied)."""
        lineno, (path, offset, rows) = self._entry(utt)
        return self._reader.shape(path, offset, f"{self.scp_path}:{lineno}: utt {utt!r}", rows)

    @property
    def dim(self):
        """Feature dimension, from the first matrix of the scp."""
        if self._dim is None:
            if not self._entries:
                raise DataError(f"{self.scp_path}: no entries")
            self._dim = self.shape(next(iter(self._entries)))[-1]
        return self._dim

    def _entry(self, utt):
        try:
            return self._entries[utt]
        except KeyError:
            raise DataError(f"{self.scp_path}: no entry for utterance {utt!r}") from None

    def close(self):
        """Close cached file handles (the reader stays usable)."""
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ArkScpWriter:
    """Write matrices/vectors to ``ark_path`` + ``scp_path`` atomically (see module doc).

    Usage::

        with ArkScpWriter("fbank/raw.1.ark", "fbank/raw.1.scp") as w:
            w.write("spk1-u1", feats)   # 2-D -> FM (CM if compress), 1-D -> FV

    Keys must be written in strictly increasing C order (``ValueError`` otherwise).
    """

    def __init__(self, ark_path, scp_path, *, compress=False):
        self.ark_path = os.path.abspath(os.fspath(ark_path))
        self.scp_path = os.fspath(scp_path)
        self.compress = compress
        self._lines = []
        self._last_key = None
        self._fd = None
        self._tmp = None

    def __enter__(self):
        fd, self._tmp = new_temp(self.ark_path)
        self._fd = os.fdopen(fd, "wb")
        return self

    def write(self, key, array):
        """Append ``key`` -> ``array`` (float; 2-D matrix or 1-D vector)."""
        if self._fd is None:
            raise RuntimeError("ArkScpWriter.write() outside its 'with' block")
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"invalid key {key!r}: must be non-empty without whitespace")
        if self._last_key is not None and not key > self._last_key:
            raise ValueError(
                f"key {key!r} written after {self._last_key!r}: keys must be unique and in "
                "sorted (LC_ALL=C) order"
            )
        array = np.asarray(array)
        if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{key}: expected a 1-D or 2-D numeric array, got {array.dtype} {array.shape}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{self.ark_path}: refusing to write non-finite values (NaN/inf) for key {key!r}")
        self._fd.write(key.encode("utf-8") + b" ")
        offset = self._fd.tell()
        compression = _KALDI_SPEECH_COMPRESSION if self.compress and array.ndim == 2 else None
        write_array(self._fd, array, compression_method=compression)
        self._lines.append(f"{key} {self.ark_path}:{offset}\n")
        self._last_key = key

    def __exit__(self, exc_type, exc, tb):
        fd, self._fd = self._fd, None
        try:
            if exc_type is None:
                fd.flush()
                os.fsync(fd.fileno())
            fd.close()
            if exc_type is not None:
                return False
            # An old scp must never point into the new ark: drop it before the ark lands.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.scp_path)
            os.replace(self._tmp, self.ark_path)
            self._tmp = None
            try:
                atomic_write_text(self.scp_path, "".join(self._lines))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(self.ark_path)
                raise
        finally:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
                self._tmp = None
        return False


def write_vectors(scp_path, ark_path, vectors):
    """Write ``{key: 1-D array}`` as ``FV`` entries (keys sorted) to ark + scp atomically."""
    with ArkScpWriter(ark_path, scp_path) as w:
        for key in sorted(vectors):
            v = np.asarray(vectors[key])
            if v.ndim != 1:
                raise ValueError(f"{key}: expected a 1-D vector, got shape {v.shape}")
            w.write(key, v)
