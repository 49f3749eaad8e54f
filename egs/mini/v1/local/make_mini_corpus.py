#!/usr/bin/env python3
"""Generate the mini corpus: multi-speaker synthetic English with channel conditions and phone alignments.

Everything is a deterministic function of ``--seed`` and the size options (not of ``--nj``):

Speakers
    Each speaker is an espeak-ng English voice (8 dialects: en-GB, en-US, Scottish, Lancaster, RP,
    West Midlands, Caribbean, New York) with a voice variant (+m1..m7 for gender m, +f1..f5 for f),
    a base pitch (espeak 0-100), a pitch range (0-100), a speaking rate (words/min) and a
    vocal-tract-length factor ``vtl`` in [0.85, 1.15]: the 22050 Hz espeak output is treated as if it
    were sampled at 22050 * vtl Hz and resampled to 16 kHz (what ``sox speed vtl`` + ``rate 16k`` does),
    which scales formants and pitch by ``vtl`` and durations by ``1 / vtl``. Gender m/f comes from the
    variant. The parameters are listed in ``<corpus-dir>/speakers.txt``.
Text
    Sentences from a small grammar over ~350 common English words; each utterance is redrawn until
    its audio lasts 1.5-4.0 s.
Channel condition (utt2cond, a sequence-level factor besides the speaker)
    Every utterance first gets a white noise floor 50 dB below its speech power (no digital zeros).
    ``clean``: nothing more. ``noise``: additive pink (1/f) noise at an SNR of 15 dB, where
    SNR = 10 log10(mean speech power / mean noise power) over the whole utterance.
    ``telephone``: 4th-order Butterworth band-pass 300-3400 Hz (zero phase), then 8-bit mu-law.
    Conditions are balanced within each speaker (train and dev parts separately), so condition is not
    confounded with speaker.
Alignments (phones.ctm)
    From libespeak-ng's phoneme events (espeak phoneme mnemonics, with their ``audio_position`` in ms),
    mapped through the vtl factor and the padding; leading/trailing silence and pauses (``_``, ``_:``,
    ...) are ``SIL``. Times are whole milliseconds; the phones of an utterance tile [0, duration).
    ``local/phone_classes.txt`` maps every phone to SON, OBS or SIL.
Audio
    16 kHz, 16-bit mono wav at ``<corpus-dir>/wav/<spk>/<utt>.wav``; lengths are multiples of 10 ms.

Data dirs: ``train`` (``--utts-per-spk`` utterances of each train speaker), ``dev``
(``--num-dev-utts`` more utterances of each train speaker), ``test`` (the test speakers, disjoint from
train) with ``trials`` (all same-speaker pairs as target, as many sampled different-speaker pairs as
nontarget). Each has wav.scp (absolute paths), utt2spk, spk2utt, text, utt2cond, spk2gender, phones.ctm.
A ``.mini_corpus.done`` marker holding the options is written last; a rerun with the same options
and all wav files present does nothing.
"""
import argparse
import ctypes
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.io import wavfile
from tqdm import tqdm

from fhvae.bin import run_cli
from fhvae.errors import DataError, FhvaeError
from fhvae.io.atomic import atomic_open, atomic_write_text

log = logging.getLogger("make_mini_corpus")

VERSION = "mini-corpus-2"  # bump when the generated data changes, so old .done markers are stale
INSTALL_HINT = "run: make debian (or sudo apt-get install espeak-ng sox)"
LIBESPEAK = "libespeak-ng.so.1"
SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
CONDITIONS = ("clean", "noise", "telephone")
NOISE_SNR_DB = 15.0
FLOOR_SNR_DB = 50.0
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MIN_DUR_S, MAX_DUR_S = 1.5, 4.0
LEVEL_DBFS = -26.0  # speech RMS level, +- 2 dB per utterance

DIALECTS = ("gmw/en", "gmw/en-US", "gmw/en-GB-scotland", "gmw/en-GB-x-gbclan", "gmw/en-GB-x-rp",
            "gmw/en-GB-x-gbcwmd", "gmw/en-029", "gmw/en-US-nyc")
