"""Check a Kaldi data dir against Kaldi's rules (validate_data_dir.sh), listing every problem.

Every problem found (format errors in any table, then consistency between tables) is collected
and reported in one :class:`fhvae.errors.DataError`, each naming ``file:line``; after
``MAX_REPORTED`` the rest are counted ("... and N more").
"""
import logging
import os
import re

from fhvae.datadir.load import DataDir, load_data_dir
from fhvae.errors import DataError
from fhvae.io.tables import FIX_HINT, line_numbers, utt2spk_to_spk2utt

log = logging.getLogger(__name__)

MAX_REPORTED = 20


class _Problems:
    """The problems found so far: the first MAX_REPORTED kept, all counted."""

    def __init__(self):
        self.shown, self.count = [], 0

    def append(self, msg):
        self.count += 1
        if len(self.shown) < MAX_REPORTED:
            self.shown.append(msg)

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(self.shown)

    def raise_if_any(self, path):
        if not self.count:
            return
        if self.count == 1:
            raise DataError(self.shown[0])
        more = [f"... and {self.count - len(self.shown)} more"] if self.count > len(self.shown) else []
        raise DataError(f"{path}: {self.count} problems:\n  " + "\n  ".join(self.shown + more))


class _Lines:
    """Line numbers of keys (or of another field) of the data dir's tables, read once per file."""

    def __init__(self):
        self._cache = {}

    def __call__(self, file, key, field=0):
        if (file, field) not in self._cache:
            self._cache[file, field] = line_numbers(file, field)
        return f"{file}:{self._cache[file, field].get(key, '?')}"


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


def _check_keys(problems, lines, file, table, expected, what, src, field=0):
    """A problem for each key of ``table`` not in ``expected``, and one listing the expected keys it
    lacks (with their line in ``src``, whose ``field`` holds them)."""
    exp = set(expected)
    for k in table:
        if k not in exp:
            problems.append(f"{lines(file, k)}: key {k!r} is not in {what}; {FIX_HINT}")
    missing = [k for k in expected if k not in table]
    if missing:
        show = ", ".join(f"{k!r} ({lines(src, k, field)})" for k in missing[:3])
        problems.append(f"{file}: {len(missing)} key(s) of {what} missing: {show}"
                        f"{', ...' if len(missing) > 3 else ''}; {FIX_HINT}")


def _check_files_exist(problems, lines, file, table):
    """A problem for each entry whose file (not a pipe) does not exist."""
    checked = {}
    for key, value in table.items():
        fpath = _rxfile_path(value)
        if fpath is None:
            continue
        if fpath not in checked:
            checked[fpath] = os.path.exists(fpath)
        if not checked[fpath]:
            problems.append(f"{lines(file, key)}: file not found: {fpath}")


def _check_speakers(problems, lines, dd, spk2utt_file_present):
    f = lambda name: os.path.join(dd.path, name)  # noqa: E731
    bad = [u for u, s in dd.utt2spk.items() if not u.startswith(s)]
    for u in bad:
        problems.append(f"{lines(f('utt2spk'), u)}: speaker id {dd.utt2spk[u]!r} is not a prefix of utterance id "
                        f"{u!r}; Kaldi needs utterance ids that start with the speaker id")
    gen = utt2spk_to_spk2utt(dd.utt2spk)
    by_spk = [u for utts in gen.values() for u in utts]
    if not bad and by_spk != sorted(dd.utt2spk):
        i = next(i for i, (a, b) in enumerate(zip(by_spk, sorted(dd.utt2spk))) if a != b)
        problems.append(f"{lines(f('utt2spk'), by_spk[i])}: sorting by speaker and by utterance disagree "
                        f"(utterance {by_spk[i]!r} of speaker {dd.utt2spk[by_spk[i]]!r}); make speaker ids "
                        f"prefixes followed by a separator such as '-'")
    if not spk2utt_file_present:
        problems.append(f"{f('spk2utt')}: missing; create it with "
                        f"utils/utt2spk_to_spk2utt.sh < {f('utt2spk')} > {f('spk2utt')}")
        return
    for spk, utts in dd.spk2utt.items():
        where = lines(f("spk2utt"), spk)
        if spk not in gen:
            problems.append(f"{where}: speaker {spk!r} has no utterance in utt2spk; "
                            f"regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")
        elif utts != gen[spk]:
            why = ("utterances not in C order or repeated" if sorted(set(utts)) == gen[spk]
                   else f"utt2spk gives {len(gen[spk])} utterance(s) {gen[spk][:3]}")
            problems.append(f"{where}: speaker {spk!r} disagrees with utt2spk ({why}); "
                            f"regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")
    missing = [s for s in gen if s not in dd.spk2utt]
    if missing:
        show = ", ".join(f"{s!r} ({lines(f('utt2spk'), s, 1)})" for s in missing[:3])
        problems.append(f"{f('spk2utt')}: speaker(s) of utt2spk missing: {show}"
                        f"{', ...' if len(missing) > 3 else ''}; regenerate spk2utt with utils/utt2spk_to_spk2utt.sh")


