"""Kaldi data directories: read, validate, fix, split and subset them; make trials.

A data dir holds text tables ``key field...``, one entry per line, keys unique and sorted in
C byte order (``LC_ALL=C sort``). Per-utterance tables (utt2spk, feats.scp, text, segments, ...)
are keyed by utterance id, spk2utt / spk2gender / cmvn.scp by speaker id, and wav.scp by
recording id when a ``segments`` file exists (else by utterance id). The speaker id is a prefix
of the utterance id, so sorting by utterance also groups by speaker. Python's ``sorted`` on str
(code point order) is exactly the UTF-8 byte order of ``LC_ALL=C sort``.

Errors are :class:`fhvae.errors.DataError` naming ``file:line``.
"""
import contextlib
import logging
import math
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from fhvae.errors import DataError
from fhvae.io.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

# Tables a data dir may hold, by what their keys are. Tools below keep them consistent.
UTT_FILES = ("utt2spk", "segments", "feats.scp", "text", "utt2num_frames", "utt2dur",
             "utt2cond", "utt2gender", "utt2lang", "utt2uniq", "vad.scp")
SPK_FILES = ("spk2utt", "spk2gender", "cmvn.scp")
RECO_FILES = ("wav.scp", "reco2file_and_channel", "reco2dur")
COPY_FILES = ("frame_shift",)
# Any other text table named utt2<x> / spk2<x> (utt2mic, utt2noise, spk2accent, ...; optionally
# .scp) is carried through subset / crop / split / fix with the same keys, as Kaldi's
# --utt-extra-files: filtered to the kept utterances or speakers, never used to drop one.
_EXTRA_TABLE = re.compile(r"(utt|spk)2[A-Za-z0-9_]+(\.scp)?")
# (min_fields, max_fields) per table; others: at least 2 fields.
FIELDS = {
    "utt2spk": (2, 2), "segments": (4, 4), "text": (1, None), "utt2num_frames": (2, 2),
    "utt2dur": (2, 2), "utt2cond": (2, 2), "utt2gender": (2, 2), "utt2lang": (2, 2),
    "utt2uniq": (2, 2), "spk2gender": (2, 2), "reco2dur": (2, 2), "reco2file_and_channel": (3, 3),
}
FIX_HINT = "utils/fix_data_dir.sh fixes order, duplicates and mismatched keys"

_SEP = re.compile(r"[ \t\r\f\v]+")  # Kaldi splits on ASCII whitespace only
_ASCII_WS = " \t\r\f\v"


def _fields_of(name):
    return FIELDS.get(name, (2, None))


def _scan(path, min_fields=2, max_fields=None, *, check_sorted=True, lenient=False):
    """Yield ``(lineno, fields, rest)`` for each line of a Kaldi table; ``path`` '-' is stdin.

    ``rest`` is the line after the key and the whitespace that follows it. Empty lines and
    duplicate keys are errors unless ``lenient`` (then they are skipped with a warning, the
    first of duplicates kept, and order is not checked).
    """
    name = "<stdin>" if path == "-" else os.fspath(path)
    try:
        f = contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from None
    seen = {}
    prev = None
    with f as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
            if not line.strip():
                if not lenient:
                    raise DataError(f"{where}: empty line")
                log.warning("%s: skipping empty line", where)
                continue
            if line[0] in _ASCII_WS:
                raise DataError(f"{where}: line starts with whitespace (the key would be empty)")
            line = line.rstrip(_ASCII_WS)
            fields = _SEP.split(line)
            key = fields[0]
            bad = [c for c in key if c.isspace()]
            if bad:
                raise DataError(f"{where}: key {key!r} contains the whitespace character "
                                f"U+{ord(bad[0]):04X}; Kaldi splits fields on ASCII whitespace only")
            if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
                want = (f"exactly {min_fields}" if min_fields == max_fields else
                        f"at least {min_fields}" if max_fields is None else f"{min_fields} to {max_fields}")
                raise DataError(f"{where}: expected {want} fields, got {len(fields)}: {line!r}")
            if key in seen:
                if not lenient:
                    raise DataError(f"{where}: duplicate key {key!r} (first at line {seen[key]})")
                log.warning("%s: dropping duplicate key %r (first at line %d)", where, key, seen[key])
                continue
            if check_sorted and not lenient and prev is not None and key < prev:
                raise DataError(f"{where}: keys not sorted under LC_ALL=C: {key!r} after {prev!r}; {FIX_HINT}")
            seen[key] = lineno
            prev = key
            rest = line[len(key):].lstrip(_ASCII_WS)
            yield lineno, fields, rest


