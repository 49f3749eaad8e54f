"""TIMIT phone labels for the TIMIT recipe: the ``.PHN`` reader, folding 61 -> 48 -> 39 phones, broad classes.

Folding is the standard one of Lee & Hon (1989), as in Kaldi's ``egs/timit/s5/conf/phones.60-48-39.map``
(this recipe's ``conf/phones.60-48-39.map`` is written from :data:`FOLD`): the glottal stop
``q`` is deleted (folds to None), closures fold to ``vcl``/``cl`` (48) and ``sil`` (39), etc.

Broad classes (for colour-coding t-SNE plots and probes, as in the paper's Fig. 3), over the 61
TIMIT symbols and the folded 48/39 symbols:

    SON  sonorants: vowels, semivowels/glides (l r w y el), nasals (m n ng em en eng nx)
    OBS  obstruents: stops (b d g p t k dx q), affricates (ch jh), fricatives (s sh z zh f th v dh hh hv)
    SIL  silence and closures: h# pau epi bcl dcl gcl pcl tcl kcl (48/39: sil vcl cl epi)

``hh``/``hv`` are voiceless/voiced glottal fricatives, hence obstruents (TIMIT's documentation lists
them with the glides); the flap ``dx`` and the glottal stop ``q`` are stops.
"""
from typing import Dict, List, Optional, Tuple

from fhvae.errors import DataError

SAMPLE_RATE = 16000  # TIMIT .PHN times are sample indices at 16 kHz

# 61 TIMIT phone -> (48-phone, 39-phone); q is deleted (None).
FOLD: Dict[str, Optional[Tuple[str, str]]] = {
    "aa": ("aa", "aa"), "ae": ("ae", "ae"), "ah": ("ah", "ah"), "ao": ("ao", "aa"), "aw": ("aw", "aw"),
    "ax": ("ax", "ah"), "ax-h": ("ax", "ah"), "axr": ("er", "er"), "ay": ("ay", "ay"), "b": ("b", "b"),
    "bcl": ("vcl", "sil"), "ch": ("ch", "ch"), "d": ("d", "d"), "dcl": ("vcl", "sil"), "dh": ("dh", "dh"),
    "dx": ("dx", "dx"), "eh": ("eh", "eh"), "el": ("el", "l"), "em": ("m", "m"), "en": ("en", "n"),
    "eng": ("ng", "ng"), "epi": ("epi", "sil"), "er": ("er", "er"), "ey": ("ey", "ey"), "f": ("f", "f"),
    "g": ("g", "g"), "gcl": ("vcl", "sil"), "h#": ("sil", "sil"), "hh": ("hh", "hh"), "hv": ("hh", "hh"),
    "ih": ("ih", "ih"), "ix": ("ix", "ih"), "iy": ("iy", "iy"), "jh": ("jh", "jh"), "k": ("k", "k"),
    "kcl": ("cl", "sil"), "l": ("l", "l"), "m": ("m", "m"), "n": ("n", "n"), "ng": ("ng", "ng"),
    "nx": ("n", "n"), "ow": ("ow", "ow"), "oy": ("oy", "oy"), "p": ("p", "p"), "pau": ("sil", "sil"),
    "pcl": ("cl", "sil"), "q": None, "r": ("r", "r"), "s": ("s", "s"), "sh": ("sh", "sh"), "t": ("t", "t"),
    "tcl": ("cl", "sil"), "th": ("th", "th"), "uh": ("uh", "uh"), "uw": ("uw", "uw"), "ux": ("uw", "uw"),
    "v": ("v", "v"), "w": ("w", "w"), "y": ("y", "y"), "z": ("z", "z"), "zh": ("zh", "sh"),
}
TIMIT_PHONES = tuple(sorted(FOLD))  # the 61 symbols of the .PHN files