def _check_segments(problems, lines, dd, f):
    """Segment times (``0 <= start < end``, or end -1: the end of the recording) and recordings."""
    for utt, (reco, start, end) in dd.segments.items():
        if not (start >= 0 and (start < end or end == -1)):
            problems.append(f"{lines(f('segments'), utt)}: need 0 <= start < end (or end -1 for the end of "
                            f"the recording), got start={start} end={end}")
    if dd.wav_scp is not None:
        recos = sorted({r for r, _, _ in dd.segments.values()})
        _check_keys(problems, lines, f("wav.scp"), dd.wav_scp, recos, "the recordings of segments",
                    f("segments"), 1)


def validate_data_dir(path, *, need_feats=False, need_wav=None, check_files=True) -> DataDir:
    """Check a data dir against Kaldi's rules; return it loaded, or raise DataError listing every problem.

    need_feats: require feats.scp (else it is checked only when present). need_wav: require wav.scp;
    None: required unless feats.scp exists. check_files: the files wav.scp points at (not pipes)
    and the arks of feats.scp must exist.
    """
    problems, lines = _Problems(), _Lines()
    dd = load_data_dir(path, problems)
    path = dd.path
    f = lambda name: os.path.join(path, name)  # noqa: E731
    utts = sorted(dd.utt2spk)
    _check_speakers(problems, lines, dd, os.path.exists(f("spk2utt")))

    if need_wav is None:
        need_wav = dd.feats_scp is None
    if dd.wav_scp is None and need_wav:
        problems.append(f"{f('wav.scp')}: missing (use --no-wav if this dir has features only)")
    if dd.segments is not None:
        _check_keys(problems, lines, f("segments"), dd.segments, utts, "utt2spk", f("utt2spk"))
        _check_segments(problems, lines, dd, f)
    elif dd.wav_scp is not None:
        _check_keys(problems, lines, f("wav.scp"), dd.wav_scp, utts, "utt2spk", f("utt2spk"))
    if dd.wav_scp is not None and check_files:
        _check_files_exist(problems, lines, f("wav.scp"), dd.wav_scp)

    if dd.feats_scp is None and need_feats:
        problems.append(f"{f('feats.scp')}: missing (compute features first)")
    if dd.feats_scp is not None:
        _check_keys(problems, lines, f("feats.scp"), dd.feats_scp, utts, "utt2spk", f("utt2spk"))
        if check_files:
            _check_files_exist(problems, lines, f("feats.scp"), dd.feats_scp)

    for name, table in (("text", dd.text), ("utt2cond", dd.utt2cond), ("utt2gender", dd.utt2gender),
                        ("utt2num_frames", dd.utt2num_frames), ("utt2dur", dd.utt2dur)):
        if table is not None:
            _check_keys(problems, lines, f(name), table, utts, "utt2spk", f("utt2spk"))
    for name, table in (("utt2num_frames", dd.utt2num_frames), ("utt2dur", dd.utt2dur)):
        for k, v in (table or {}).items():
            if v <= 0:
                problems.append(f"{lines(f(name), k)}: value must be > 0, got {v}")
    if dd.spk2gender is not None:
        _check_keys(problems, lines, f("spk2gender"), dd.spk2gender, list(utt2spk_to_spk2utt(dd.utt2spk)),
                    "spk2utt", f("utt2spk"), 1)
    for name, table in (("utt2gender", dd.utt2gender), ("spk2gender", dd.spk2gender)):
        for k, v in (table or {}).items():
            if v not in ("m", "f"):
                problems.append(f"{lines(f(name), k)}: gender must be 'm' or 'f', got {v!r}")
    if dd.frame_shift is not None and dd.frame_shift <= 0:
        problems.append(f"{f('frame_shift')}:1: frame shift must be > 0 seconds, got {dd.frame_shift}")

    problems.raise_if_any(path)
    log.info("%s: valid data dir (%d utterances, %d speakers)", path, len(utts), len(dd.spk2utt))
    return dd