def read_table(path, *, min_fields=2, max_fields=None, check_sorted=True) -> Dict[str, List[str]]:
    """Read a Kaldi table ``key field...`` into ``{key: [field, ...]}`` (fields after the key).

    Raises DataError naming ``path:line`` for a missing file, non-UTF-8 or empty line, bad field
    count, duplicate key, key with non-ASCII whitespace, or (check_sorted) keys out of C order.
    """
    return {fields[0]: fields[1:] for _, fields, _ in _scan(path, min_fields, max_fields, check_sorted=check_sorted)}


def read_kv(path, *, min_fields=2, max_fields=None, check_sorted=True) -> Dict[str, str]:
    """Read ``key value`` lines; the value is the rest of the line (may contain spaces, e.g. pipes).

    Same checks as read_table.
    """
    return {fields[0]: rest for _, fields, rest in _scan(path, min_fields, max_fields, check_sorted=check_sorted)}


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


@dataclass
class DataDir:
    """A loaded Kaldi data dir. Optional tables are None when their file is absent.

    segments: utt -> (recording, start_s, end_s); utt2num_frames: frames (int);
    utt2dur: seconds; frame_shift: seconds.
    """
    path: str
    utt2spk: Dict[str, str]
    spk2utt: Dict[str, List[str]]
    wav_scp: Optional[Dict[str, str]] = None
    segments: Optional[Dict[str, Tuple[str, float, float]]] = None
    feats_scp: Optional[Dict[str, str]] = None
    utt2num_frames: Optional[Dict[str, int]] = None
    utt2dur: Optional[Dict[str, float]] = None
    text: Optional[Dict[str, str]] = None
    utt2cond: Optional[Dict[str, str]] = None
    utt2gender: Optional[Dict[str, str]] = None
    spk2gender: Optional[Dict[str, str]] = None
    frame_shift: Optional[float] = None

    @property
    def utts(self) -> List[str]:
        """Utterance ids in C order."""
        return sorted(self.utt2spk)

    @property
    def spks(self) -> List[str]:
        """Speaker ids in C order."""
        return sorted(self.spk2utt)


def _typed(path, name, convert, what):
    out = {}
    for lineno, fields, rest in _scan(path, *_fields_of(name)):
        try:
            out[fields[0]] = convert(fields[1:])
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected {what}, got {rest!r}") from None
    return out


def _finite(s):
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(s)
    return v


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _read_frame_shift(path):
    text = _read_text(path).split()
    try:
        if len(text) != 1:
            raise ValueError
        return _finite(text[0])
    except ValueError:
        raise DataError(f"{path}:1: expected one number (seconds), got {' '.join(text)!r}") from None