VARIANTS = {"m": ("m1", "m2", "m3", "m4", "m5", "m6", "m7"), "f": ("f1", "f2", "f3", "f4", "f5")}
# vtl = 320 / vtl_up: resample_poly(x, vtl_up, 441) maps 22050 * vtl Hz to 16 kHz.
VTL_UP = {"m": (314, 372), "f": (281, 327)}  # m: vtl 0.86-1.02, f: vtl 0.98-1.14

# ----------------------------------------------------------------------------- text

WORDS = {
    "DET": "the a this that every one my your our his her some".split(),
    "ADJ": """big small old new red green blue yellow black white happy quiet loud warm cold bright dark
        early late long short young heavy light soft strong simple clean busy lazy clever gentle brave
        calm empty fresh rich sweet wild tiny huge funny friendly careful famous hungry tired proud
        strange pretty little sharp smooth rough wooden golden silver noisy sunny""".split(),
    "NOUN": """dog cat bird horse fish cow sheep mouse child teacher doctor farmer driver sailor painter
        baker student friend neighbour king queen girl boy man woman family house garden river mountain
        village city road bridge window door table chair kitchen school market station office island
        forest field beach lake ocean ship boat train plane car bus bicycle letter book paper picture
        song story apple orange bread cheese butter milk water coffee cake dinner breakfast lunch
        morning evening summer winter weather rain snow wind storm moon star sky cloud flower tree
        grass stone hill valley street corner shop bottle basket box bag hat coat shoe shirt clock
        watch phone radio camera guitar piano drum ball game party holiday message question answer
        idea plan problem""".split(),
    "VT": """saw found liked painted carried opened closed washed watched visited followed needed wanted
        cleaned cooked bought sold brought took made kept moved pushed pulled lifted dropped counted
        chose caught held built fixed drew wrote read heard touched loved missed helped called met
        forgot remembered showed""".split(),
    "VI": """arrived laughed smiled waited slept walked ran jumped sang danced worked played talked
        listened stopped started returned travelled rested""".split(),
    "ADV": """quickly slowly quietly loudly early today yesterday again often never always suddenly
        carefully happily finally soon later""".split(),
    "PREP": "in on under near behind beside across over through into from with without after before".split(),
    "NAME": """anna peter maria david sarah thomas emma james linda robert julia michael laura daniel nina
        george""".split(),
    "PRON": "he she they we you".split(),
    "CONJ": "and but because so while when".split(),
}
CLAUSES = (
    "DET ADJ NOUN VT DET NOUN",
    "DET NOUN VT DET ADJ NOUN PREP DET NOUN",
    "NAME VT DET NOUN ADV",
    "PRON VI PREP DET ADJ NOUN",
    "DET ADJ NOUN VI ADV",
    "NAME and NAME VT DET ADJ NOUN",
    "PRON VT NAME PREP DET NOUN",
    "DET NOUN PREP DET NOUN VI",
    "PRON ADV VT DET ADJ ADJ NOUN",
)


def make_sentence(rng):
    """One lower-case sentence: a clause, sometimes ``clause, conj clause``. Returns (words, spoken text)."""
    def clause():
        return [rng.choice(WORDS[t]) if t in WORDS else t for t in CLAUSES[rng.integers(len(CLAUSES))].split()]

    words = clause()
    spoken = " ".join(words)
    if rng.random() < 0.25:
        conj, second = rng.choice(WORDS["CONJ"]), clause()
        words = words + [conj] + second
        spoken += f", {conj} " + " ".join(second)
    return [str(w) for w in words], spoken + "."


# ----------------------------------------------------------------------------- speakers

@dataclass
class Speaker:
    """One synthetic speaker; ``vtl`` = 320 / vtl_up is the formant/pitch scale factor."""
    spk: str
    index: int
    part: str  # "train" or "test"
    gender: str
    voice: str  # espeak voice name, e.g. gmw/en-GB-x-rp+f3
    pitch: int
    pitch_range: int
    rate: int  # words per minute
    vtl_up: int

    @property
    def vtl(self):
        return 320.0 / self.vtl_up


