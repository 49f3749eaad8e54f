"""Edit Kaldi data dirs, keeping every table consistent: subset, crop, fix (like
fix_data_dir.sh) and split by speaker.

Errors are :class:`fhvae.errors.DataError` naming the data dir or ``file:line``.
"""
import logging
import os
import re
import shutil
from typing import List, Tuple

from fhvae.datadir.load import (COPY_FILES, RECO_FILES, SPK_FILES, UTT_FILES, fields_of, load_data_dir,
                                read_text)
from fhvae.errors import DataError
from fhvae.io.atomic import atomic_write_text
from fhvae.io.tables import FIX_HINT, line_numbers, scan_table, utt2spk_to_spk2utt, write_kv

log = logging.getLogger(__name__)

# Any other text table named utt2<x> / spk2<x> (utt2mic, utt2noise, spk2accent, ...; optionally
# .scp) is carried through subset / crop / split / fix with the same keys, as Kaldi's
# --utt-extra-files: filtered to the kept utterances or speakers, never used to drop one.
_EXTRA_TABLE = re.compile(r"(utt|spk)2[A-Za-z0-9_]+(\.scp)?")


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
            raw[name] = {fields[0]: rest for _, fields, rest in scan_table(fp, *fields_of(name), lenient=lenient)}
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


def _wav_seconds(dd, src, keys, what):
    """Duration in seconds of the 16 kHz wav.scp entries ``keys`` (``what``: 'utt' or 'recording')."""
    from fhvae.io.audio import read_wav_entry  # only needed without segments / utt2dur
    wav_scp = os.path.join(src, "wav.scp")
    missing = [k for k in keys if dd.wav_scp is None or k not in dd.wav_scp]
    if missing:
        raise DataError(f"{wav_scp}: no entry for {len(missing)} {what}(s), e.g. {missing[0]} ({FIX_HINT})")
    lines = line_numbers(wav_scp)
    return {k: read_wav_entry(dd.wav_scp[k], expected_rate=16000,
                              where=f"{wav_scp}:{lines.get(k, '?')} ({what} {k})").shape[0] / 16000.0
            for k in keys}


def _utterance_spans(dd, src):
    """utt -> (recording, start_s, end_s) from segments (an end of -1 resolved to the recording's
    end), else utt2dur, else the wav files."""
    if dd.segments is not None:
        to_end = sorted({r for r, _, end in dd.segments.values() if end == -1})
        secs = _wav_seconds(dd, src, to_end, "recording") if to_end else {}
        return {u: (r, start, secs[r] if end == -1 else end) for u, (r, start, end) in dd.segments.items()}
    if dd.wav_scp is None:
        raise DataError(f"{src}: needs wav.scp (and segments or utt2dur) to crop utterances")
    if dd.utt2dur is not None:
        missing = [u for u in dd.utts if u not in dd.utt2dur]
        if missing:
            raise DataError(f"{os.path.join(src, 'utt2dur')}: no duration for {len(missing)} utterance(s), "
                            f"e.g. {missing[0]} ({FIX_HINT})")
        return {u: (u, 0.0, dd.utt2dur[u]) for u in dd.utts}
    secs = _wav_seconds(dd, src, [u for u in sorted(dd.wav_scp) if u in dd.utt2spk], "utt")
    return {u: (u, 0.0, n) for u, n in secs.items()}


def crop_data_dir(src, dst, duration) -> int:
    """Write ``dst``: every utterance of ``src`` cut to its central ``duration`` seconds.

    The crop is a Kaldi ``segments`` file (utterance ids unchanged, so trial lists of ``src``
    apply) over ``src``'s recordings; utterances not longer than ``duration`` are kept whole (and
    counted in the log). Spans come from ``src/segments`` (an end of -1, Kaldi's "to the end of the
    recording", is read from the 16 kHz wav), else ``src/utt2dur``, else the 16 kHz wav files. Tables that describe the whole utterance (feats.scp, text, ...) are not copied:
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
    Logs, per table, the lines it dropped and why (e.g. ``wav.scp: dropped 1 line (utt 'x' has
    no utt2spk entry)``).
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
            restrict(set(raw[name]), (f"is not in {name}", f"are not in {name}"))
    if "wav.scp" in raw:
        if "segments" in raw:
            restrict({u for u in keep if raw["segments"][u].split()[0] in raw["wav.scp"]},
                     ("has no recording in wav.scp", "have no recording in wav.scp"))
        else:
            restrict(set(raw["wav.scp"]), ("is not in wav.scp", "are not in wav.scp"))
    for name in SPK_FILES:
        if name in raw:
            restrict({u for u in keep if utt2spk[u] in raw[name]},
                     (f"has a speaker not in {name}", f"have speakers not in {name}"))
    if not keep:
        raise DataError(f"{path}: no utterance is in all of {', '.join(sorted(raw))}; nothing to keep")

    backup = os.path.join(path, ".backup")
    os.makedirs(backup, exist_ok=True)
    for name in list(raw) + ["spk2utt"]:
        if os.path.exists(os.path.join(path, name)):
            shutil.copy2(os.path.join(path, name), os.path.join(backup, name))
    _write_restricted(raw, path, path, keep)

    removed = sorted(set(utt2spk) - keep)
    dropped = _dropped_lines(raw, keep, reasons)
    if removed or dropped:
        head = f"kept {len(keep)} of {len(utt2spk)} utterances" if removed else f"kept all {len(keep)} utterances"
        log.warning("%s: %s (originals in %s):\n  %s", path, head, backup, "\n  ".join(dropped))
    else:
        log.info("%s: kept all %d utterances (files sorted, spk2utt regenerated; originals in %s)",
                 path, len(keep), backup)
    return len(keep), len(removed)


def _dropped_lines(raw, keep, reasons):
    """One line per table of ``raw`` that fix_data_dir shrinks: what it dropped, and why.

    ``reasons``: utterance -> (singular, plural) verb phrase, for kept-out utterances of utt2spk.
    """
    utt2spk = raw["utt2spk"]
    spks = {utt2spk[u] for u in keep}
    recos = _recordings(raw, keep)
    used = _recordings(raw, utt2spk)
    out = []
    for name, table in raw.items():
        by_reason = {}
        for k in sorted(table):
            if _keyed_by_speaker(name):
                what, ok, why = "speaker", k in spks, ("has no kept utterance", "have no kept utterance")
            elif name in RECO_FILES and "segments" in raw:
                what, ok = "recording", k in recos
                why = (("is used by no kept utterance", "are used by no kept utterance") if k in used else
                       ("is in no segment", "are in no segment"))
            else:
                what, ok = "utt", k in keep
                why = reasons.get(k, ("has no utt2spk entry", "have no utt2spk entry"))
            if not ok:
                by_reason.setdefault((what, why), []).append(k)
        if by_reason:
            n = sum(len(ks) for ks in by_reason.values())
            parts = [f"{what} {ks[0]!r} {why[0]}" if len(ks) == 1 else f"{len(ks)} {what}s {why[1]}, e.g. {ks[0]!r}"
                     for (what, why), ks in by_reason.items()]
            out.append(f"{name}: dropped {n} line{'s' if n > 1 else ''} ({'; '.join(parts)})")
    return out


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
            and read_text(done).split() == names):
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