def load_data_dir(path) -> DataDir:
    """Load a data dir (format checks only; see validate_data_dir for consistency checks).

    spk2utt is generated from utt2spk when the file is absent.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: data directory not found")
    p = lambda name: os.path.join(path, name)  # noqa: E731
    has = lambda name: os.path.exists(p(name))  # noqa: E731
    if not has("utt2spk"):
        raise DataError(f"{p('utt2spk')}: missing (every data dir needs utt2spk)")
    utt2spk = read_kv(p("utt2spk"), min_fields=2, max_fields=2)
    if not utt2spk:
        raise DataError(f"{p('utt2spk')}: empty (no utterances)")
    spk2utt = (read_table(p("spk2utt"), min_fields=2) if has("spk2utt") else utt2spk_to_spk2utt(utt2spk))
    dd = DataDir(path=path, utt2spk=utt2spk, spk2utt=spk2utt)
    for name, attr in (("wav.scp", "wav_scp"), ("feats.scp", "feats_scp"), ("text", "text"),
                       ("utt2cond", "utt2cond"), ("utt2gender", "utt2gender"), ("spk2gender", "spk2gender")):
        if has(name):
            setattr(dd, attr, read_kv(p(name), min_fields=_fields_of(name)[0], max_fields=_fields_of(name)[1]))
    if has("segments"):
        dd.segments = _typed(p("segments"), "segments", lambda f: (f[0], _finite(f[1]), _finite(f[2])),
                             "'<utt> <recording> <start-seconds> <end-seconds>'")
    if has("utt2num_frames"):
        dd.utt2num_frames = _typed(p("utt2num_frames"), "utt2num_frames", lambda f: int(f[0]),
                                   "an integer frame count")
    if has("utt2dur"):
        dd.utt2dur = _typed(p("utt2dur"), "utt2dur", lambda f: _finite(f[0]), "a duration in seconds")
    if has("frame_shift"):
        dd.frame_shift = _read_frame_shift(p("frame_shift"))
    return dd


# ----------------------------------------------------------------------------- validation

def _rxfile_path(value):
    """The file an rxfilename reads (``a.ark:12[0:9]`` -> ``a.ark``), or None for pipes/stdin."""
    v = value.strip()
    if v.endswith("|") or v == "-":
        return None
    v = re.sub(r"\[[^\]]*\]$", "", v)
    m = re.match(r"^(.*):(\d+)$", v)
    if m and not os.path.exists(v):
        v = m.group(1)
    return v


def _lines(table):
    """Line number of each key (tables are read strictly: no blank lines, so line = position + 1)."""
    return {k: i + 1 for i, k in enumerate(table)}


def _check_keys(problems, file, table, expected, what):
    """Append problems if the keys of ``table`` differ from the ``expected`` list."""
    exp = set(expected)
    extra = [k for k in table if k not in exp]
    missing = [k for k in expected if k not in table]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        problems.append(f"{file}:{_lines(table)[extra[0]]}: key {extra[0]!r} is not in {what}{more}; {FIX_HINT}")
    if missing:
        show = ", ".join(repr(k) for k in missing[:3]) + (", ..." if len(missing) > 3 else "")
        problems.append(f"{file}: {len(missing)} key(s) of {what} missing: {show}; {FIX_HINT}")


def _check_files_exist(problems, file, table):
    """Append a problem naming the first few entries whose file does not exist."""
    missing, checked = [], {}
    lines = None
    for key, value in table.items():
        fpath = _rxfile_path(value)
        if fpath is None:
            continue
        if fpath not in checked:
            checked[fpath] = os.path.exists(fpath)
        if not checked[fpath]:
            lines = lines or _lines(table)
            missing.append(f"{file}:{lines[key]}: file not found: {fpath}")
    if missing:
        more = f" (and {len(missing) - 3} more entries with missing files)" if len(missing) > 3 else ""
        problems.extend(missing[:3])
        if more:
            problems[-1] += more


def _check_speakers(problems, dd, spk2utt_file_present):
    f = lambda name: os.path.join(dd.path, name)  # noqa: E731
    lines = None
    bad = [u for u, s in dd.utt2spk.items() if not u.startswith(s)]
    if bad:
        lines = _lines(dd.utt2spk)
        u = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        problems.append(f"{f('utt2spk')}:{lines[u]}: speaker id {dd.utt2spk[u]!r} is not a prefix of utterance id "
                        f"{u!r}{more}; Kaldi needs utterance ids that start with the speaker id")
    gen = utt2spk_to_spk2utt(dd.utt2spk)
    by_spk = [u for utts in gen.values() for u in utts]
    if not bad and by_spk != list(dd.utt2spk):
        i = next(i for i, (a, b) in enumerate(zip(by_spk, dd.utt2spk)) if a != b)
        lines = lines or _lines(dd.utt2spk)
        problems.append(f"{f('utt2spk')}:{lines[by_spk[i]]}: sorting by speaker and by utterance disagree "
                        f"(utterance {by_spk[i]!r} of speaker {dd.utt2spk[by_spk[i]]!r}); make speaker ids "
                        f"prefixes followed by a separator such as '-'")
    if not spk2utt_file_present:
        problems.append(f"{f('spk2utt')}: missing; create it with "
                        f"utils/utt2spk_to_spk2utt.sh < {f('utt2spk')} > {f('spk2utt')}")
        return
    slines = _lines(dd.spk2utt)
    for spk, utts in dd.spk2utt.items():
        if spk not in gen:
            problems.append(f"{f('spk2utt')}:{slines[spk]}: speaker {spk!r} has no utterance in utt2spk; "
                            f"regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")
            break
        if utts != gen[spk]:
            why = ("utterances not in C order or repeated" if sorted(set(utts)) == gen[spk]
                   else f"utt2spk gives {len(gen[spk])} utterance(s) {gen[spk][:3]}")
            problems.append(f"{f('spk2utt')}:{slines[spk]}: speaker {spk!r} disagrees with utt2spk ({why}); "
                            f"regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")
            break
    missing = [s for s in gen if s not in dd.spk2utt]
    if missing:
        problems.append(f"{f('spk2utt')}: speaker(s) of utt2spk missing: {missing[:3]}; "
                        f"regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")


def validate_data_dir(path, *, need_feats=False, need_wav=None, check_files=True) -> DataDir:
    """Check a data dir against Kaldi's rules; return it loaded, or raise DataError listing every problem.

    need_feats: require feats.scp (else it is checked only when present). need_wav: require wav.scp;
    None: required unless feats.scp exists. check_files: the files wav.scp points at (not pipes)
    and the arks of feats.scp must exist.
    """
    dd = load_data_dir(path)
    path = dd.path
    f = lambda name: os.path.join(path, name)  # noqa: E731
    utts = list(dd.utt2spk)
    problems = []
    _check_speakers(problems, dd, os.path.exists(f("spk2utt")))

    if need_wav is None:
        need_wav = dd.feats_scp is None
    if dd.wav_scp is None and need_wav:
        problems.append(f"{f('wav.scp')}: missing (use --no-wav if this dir has features only)")
    if dd.segments is not None:
        _check_keys(problems, f("segments"), dd.segments, utts, "utt2spk")
        lines = _lines(dd.segments)
        for utt, (reco, start, end) in dd.segments.items():
            if not 0 <= start < end:
                problems.append(f"{f('segments')}:{lines[utt]}: need 0 <= start < end, got start={start} end={end}")
                break
        if dd.wav_scp is not None:
            recos = sorted({r for r, _, _ in dd.segments.values()})
            _check_keys(problems, f("wav.scp"), dd.wav_scp, recos, "the recordings of segments")
    elif dd.wav_scp is not None:
        _check_keys(problems, f("wav.scp"), dd.wav_scp, utts, "utt2spk")
    if dd.wav_scp is not None and check_files:
        _check_files_exist(problems, f("wav.scp"), dd.wav_scp)

    if dd.feats_scp is None and need_feats:
        problems.append(f"{f('feats.scp')}: missing (compute features first)")
    if dd.feats_scp is not None:
        _check_keys(problems, f("feats.scp"), dd.feats_scp, utts, "utt2spk")
        if check_files:
            _check_files_exist(problems, f("feats.scp"), dd.feats_scp)

    for name, table in (("text", dd.text), ("utt2cond", dd.utt2cond), ("utt2gender", dd.utt2gender),
                        ("utt2num_frames", dd.utt2num_frames), ("utt2dur", dd.utt2dur)):
        if table is not None:
            _check_keys(problems, f(name), table, utts, "utt2spk")
    for name, table in (("utt2num_frames", dd.utt2num_frames), ("utt2dur", dd.utt2dur)):
        bad = [k for k, v in (table or {}).items() if v <= 0]
        if bad:
            problems.append(f"{f(name)}:{_lines(table)[bad[0]]}: value must be > 0, got {table[bad[0]]}")
    if dd.spk2gender is not None:
        _check_keys(problems, f("spk2gender"), dd.spk2gender, list(utt2spk_to_spk2utt(dd.utt2spk)), "spk2utt")
    for name, table in (("utt2gender", dd.utt2gender), ("spk2gender", dd.spk2gender)):
        bad = [k for k, v in (table or {}).items() if v not in ("m", "f")]
        if bad:
            problems.append(f"{f(name)}:{_lines(table)[bad[0]]}: gender must be 'm' or 'f', got {table[bad[0]]!r}")
    if dd.frame_shift is not None and dd.frame_shift <= 0:
        problems.append(f"{f('frame_shift')}:1: frame shift must be > 0 seconds, got {dd.frame_shift}")

    if problems:
        head = "" if len(problems) == 1 else f"{path}: {len(problems)} problems:\n  "
        raise DataError(head + "\n  ".join(problems))
    log.info("%s: valid data dir (%d utterances, %d speakers)", path, len(utts), len(dd.spk2utt))
    return dd


# ----------------------------------------------------------------------------- subset / fix / split

def _table_names(path):
    """Names of the tables a data dir may hold: the known ones, then its other utt2* / spk2* files."""
    known = UTT_FILES + SPK_FILES + RECO_FILES
    extra = sorted(n for n in os.listdir(path) if n not in known and _EXTRA_TABLE.fullmatch(n)
                   and os.path.isfile(os.path.join(path, n))) if os.path.isdir(path) else []
    return list(known) + extra


def _keyed_by_speaker(name):
    return name in SPK_FILES or name.startswith("spk2")


def _read_raw(path, *, lenient=False):
    """All tables of a data dir (see ``_table_names``) as ``{name: {key: rest-of-line}}`` (spk2utt excluded)."""
    raw = {}
    for name in _table_names(path):
        fp = os.path.join(path, name)
        if name != "spk2utt" and os.path.exists(fp):
            raw[name] = {fields[0]: rest for _, fields, rest in _scan(fp, *_fields_of(name), lenient=lenient)}
    return raw


def _recordings(raw, utts):
    """Keys of wav.scp needed by ``utts``: their recordings if there are segments, else the utts."""
    if "segments" in raw:
        return {raw["segments"][u].split()[0] for u in utts if u in raw["segments"]}
    return set(utts)


def _write_restricted(raw, src, dst, utts):
    """Write every table of ``raw`` restricted to ``utts`` into ``dst``; regenerate spk2utt."""
    os.makedirs(dst, exist_ok=True)
    utt2spk = {u: s for u, s in raw["utt2spk"].items() if u in utts}
    spks = set(utt2spk.values())
    recos = _recordings(raw, utts)
    for name, table in raw.items():
        keep = spks if _keyed_by_speaker(name) else recos if name in RECO_FILES else utts
        write_kv(os.path.join(dst, name), {k: v for k, v in table.items() if k in keep})
    write_kv(os.path.join(dst, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    for name in COPY_FILES:
        if os.path.exists(os.path.join(src, name)) and os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def _remove_stale_tables(raw, src, dst):
    """Delete the known tables in ``dst`` that ``_write_restricted(raw, src, dst, ...)`` will not
    write, so that none is left over from an earlier data dir there."""
    written = set(raw) | {"spk2utt"} | {n for n in COPY_FILES if os.path.exists(os.path.join(src, n))}
    for name in _table_names(dst) + list(COPY_FILES):
        if name not in written and os.path.exists(os.path.join(dst, name)):
            os.unlink(os.path.join(dst, name))


def read_id_list(path) -> List[str]:
    """First field of each line of an id list file (empty lines and repeats skipped)."""
    return [fields[0] for _, fields, _ in _scan(path, 1, None, lenient=True)]


def subset_data_dir(src, dst, *, utts=None, spks=None) -> int:
    """Copy the part of data dir ``src`` with the given utterances and/or speakers to ``dst``.

    Ids not in ``src`` are ignored with a warning. Returns the number of utterances written.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if utts is None and spks is None:
        raise DataError("subset_data_dir: give utts and/or spks")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise DataError(f"subset_data_dir: source and destination are the same dir {src}")
    dd = load_data_dir(src)
    raw = _read_raw(src)
    keep = set(dd.utt2spk)
    for ids, table, what in ((utts, dd.utt2spk, "utterance"), (spks, dd.spk2utt, "speaker")):
        if ids is None:
            continue
        ids = set(ids)
        unknown = [i for i in ids if i not in table]
        if unknown:
            log.warning("%s: %d %s id(s) not in the data dir were ignored, e.g. %r",
                        src, len(unknown), what, min(unknown))
        keep &= ids if what == "utterance" else {u for s in ids if s in table for u in dd.spk2utt[s]}
    if not keep:
        raise DataError(f"subset_data_dir: no utterance of {src} selected")
    _remove_stale_tables(raw, src, dst)
    _write_restricted(raw, src, dst, keep)
    log.info("%s -> %s: %d of %d utterances", src, dst, len(keep), len(dd.utt2spk))
    return len(keep)