def make_speakers(seed, num_train, num_test):
    """Train speakers first, then test speakers; genders alternate m, f; voices drawn without
    replacement from dialect x variant (cycling if more speakers than voices)."""
    rng = np.random.default_rng([seed, 0])
    total = num_train + num_test
    width = max(2, len(str(total)))
    pools = {}
    for g in ("m", "f"):
        combos = [f"{d}+{v}" for d in DIALECTS for v in VARIANTS[g]]
        pools[g] = itertools.cycle([combos[i] for i in rng.permutation(len(combos))])
    speakers = []
    for i in range(total):
        g = "mf"[i % 2]
        lo, hi = VTL_UP[g]
        speakers.append(Speaker(
            spk=f"s{i + 1:0{width}d}{g}", index=i, part="train" if i < num_train else "test", gender=g,
            voice=next(pools[g]), pitch=int(rng.integers(35, 66)), pitch_range=int(rng.integers(30, 81)),
            rate=int(rng.integers(145, 186)), vtl_up=int(rng.integers(lo, hi + 1))))
    return speakers


def utterance_plan(spk, seed, utts_per_spk, num_dev):
    """[(utt, set, condition)] of one speaker; conditions balanced within each set."""
    rng = np.random.default_rng([seed, 1, spk.index])
    parts = [("train" if spk.part == "train" else "test", utts_per_spk)]
    if spk.part == "train" and num_dev > 0:
        parts.append(("dev", num_dev))
    n_total = sum(n for _, n in parts)
    width = max(3, len(str(n_total)))
    plan, k = [], 0
    for set_name, n in parts:
        conds = [CONDITIONS[i % len(CONDITIONS)] for i in rng.permutation(n)]
        for c in conds:
            k += 1
            plan.append((f"{spk.spk}-u{k:0{width}d}", set_name, c))
    return plan


# ----------------------------------------------------------------------------- espeak-ng via ctypes

class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT of speak_lib.h."""
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
POS_CHARACTER = 1
CHARS_UTF8 = 1


def load_libespeak():
    """ctypes handle of libespeak-ng, or FhvaeError saying how to install it."""
    try:
        return ctypes.CDLL(LIBESPEAK)
    except OSError as e:
        raise FhvaeError(f"cannot load {LIBESPEAK} ({e}); {INSTALL_HINT}") from None


class Espeak:
    """libespeak-ng in synchronous mode with phoneme events. One per process: the library is global
    and its output depends on what it synthesized before (see synth_utterance)."""

    def __init__(self):
        self.lib = load_libespeak()
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                          INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise FhvaeError(f"espeak_Initialize failed (returned {rate}, want sample rate {ESPEAK_RATE}): "
                             f"is espeak-ng-data installed? {INSTALL_HINT}")
        self._chunks, self._events = [], []
        self._cb = _CALLBACK(self._collect)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, events):
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events and events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                name = events[i].id.string.decode("utf-8", "replace")  # c_char array: up to the first NUL
                self._events.append((events[i].audio_position, name))
            i += 1
        return 0

    def synth(self, voice, text, rate, pitch, pitch_range):
        """Returns (int16 samples at 22050 Hz, [(start_ms, espeak_phoneme), ...])."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise FhvaeError(f"espeak-ng has no voice {voice!r}; {INSTALL_HINT}")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, value, 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0 or not self._chunks:
            raise FhvaeError(f"espeak_Synth failed (error {err}) for voice {voice!r}, text {text!r}")
        return np.concatenate(self._chunks), self._events


# ----------------------------------------------------------------------------- signal processing