_SIL = ("h#", "pau", "epi", "bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "sil", "vcl", "cl")
_OBS = ("b", "d", "g", "p", "t", "k", "dx", "q", "ch", "jh", "s", "sh", "z", "zh", "f", "th", "v", "dh",
        "hh", "hv")
# Every 61/48/39 symbol -> SON | OBS | SIL (everything not silence or obstruent is a sonorant).
PHONE_CLASS: Dict[str, str] = {
    p: "SIL" if p in _SIL else "OBS" if p in _OBS else "SON"
    for p in sorted(set(FOLD) | {f[i] for f in FOLD.values() if f for i in (0, 1)})
}


def fold(phone: str, n: int = 39) -> Optional[str]:
    """A 61-set TIMIT phone folded to the ``n``-phone set (61, 48 or 39); None for ``q`` (deleted)."""
    if n not in (61, 48, 39):
        raise ValueError(f"phone set size must be 61, 48 or 39, got {n}")
    if phone not in FOLD:
        raise KeyError(f"unknown TIMIT phone {phone!r}")
    if n == 61:
        return phone
    f = FOLD[phone]
    return None if f is None else f[0] if n == 48 else f[1]


def phone_set(n: int = 39) -> List[str]:
    """The sorted symbols of the 61-, 48- or 39-phone set (61 includes q; 48 and 39 do not)."""
    return sorted({fold(p, n) for p in FOLD} - {None})


def phone_class(phone: str) -> str:
    """SON, OBS or SIL for a 61-, 48- or 39-set symbol."""
    try:
        return PHONE_CLASS[phone]
    except KeyError:
        raise KeyError(f"unknown TIMIT phone {phone!r}") from None


def read_phn(path) -> List[Tuple[int, int, str]]:
    """Read a TIMIT ``.PHN`` file: lines ``<begin-sample> <end-sample> <phone>`` (16 kHz samples).

    Returns [(begin, end, phone)] in file order, phones lower-cased. DataError naming ``path:line``
    for a missing/unreadable file, a malformed line, begin > end, times going backwards or an
    unknown phone; an empty file is an error too.
    """
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not an ASCII .PHN file (byte {e.start})") from None
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != 3:
            raise DataError(f"{where}: expected '<begin-sample> <end-sample> <phone>', got {line.strip()!r}")
        try:
            begin, end = int(fields[0]), int(fields[1])
        except ValueError:
            raise DataError(f"{where}: sample indices must be integers, got {fields[0]!r} {fields[1]!r}") from None
        phone = fields[2].lower()
        if begin < 0 or begin > end:
            raise DataError(f"{where}: need 0 <= begin <= end, got {begin} {end}")
        if out and begin < out[-1][0]:
            raise DataError(f"{where}: begins at sample {begin}, before the previous phone ({out[-1][0]})")
        if phone not in FOLD:
            raise DataError(f"{where}: unknown TIMIT phone {fields[2]!r} (known: {' '.join(TIMIT_PHONES)})")
        out.append((begin, end, phone))
    if not out:
        raise DataError(f"{path}: no phones (empty .PHN file)")
    return out


def _seconds(samples, rate):
    """Exact decimal seconds of a sample index, without trailing zeros (37530 -> '2.345625')."""
    s = f"{samples / rate:.7f}".rstrip("0").rstrip(".")
    return s or "0"


def phn_to_ctm(utt: str, phones, rate: int = SAMPLE_RATE) -> List[str]:
    """CTM lines ``<utt> 1 <start_s> <dur_s> <phone>`` (with newline) for read_phn's output."""
    return [f"{utt} 1 {_seconds(b, rate)} {_seconds(e - b, rate)} {p}\n" for b, e, p in phones]


def fold_map_text() -> str:
    """Kaldi's ``phones.60-48-39.map`` format: ``<61> <48> <39>`` per line, ``q`` alone (deleted)."""
    return "".join(f"{p}\t{FOLD[p][0]}\t{FOLD[p][1]}\n" if FOLD[p] else f"{p}\n" for p in TIMIT_PHONES)


def phone_classes_text() -> str:
    """``<phone> <class>`` lines for every 61/48/39 symbol (the file fhvae-plot/probe read)."""
    return "".join(f"{p} {c}\n" for p, c in PHONE_CLASS.items())