# Tables that describe the whole utterance, not a part of it: not carried over to a crop.
_SPAN_FILES = ("feats.scp", "utt2num_frames", "utt2dur", "text", "vad.scp", "cmvn.scp")


def _utterance_spans(dd, src):
    """utt -> (recording, start_s, end_s) from segments, else utt2dur, else the wav files."""
    if dd.segments is not None:
        return dict(dd.segments)
    if dd.wav_scp is None:
        raise DataError(f"{src}: needs wav.scp (and segments or utt2dur) to crop utterances")
    if dd.utt2dur is not None:
        missing = [u for u in dd.utts if u not in dd.utt2dur]
        if missing:
            raise DataError(f"{os.path.join(src, 'utt2dur')}: no duration for {len(missing)} utterance(s), "
                            f"e.g. {missing[0]} ({FIX_HINT})")
        return {u: (u, 0.0, dd.utt2dur[u]) for u in dd.utts}
    from fhvae.io.audio import read_wav_entry  # only needed without segments / utt2dur
    spans = {}
    for lineno, utt in enumerate(sorted(dd.wav_scp), 1):
        if utt in dd.utt2spk:
            n = read_wav_entry(dd.wav_scp[utt], expected_rate=16000,
                               where=f"{os.path.join(src, 'wav.scp')}:{lineno} (utt {utt})").shape[0]
            spans[utt] = (utt, 0.0, n / 16000.0)
    return spans