def pink_noise(rng, n):
    """Unit-power pink (1/f power) noise, (n,) float64."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / np.sqrt(np.mean(x ** 2))


_TELEPHONE_SOS = signal.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")


def apply_condition(x, cond, rng):
    """Channel condition on float64 audio in [-1, 1] (see the module doc). Returns a new array."""
    power = np.mean(x ** 2)
    y = x + rng.standard_normal(len(x)) * np.sqrt(power * 10 ** (-FLOOR_SNR_DB / 10))
    if cond == "noise":
        y = y + pink_noise(rng, len(x)) * np.sqrt(power * 10 ** (-NOISE_SNR_DB / 10))
    elif cond == "telephone":
        y = signal.sosfiltfilt(_TELEPHONE_SOS, y)
        mu = 255.0
        c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
        c = np.round(c * 127) / 127  # 8-bit code (255 levels)
        y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    elif cond != "clean":
        raise ValueError(cond)
    return y


def to_int16(y):
    """Float audio -> int16, scaled down if it would clip (peak at most 0.99 of full scale)."""
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return np.round(y * 32767).astype(np.int16)


# ----------------------------------------------------------------------------- one utterance

def tile_phones(events, n22, vtl, lead_ms, total_ms):
    """Phone tiling of the output utterance in whole ms: [(start_ms, end_ms, phone)].

    events: [(ms in the espeak audio, espeak phoneme)]; each phone lasts until the next event, the last
    until the end of the espeak audio (n22 samples at 22050 Hz); before and after that, padding.
    Pauses (``_``, ``_:``, ...) and padding are SIL; empty phones are dropped, adjacent SILs merged.
    """
    espeak_ms = 1000.0 * n22 / ESPEAK_RATE
    ev = [(t, "SIL" if p.startswith("_") else p) for t, p in events if 0 <= t < espeak_ms]
    if not ev or ev[0][0] > 0:
        ev.insert(0, (0, "SIL"))
    to_out = lambda t: min(total_ms, int(round(lead_ms + t / vtl)))  # noqa: E731
    starts = [0] + [to_out(t) for t, _ in ev] + [to_out(espeak_ms)]
    labels = ["SIL"] + [p for _, p in ev] + ["SIL"]
    ends = starts[1:] + [total_ms]
    out = []
    for s, e, p in zip(starts, ends, labels):
        if e <= s:
            continue
        if out and p == "SIL" and out[-1][2] == "SIL":
            out[-1] = (out[-1][0], e, "SIL")
        else:
            out.append((s, e, p))
    return out


def make_utterance(tts, spk, utt, cond, seed, known_phones):
    """Synthesize one utterance: returns (int16 audio at 16 kHz, words, phone tiling in ms)."""
    rng = np.random.default_rng([seed, 2, spk.index, int(utt.rsplit("-u", 1)[1])])
    rate_jit, pitch_jit = int(rng.integers(-8, 9)), int(rng.integers(-3, 4))
    lead_ms, tail_ms = int(rng.integers(100, 301)), int(rng.integers(100, 301))
    gain_db = LEVEL_DBFS + rng.uniform(-2.0, 2.0)
    for _ in range(100):
        words, spoken = make_sentence(rng)
        x22, events = tts.synth(spk.voice, spoken, spk.rate + rate_jit, spk.pitch + pitch_jit, spk.pitch_range)
        n16 = -(-len(x22) * spk.vtl_up // 441)
        total = lead_ms * 16 + n16 + tail_ms * 16
        total = -(-total // 160) * 160  # whole 10 ms
        if MIN_DUR_S <= total / SAMPLE_RATE <= MAX_DUR_S:
            break
    else:
        raise FhvaeError(f"{utt}: no sentence of 1.5-4 s in 100 tries (voice {spk.voice}, rate {spk.rate})")
    unknown = sorted({p for _, p in events if not p.startswith("_") and p not in known_phones})
    if unknown:
        raise FhvaeError(f"{utt}: espeak phoneme(s) {unknown} missing from local/phone_classes.txt "
                         f"(voice {spk.voice}); add them with their class SON, OBS or SIL")
    speech = signal.resample_poly(x22.astype(np.float64) / 32768.0, spk.vtl_up, 441)
    x = np.zeros(total)
    x[lead_ms * 16: lead_ms * 16 + len(speech)] = speech
    x *= 10 ** (gain_db / 20) / np.sqrt(np.mean(x ** 2))
    audio = to_int16(apply_condition(x, cond, rng))
    phones = tile_phones(events, len(x22), spk.vtl, lead_ms, total // 16)
    return audio, words, phones


def _forked_child(fn, job, conn):
    """Body of a fork_each worker: sends (True, fn(job)) or (False, the exception) and exits."""
    try:
        result = (True, fn(job))
    except BaseException as e:  # noqa: BLE001 -- reported to, and raised in, the parent
        result = (False, e)
    try:
        conn.send(result)
    except Exception as e:  # an unpicklable exception: send its text
        conn.send((False, FhvaeError(f"{type(result[1]).__name__}: {result[1]} ({e})")))
    conn.close()


def fork_each(fn, jobs, nj):
    """Yields fn(job) for every job (in completion order), each job in a fresh process forked from
    the calling (main) thread, at most ``nj`` at a time.

    Unlike multiprocessing.Pool(maxtasksperchild=1), which forks replacement workers from its
    worker-handler thread, every process here starts from the same thread's state (see
    synth_utterance). An exception in a job is raised here after the running jobs are stopped; a
    job whose process dies without a result (a crash in libespeak-ng, a kill) raises FhvaeError.
    """
    ctx = multiprocessing.get_context("fork")
    pending, running = list(reversed(jobs)), {}
    try:
        while pending or running:
            while pending and len(running) < nj:
                job = pending.pop()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_forked_child, args=(fn, job, send), daemon=True)
                proc.start()
                send.close()
                running[recv] = (proc, job)
            for recv in multiprocessing.connection.wait(list(running)):
                proc, job = running.pop(recv)
                try:
                    ok, value = recv.recv()
                except EOFError:
                    proc.join()
                    raise FhvaeError(f"a worker process exited with code {proc.exitcode} "
                                     f"without a result for job {job!r:.200}") from None
                recv.close()
                proc.join()
                if not ok:
                    raise value
                yield value
    finally:
        for recv, (proc, _) in running.items():
            proc.terminate()
            proc.join()
            recv.close()


def synth_utterance(job):
    """Worker: one utterance, written as a wav file; returns its metadata.

    libespeak-ng keeps state between syntheses (its output for a text depends on what it
    synthesized before, and its noise sources use the C library's rand()), so every utterance runs
    in a fresh process (``fork_each``) with rand() seeded from (seed, speaker, utterance): no
    utterance depends on another, on --nj or on scheduling. (Checked with espeak-ng 1.51: of the
    corpus's voices only the breathy variants +f2, +f3, +f5 read rand() -- the same text in +m1..m7,
    +f1, +f4 gives the same samples for any rand() state; espeak_Initialize and espeak_SetVoiceByName
    call no rand() and synchronous synthesis no gettimeofday(); an LD_PRELOAD counter of rand() calls
    saw them only in the processes synthesizing breathy voices, none in the main process. So a corpus
    whose +f2 speakers alone differ between two runs, as in the one unexplained fresh-clone failure,
    had its rand() stream perturbed. In that failure (per-speaker workers of a multiprocessing.Pool
    then) the one +f2 speaker that differed was the only one whose worker was forked from the main
    thread in one run (--nj 2: one of the first two workers) and from the pool's worker-handler thread
    in the other (--nj 1). Forking from either thread gives the same audio on the machines tried, and
    so do garbage heap and stack (+f2, +f5, +m3 synthesized under MALLOC_PERTURB_ 0/1/85/170/255, and
    after filling 512 KiB of stack with 4 patterns, in the main thread or another), so that lead is
    unconfirmed; ``fork_each`` removes it anyway: every worker is forked from the main thread, so all
    start from the same per-thread state (stack, thread-local storage, floating-point environment).)
    """
    spk, (utt, set_name, cond), seed, wav_dir, known_phones = job
    k = int(utt.rsplit("-u", 1)[1])
    ctypes.CDLL("libc.so.6").srand((seed * 1_000_003 + spk.index * 10_007 + k) % 2 ** 32)
    audio, words, phones = make_utterance(Espeak(), spk, utt, cond, seed, known_phones)
    path = os.path.join(wav_dir, spk.spk, f"{utt}.wav")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path, "wb") as f:
        wavfile.write(f, SAMPLE_RATE, audio)
    return dict(utt=utt, spk=spk.spk, set=set_name, cond=cond, words=words, phones=phones, wav=path,
                n=len(audio))


# ----------------------------------------------------------------------------- data dirs

def read_phone_classes(path):
    """``<phone> <class>`` lines -> {phone: class}; class must be SON, OBS or SIL."""
    out = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    for i, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("SON", "OBS", "SIL"):
            raise DataError(f"{path}:{i}: expected '<phone> SON|OBS|SIL', got {line!r}")
        if fields[0] in out:
            raise DataError(f"{path}:{i}: duplicate phone {fields[0]!r}")
        out[fields[0]] = fields[1]
    if out.get("SIL") != "SIL":
        raise DataError(f"{path}: needs the line 'SIL SIL'")
    return out


def make_trials(utt2spk, seed):
    """All same-speaker pairs (target) and as many sampled different-speaker pairs (nontarget).

    Pairs are (a, b) with a < b in C order; returns sorted lines ``enroll test target|nontarget``.
    """
    utts = sorted(utt2spk)
    spk = [utt2spk[u] for u in utts]
    n = len(utts)
    target = [(i, j) for i in range(n) for j in range(i + 1, n) if spk[i] == spk[j]]
    n_non_all = n * (n - 1) // 2 - len(target)
    want = min(len(target), n_non_all)
    rng = np.random.default_rng([seed, 3])
    if n_non_all <= 4 * want:
        pool = [(i, j) for i in range(n) for j in range(i + 1, n) if spk[i] != spk[j]]
        nontarget = [pool[k] for k in rng.choice(len(pool), size=want, replace=False)]
    else:
        chosen = set()
        while len(chosen) < want:
            i, j = (int(v) for v in rng.integers(n, size=2))
            if spk[i] != spk[j]:
                chosen.add((min(i, j), max(i, j)))
        nontarget = list(chosen)
    lines = [f"{utts[i]} {utts[j]} target" for i, j in target]
    lines += [f"{utts[i]} {utts[j]} nontarget" for i, j in nontarget]
    return sorted(lines)


def write_data_dir(path, records, speakers, trials_seed=None):
    """Kaldi data dir from utterance records (sorted under LC_ALL=C: ids are ASCII)."""
    records = sorted(records, key=lambda r: r["utt"])
    gender = {s.spk: s.gender for s in speakers}
    spk2utt = {}
    for r in records:
        spk2utt.setdefault(r["spk"], []).append(r["utt"])

    def table(rows):
        return "".join(f"{k} {v}\n" for k, v in rows)

    os.makedirs(path, exist_ok=True)
    files = {
        "wav.scp": table((r["utt"], os.path.abspath(r["wav"])) for r in records),
        "utt2spk": table((r["utt"], r["spk"]) for r in records),
        "spk2utt": table((s, " ".join(u)) for s, u in sorted(spk2utt.items())),
        "text": table((r["utt"], " ".join(r["words"])) for r in records),
        "utt2cond": table((r["utt"], r["cond"]) for r in records),
        "spk2gender": table((s, gender[s]) for s in sorted(spk2utt)),
        "phones.ctm": "".join(f"{r['utt']} 1 {s / 1000:.3f} {(e - s) / 1000:.3f} {p}\n"
                              for r in records for s, e, p in r["phones"]),
    }
    if trials_seed is not None:
        files["trials"] = "".join(line + "\n" for line in
                                  make_trials({r["utt"]: r["spk"] for r in records}, trials_seed))
    for name, text in files.items():
        atomic_write_text(os.path.join(path, name), text)


def _complete(data_dir, sets, marker, stamp):
    """True if the marker holds ``stamp`` and every wav.scp entry of ``sets`` exists."""
    try:
        with open(marker, encoding="utf-8") as f:
            if f.read() != stamp:
                return False
        for s in sets:
            with open(os.path.join(data_dir, s, "wav.scp"), encoding="utf-8") as f:
                if not all(os.path.isfile(line.split(None, 1)[1].strip()) for line in f):
                    return False
    except (OSError, IndexError):
        return False
    return True


def make_corpus(corpus_dir, data_dir, *, seed=1, num_train_spk=24, num_test_spk=16, utts_per_spk=30,
                num_dev_utts=4, nj=2, phone_classes=None):
    """Generate audio under ``corpus_dir/wav`` and data dirs ``data_dir/{train,dev,test}``.

    Returns False if the outputs were already complete (nothing done), True otherwise.
    """
    if num_train_spk < 1 or num_test_spk < 2 or utts_per_spk < len(CONDITIONS) or num_dev_utts < 0:
        raise FhvaeError("need --num-train-spk >= 1, --num-test-spk >= 2 (for nontarget trials), "
                         f"--utts-per-spk >= {len(CONDITIONS)} (one per condition), --num-dev-utts >= 0")
    if phone_classes is None:
        phone_classes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "phone_classes.txt")
    known_phones = read_phone_classes(phone_classes)
    corpus_dir, data_dir = os.path.abspath(corpus_dir), os.path.abspath(data_dir)
    marker = os.path.join(data_dir, ".mini_corpus.done")
    stamp = (f"{VERSION} seed={seed} num_train_spk={num_train_spk} num_test_spk={num_test_spk} "
             f"utts_per_spk={utts_per_spk} num_dev_utts={num_dev_utts} corpus_dir={corpus_dir}\n")
    sets = ("train", "dev", "test") if num_dev_utts > 0 else ("train", "test")
    if _complete(data_dir, sets, marker, stamp):
        log.info("%s is complete for these options (%s): nothing to do", data_dir, marker)
        return False
    load_libespeak()  # fail early with the install hint

    speakers = make_speakers(seed, num_train_spk, num_test_spk)
    wav_dir = os.path.join(corpus_dir, "wav")
    # round robin over the speakers: a run with another --nj (tests/test_mini_corpus.py) changes which
    # utterances run at the same time, for every speaker from the first utterances on
    plans = [[(s, u, seed, wav_dir, known_phones) for u in utterance_plan(s, seed, utts_per_spk, num_dev_utts)]
             for s in speakers]
    jobs = [job for row in itertools.zip_longest(*plans) for job in row if job is not None]
    n_utts = len(jobs)
    nj = max(1, min(nj, len(jobs)))
    log.info("synthesizing %d utterances of %d speakers (%d train, %d test) with %d jobs into %s",
             n_utts, len(speakers), num_train_spk, num_test_spk, nj, wav_dir)
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(wav_dir):
        shutil.rmtree(wav_dir)  # no stale speakers of an older corpus
    records = []
    for rec in tqdm(fork_each(synth_utterance, jobs, nj), total=len(jobs), desc="synthesize", unit="utt",
                    mininterval=5.0):
        records.append(rec)

    atomic_write_text(os.path.join(corpus_dir, "speakers.txt"), "".join(
        f"{s.spk} part={s.part} gender={s.gender} voice={s.voice} pitch={s.pitch} range={s.pitch_range} "
        f"rate={s.rate} vtl={s.vtl:.4f}\n" for s in speakers))
    for set_name in ("train", "dev", "test"):
        path = os.path.join(data_dir, set_name)
        if os.path.isdir(path):
            shutil.rmtree(path)  # drop tables (e.g. feats.scp) of an older corpus
        recs = [r for r in records if r["set"] == set_name]
        if recs:
            write_data_dir(path, recs, speakers, trials_seed=seed if set_name == "test" else None)
            log.info("wrote %s (%d utterances, %.1f min)", path, len(recs),
                     sum(r["n"] for r in recs) / SAMPLE_RATE / 60)
    atomic_write_text(marker, stamp)
    return True


def _main(argv):
    p = argparse.ArgumentParser(
        prog="make_mini_corpus.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\nSee the top of this file for what is generated.",
        epilog="example:\n  local/make_mini_corpus.py --seed 1 --nj 2 corpus data")
    p.add_argument("corpus_dir", help="audio goes to <corpus-dir>/wav/<spk>/<utt>.wav")
    p.add_argument("data_dir", help="Kaldi data dirs go to <data-dir>/{train,dev,test}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-train-spk", type=int, default=24)
    p.add_argument("--num-test-spk", type=int, default=16)
    p.add_argument("--utts-per-spk", type=int, default=30, help="utterances per speaker in train / test")
    p.add_argument("--num-dev-utts", type=int, default=4, help="extra utterances per train speaker, in dev")
    p.add_argument("--nj", type=int, default=os.cpu_count() or 1, help="parallel synthesis processes")
    p.add_argument("--phone-classes", default=None, help="default: phone_classes.txt beside this script")
    a = p.parse_args(argv)
    make_corpus(a.corpus_dir, a.data_dir, seed=a.seed, num_train_spk=a.num_train_spk, num_test_spk=a.num_test_spk,
                utts_per_spk=a.utts_per_spk, num_dev_utts=a.num_dev_utts, nj=a.nj, phone_classes=a.phone_classes)
    return 0


if __name__ == "__main__":
    run_cli("make_mini_corpus.py", _main, sys.argv[1:])
