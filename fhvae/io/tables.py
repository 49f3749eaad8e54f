"""Kaldi text tables ``key field...``: read, write, and convert utt2spk <-> spk2utt.

One entry per line, keys unique and sorted in C byte order (``LC_ALL=C sort``); fields split on
ASCII whitespace only. Python's ``sorted`` on str (code point order) is exactly the UTF-8 byte
order of ``LC_ALL=C sort``. Lines end in LF: a Windows (CRLF) line ending is an error, as in
Kaldi. Errors are :class:`fhvae.errors.DataError` naming ``file:line``.
"""
import contextlib
import logging
import os
import re
import sys
from typing import Dict, List

from fhvae.errors import DataError
from fhvae.io.atomic import atomic_open

log = logging.getLogger(__name__)

FIX_HINT = "utils/fix_data_dir.sh fixes order, duplicates and mismatched keys"

_SEP = re.compile(r"[ \t\r\f\v]+")  # Kaldi splits on ASCII whitespace only
_ASCII_WS = " \t\r\f\v"


CRLF_HINT = "Windows (CRLF) line ending; convert with dos2unix or sed -i 's/\\r$//'"


def check_line_ending(raw, name, lineno):
    """DataError naming ``name:lineno`` if the line ``raw`` (bytes) ends in CR LF; Kaldi refuses them too."""
    if raw.endswith(b"\r\n") or raw.endswith(b"\r"):
        raise DataError(f"{name}:{lineno}: {CRLF_HINT}")


def scan_table(path, min_fields=2, max_fields=None, *, check_sorted=True, lenient=False, unique=True,
               problems=None):
    """Yield ``(lineno, fields, rest)`` for each line of a Kaldi table; ``path`` '-' is stdin.

    ``rest`` is the line after the key and the whitespace that follows it. Empty lines and
    duplicate keys are errors unless ``lenient`` (then they are skipped with a warning, the
    first of duplicates kept, and order is not checked). ``unique=False``: keys may repeat, in
    any order (trials). Windows (CRLF) line endings are always errors. ``problems`` (a list):
    errors are appended to it instead of raised and the bad line is skipped (order and CRLF are
    reported once per file), so a caller can report every problem at once.
    """
    name = "<stdin>" if path == "-" else os.fspath(path)

    def bad(msg):
        if problems is None:
            raise DataError(msg)
        problems.append(msg)

    try:
        f = contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb")
    except OSError as e:
        bad(f"{name}: cannot read: {e.strerror or e}")
        return
    seen = {}
    prev = None
    crlf_seen = unsorted_seen = False
    with f as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{name}:{lineno}"
            if not crlf_seen:
                try:
                    check_line_ending(raw, name, lineno)
                except DataError as e:
                    crlf_seen = True
                    bad(str(e))
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:
                bad(f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
                continue
            if not line.strip():
                if not lenient:
                    bad(f"{where}: empty line")
                else:
                    log.warning("%s: skipping empty line", where)
                continue
            if line[0] in _ASCII_WS:
                bad(f"{where}: line starts with whitespace (the key would be empty)")
                continue
            line = line.rstrip(_ASCII_WS)
            fields = _SEP.split(line)
            key = fields[0]
            spaces = [c for c in key if c.isspace()]
            if spaces:
                bad(f"{where}: key {key!r} contains the whitespace character "
                    f"U+{ord(spaces[0]):04X}; Kaldi splits fields on ASCII whitespace only")
                continue
            if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
                want = (f"exactly {min_fields}" if min_fields == max_fields else
                        f"at least {min_fields}" if max_fields is None else f"{min_fields} to {max_fields}")
                bad(f"{where}: expected {want} fields, got {len(fields)}: {line!r}")
                continue
            if unique:
                if key in seen:
                    if lenient:
                        log.warning("%s: dropping duplicate key %r (first at line %d)", where, key, seen[key])
                    else:
                        bad(f"{where}: duplicate key {key!r} (first at line {seen[key]})")
                    continue
                if check_sorted and not lenient and prev is not None and key < prev and not unsorted_seen:
                    unsorted_seen = True
                    bad(f"{where}: keys not sorted under LC_ALL=C: {key!r} after {prev!r}; {FIX_HINT}")
                seen[key] = lineno
                prev = key
            rest = line[len(key):].lstrip(_ASCII_WS)
            yield lineno, fields, rest


def read_table(path, *, min_fields=2, max_fields=None, check_sorted=True, problems=None) -> Dict[str, List[str]]:
    """Read a Kaldi table ``key field...`` into ``{key: [field, ...]}`` (fields after the key).

    Raises DataError naming ``path:line`` for a missing file, non-UTF-8, CRLF or empty line, bad
    field count, duplicate key, key with non-ASCII whitespace, or (check_sorted) keys out of C
    order; with ``problems`` (a list) they are appended to it instead (see scan_table).
    """
    rows = scan_table(path, min_fields, max_fields, check_sorted=check_sorted, problems=problems)
    return {fields[0]: fields[1:] for _, fields, _ in rows}


def read_kv(path, *, min_fields=2, max_fields=None, check_sorted=True, problems=None) -> Dict[str, str]:
    """Read ``key value`` lines; the value is the rest of the line (may contain spaces, e.g. pipes).

    Same checks as read_table.
    """
    rows = scan_table(path, min_fields, max_fields, check_sorted=check_sorted, problems=problems)
    return {fields[0]: rest for _, fields, rest in rows}


def _format_value(key, value):
    if not key or any(c.isspace() for c in key):
        raise DataError(f"cannot write key {key!r}: keys must be non-empty and contain no whitespace")
    if not isinstance(value, str):
        value = " ".join(str(v) for v in value)
    if "\n" in value:
        raise DataError(f"cannot write value of key {key!r}: it contains a newline")
    return f"{key} {value}\n" if value else f"{key}\n"


def write_kv(path, mapping):
    """Write ``key value`` lines sorted in C byte order, atomically. Values: str or list of str."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for key in sorted(mapping):
            f.write(_format_value(key, mapping[key]))


def utt2spk_to_spk2utt(utt2spk) -> Dict[str, List[str]]:
    """``{utt: spk}`` -> ``{spk: [utt, ...]}``, speakers and their utterances in C order."""
    spk2utt = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt)}


def spk2utt_to_utt2spk(spk2utt) -> Dict[str, str]:
    """``{spk: [utt, ...]}`` -> ``{utt: spk}`` in C order; an utterance under two speakers is an error."""
    utt2spk = {}
    for spk, utts in spk2utt.items():
        for utt in utts:
            if utt in utt2spk:
                raise DataError(f"spk2utt: utterance {utt!r} is listed under speakers {utt2spk[utt]!r} and {spk!r}")
            utt2spk[utt] = spk
    return {u: utt2spk[u] for u in sorted(utt2spk)}


def line_numbers(path, field=0) -> Dict[str, int]:
    """``{value of field: first line}`` of a table (for messages; no checks, unreadable -> {})."""
    lines = {}
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            parts = line.split(None, field + 1)
            if len(parts) > field:
                lines.setdefault(parts[field], i)
    return lines


def read_id_list(path) -> List[str]:
    """First field of each line of an id list file (empty lines and repeats skipped)."""
    return [fields[0] for _, fields, _ in scan_table(path, 1, None, lenient=True)]