def crop_data_dir(src, dst, duration) -> int:
    """Write ``dst``: every utterance of ``src`` cut to its central ``duration`` seconds.

    The crop is a Kaldi ``segments`` file (utterance ids unchanged, so trial lists of ``src``
    apply) over ``src``'s recordings; utterances not longer than ``duration`` are kept whole (and
    counted in the log). Spans come from ``src/segments``, else ``src/utt2dur``, else the 16 kHz
    wav files. Tables that describe the whole utterance (feats.scp, text, ...) are not copied:
    compute features for ``dst``. Returns the number of utterances written.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not duration > 0:
        raise DataError(f"crop_data_dir: duration must be > 0 seconds, got {duration}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise DataError(f"crop_data_dir: source and destination are the same dir {src}")
    dd = load_data_dir(src)
    spans = _utterance_spans(dd, src)
    missing = [u for u in dd.utts if u not in spans or (dd.segments is None and u not in dd.wav_scp)]
    if missing:
        raise DataError(f"{src}: {len(missing)} utterance(s) have no recording in wav.scp/segments, "
                        f"e.g. {missing[0]} ({FIX_HINT})")
    raw = {k: v for k, v in _read_raw(src).items() if k not in _SPAN_FILES}
    segments, utt2dur, whole = {}, {}, 0
    for u in dd.utts:
        reco, start, end = spans[u]
        if end - start > duration:
            start = round(start + (end - start - duration) / 2, 3)
            end = round(start + duration, 3)
        else:
            whole += 1
        segments[u] = f"{reco} {start:.3f} {end:.3f}"
        utt2dur[u] = f"{end - start:.3f}"
    if dd.segments is None:  # wav.scp was keyed by utterance; now by recording (same ids)
        raw["wav.scp"] = {u: raw["wav.scp"][u] for u in dd.utts}
    raw["segments"], raw["utt2dur"] = segments, utt2dur
    _remove_stale_tables(raw, src, dst)
    _write_restricted(raw, src, dst, set(dd.utts))
    log.info("%s -> %s: %d utterances cut to their central %.3f s (%d not longer, kept whole)",
             src, dst, len(segments), duration, whole)
    return len(segments)


def fix_data_dir(path) -> Tuple[int, int]:
    """Make a data dir consistent, like Kaldi's fix_data_dir.sh; returns (kept, removed) utterance counts.

    Sorts every table, drops duplicate keys (first kept) and empty lines, keeps only utterances
    present in every per-utterance table (wav.scp via segments, and whose speaker is in
    spk2gender / cmvn.scp if those exist), regenerates spk2utt. Originals go to ``path/.backup/``.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: data directory not found")
    if not os.path.exists(os.path.join(path, "utt2spk")):
        raise DataError(f"{os.path.join(path, 'utt2spk')}: missing (every data dir needs utt2spk)")
    raw = _read_raw(path, lenient=True)
    utt2spk = raw["utt2spk"]
    keep = set(utt2spk)
    reasons = {}

    def restrict(new, why):
        nonlocal keep
        for u in keep - new:
            reasons[u] = why
        keep &= new

    for name in UTT_FILES:
        if name in raw and name != "utt2spk":
            restrict(set(raw[name]), f"not in {name}")
    if "wav.scp" in raw:
        if "segments" in raw:
            restrict({u for u in keep if raw["segments"][u].split()[0] in raw["wav.scp"]},
                     "recording not in wav.scp")
        else:
            restrict(set(raw["wav.scp"]), "not in wav.scp")
    for name in SPK_FILES:
        if name in raw:
            restrict({u for u in keep if utt2spk[u] in raw[name]}, f"speaker not in {name}")
    if not keep:
        raise DataError(f"{path}: no utterance is in all of {', '.join(sorted(raw))}; nothing to keep")

    backup = os.path.join(path, ".backup")
    os.makedirs(backup, exist_ok=True)
    for name in list(raw) + ["spk2utt"]:
        if os.path.exists(os.path.join(path, name)):
            shutil.copy2(os.path.join(path, name), os.path.join(backup, name))
    _write_restricted(raw, path, path, keep)

    removed = sorted(set(utt2spk) - keep)
    if removed:
        by_reason = {}
        for u in removed:
            by_reason.setdefault(reasons[u], []).append(u)
        detail = "; ".join(f"{len(us)} {why} (e.g. {us[0]})" for why, us in sorted(by_reason.items()))
        log.warning("%s: kept %d of %d utterances, removed %d: %s (originals in %s)",
                    path, len(keep), len(utt2spk), len(removed), detail, backup)
    else:
        log.info("%s: kept all %d utterances (files sorted, spk2utt regenerated; originals in %s)",
                 path, len(keep), backup)
    return len(keep), len(removed)


