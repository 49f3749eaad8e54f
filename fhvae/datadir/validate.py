"""Check a Kaldi data dir against Kaldi's rules (validate_data_dir.sh), listing every problem.

Errors are :class:`fhvae.errors.DataError` naming ``file:line``.
"""
import logging
import os
import re

from fhvae.datadir.load import DataDir, load_data_dir
from fhvae.errors import DataError
from fhvae.io.tables import FIX_HINT, utt2spk_to_spk2utt

log = logging.getLogger(__name__)


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