def _balance(spk2utt, nj):
    """Assign speakers to ``nj`` parts, largest first to the lightest part: list of speaker sets."""
    loads = [0] * nj
    parts = [set() for _ in range(nj)]
    for spk in sorted(spk2utt, key=lambda s: (-len(spk2utt[s]), s)):
        j = min(range(nj), key=lambda i: (loads[i], i))
        parts[j].add(spk)
        loads[j] += len(spk2utt[spk])
    return parts


def split_data_dir(path, nj) -> List[str]:
    """Split a data dir by speaker into ``path/split{nj}/{1..nj}``; returns the part dirs.

    Parts are balanced by utterance count and every table is split consistently. ``nj`` larger
    than the number of speakers is clamped (with a warning). An existing split newer than every
    file of ``path`` is reused.
    """
    path = os.fspath(path)
    if int(nj) < 1:
        raise DataError(f"split_data_dir: number of parts must be >= 1, got {nj}")
    nj = int(nj)
    dd = load_data_dir(path)
    if nj > len(dd.spk2utt):
        log.warning("%s: asked for %d parts but there are only %d speakers; using nj=%d",
                    path, nj, len(dd.spk2utt), len(dd.spk2utt))
        nj = len(dd.spk2utt)
    split = os.path.join(path, f"split{nj}")
    parts = [os.path.join(split, str(j)) for j in range(1, nj + 1)]
    done = os.path.join(split, ".done")  # lists the source tables; written last
    names = [n for n in _table_names(path) + list(COPY_FILES) if os.path.exists(os.path.join(path, n))]
    newest = max(os.stat(os.path.join(path, n)).st_mtime_ns for n in names)
    if (os.path.exists(done) and os.stat(done).st_mtime_ns >= newest and all(os.path.isdir(p) for p in parts)
            and _read_text(done).split() == names):
        log.info("%s: reusing up-to-date split in %s", path, split)
        return parts
    raw = _read_raw(path)
    tmp = f"{split}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for j, spks in enumerate(_balance(dd.spk2utt, nj), 1):
        _write_restricted(raw, path, os.path.join(tmp, str(j)), {u for s in spks for u in dd.spk2utt[s]})
    atomic_write_text(os.path.join(tmp, ".done"), "".join(n + "\n" for n in names))
    shutil.rmtree(split, ignore_errors=True)
    os.rename(tmp, split)
    log.info("%s: split into %d parts by speaker in %s", path, nj, split)
    return parts


# ----------------------------------------------------------------------------- trials

def _sample_pairs(rng, n, total, draw, enumerate_all):
    """``n`` distinct pairs out of ``total``: by rejection with ``draw()`` when n is a small share,
    else by sampling the full enumeration."""
    if n > total // 2:
        return set(rng.sample(sorted(enumerate_all()), n))
    out = set()
    while len(out) < n:
        out.add(draw())
    return out


def sample_utts_per_speaker(utt2spk, per_spk, seed=0):
    """{utt: spk} restricted to at most ``per_spk`` utterances of each speaker (seeded random
    choice; speakers with fewer keep all), e.g. to bound the size of a trials list."""
    import random
    rng = random.Random(seed)
    return {u: s for s, us in utt2spk_to_spk2utt(utt2spk).items()
            for u in (us if len(us) <= per_spk else rng.sample(us, per_spk))}


def make_trials(utt2spk, *, n_target=None, n_nontarget=None, seed=0, exclude_same_utt=True):
    """Speaker-verification trials between utterances: ``[(enroll, test, 'target'|'nontarget')]``.

    Each unordered pair appears once, as (first, second) in C order. n_target / n_nontarget: how
    many to draw uniformly without replacement (None: all of them). exclude_same_utt=False adds
    (u, u) target pairs. Output is sorted and depends only on ``seed``.
    """
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    if len(spk2utt) < 2:
        raise DataError(f"make_trials: need at least 2 speakers, got {len(spk2utt)}")
    spks = list(spk2utt)
    self_pairs = not exclude_same_utt
    n_tgt = [len(u) * (len(u) - 1) // 2 + (len(u) if self_pairs else 0) for u in spk2utt.values()]
    order = [u for s in spks for u in spk2utt[s]]  # utts grouped by speaker
    first = {}  # speaker -> index of its first utt in order
    for i, u in enumerate(order):
        first.setdefault(utt2spk[u], i)
    n_utt = len(order)
    n_non = sum(len(u) * (n_utt - len(u)) for u in spk2utt.values()) // 2
    rng = random.Random(seed)

    def all_targets():
        for s in spks:
            us = spk2utt[s]
            for i in range(len(us)):
                for j in range(i if self_pairs else i + 1, len(us)):
                    yield us[i], us[j]

    def all_nontargets():
        for a in range(len(spks)):
            for b in range(a + 1, len(spks)):
                for u in spk2utt[spks[a]]:
                    for v in spk2utt[spks[b]]:
                        yield (u, v) if u < v else (v, u)

    def draw_target():
        s = rng.choices(spks, cum_weights=cum_tgt)[0]
        us = spk2utt[s]
        while True:
            i, j = rng.randrange(len(us)), rng.randrange(len(us))
            if i < j or (i == j and self_pairs):
                return us[i], us[j]

    def draw_nontarget():
        u = order[rng.choices(range(n_utt), cum_weights=cum_non)[0]]
        us = spk2utt[utt2spk[u]]
        k = rng.randrange(n_utt - len(us))  # index among the other speakers' utts
        v = order[k if k < first[utt2spk[u]] else k + len(us)]
        return (u, v) if u < v else (v, u)

    cum_tgt, acc = [], 0
    for c in n_tgt:
        acc += c
        cum_tgt.append(acc)
    cum_non, acc = [], 0
    for u in order:
        acc += n_utt - len(spk2utt[utt2spk[u]])
        cum_non.append(acc)

    total_tgt = sum(n_tgt)
    trials = []
    for n, total, draw, enum, label in ((n_target, total_tgt, draw_target, all_targets, "target"),
                                        (n_nontarget, n_non, draw_nontarget, all_nontargets, "nontarget")):
        if n is None:
            pairs = list(enum())
        else:
            if n < 0 or n > total:
                raise DataError(f"make_trials: asked for {n} {label} trials but only {total} exist")
            pairs = _sample_pairs(rng, n, total, draw, enum)
        trials.extend((a, b, label) for a, b in pairs)
    if n_target is None and total_tgt == 0:
        raise DataError("make_trials: no target trials possible (every speaker has a single utterance)")
    trials.sort()
    return trials


def write_trials(path, trials):
    """Write Kaldi trials ``enroll test target|nontarget``, atomically."""
    atomic_write_text(path, "".join(f"{e} {t} {lab}\n" for e, t, lab in trials))
    n_tgt = sum(t[2] == "target" for t in trials)
    log.info("%s: %d target, %d nontarget trials", path, n_tgt, len(trials) - n_tgt)
