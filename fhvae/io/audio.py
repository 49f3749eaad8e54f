"""Reading audio named by Kaldi ``wav.scp`` entries (files or ``... |`` pipe commands).

Samples come back as float32 mono in [-1, 1] (16-bit PCM is divided by 32768). Supported WAV
encodings: 8/16/24/32-bit integer PCM and 32/64-bit float (via ``scipy.io.wavfile``). NIST
SPHERE (TIMIT, WSJ) must go through a pipe, e.g. ``sph2pipe -f wav FILE |``.
"""
import contextlib
import io
import logging
import os
import subprocess
import warnings

import numpy as np
from scipy.io import wavfile

from fhvae.errors import DataError

log = logging.getLogger(__name__)

# Kaldi's extract-segments tolerates segment ends this far past the recording (clipped).
MAX_SEGMENT_OVERSHOOT_S = 0.5


def _where(where, msg):
    return f"{where}: {msg}" if where else msg


def _run_pipe(command, where):
    """stdout bytes of a wav.scp pipe command (without its trailing '|'), run by bash."""
    try:
        proc = subprocess.run(["bash", "-c", "set -o pipefail; " + command],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise DataError(_where(where, f"cannot run command {command!r}: {e}")) from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise DataError(_where(where, f"command {command!r} failed with exit status "
                                      f"{proc.returncode}: {' | '.join(err) or '(no stderr)'}"))
    return proc.stdout


def _to_float(data, where):
    """Integer/float PCM samples -> float32 in [-1, 1]."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:  # 24- and 32-bit PCM, left-justified by scipy
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype in (np.float32, np.float64):
        return data.astype(np.float32)
    raise DataError(_where(where, f"unsupported WAV sample type {data.dtype}"))


def read_wav_entry(entry, *, expected_rate=16000, where="", allow_empty=False):
    """Read a wav.scp value (a path, or a command ending in ``|``) -> float32 (N,) in [-1, 1].

    ``where`` names the source in errors, e.g. ``"data/train/wav.scp:12 (utt u1)"``.
    Raises DataError for a missing/unreadable file, a failing pipe, empty audio (unless
    ``allow_empty``: then a (0,) array), a sample rate other than ``expected_rate`` and
    multi-channel audio (no silent downmix).
    """
    entry = entry.strip()
    is_pipe = entry.endswith("|")
    if is_pipe:
        source = f"output of {entry!r}"
        data = io.BytesIO(_run_pipe(entry[:-1].strip(), where))
    else:
        source = entry
        if not os.path.isfile(entry):
            raise DataError(_where(where, f"audio file not found: {entry}"))
        data = entry
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, samples = wavfile.read(data)
    except (ValueError, OSError, EOFError) as e:
        head = b""
        if is_pipe:
            head = data.getvalue()[:7]
        else:
            with contextlib.suppress(OSError), open(entry, "rb") as f:
                head = f.read(7)
        hint = (" (NIST SPHERE file: use 'sph2pipe -f wav FILE |' in wav.scp)"
                if head == b"NIST_1A" else "")
        raise DataError(_where(where, f"cannot read WAV from {source}: {e}{hint}")) from None
    for w in caught:  # pipes often write a placeholder length in the header: expected
        if not (is_pipe and "prematurely" in str(w.message)):
            log.warning("%s", _where(where, f"{source}: {w.message}"))
    if samples.ndim == 2:
        raise DataError(_where(where, f"{source} has {samples.shape[1]} channels; expected mono "
                                      "(select one, e.g. 'sox FILE -t wav - remix 1 |')"))
    if rate != expected_rate:
        raise DataError(_where(where, f"{source} has sample rate {rate} Hz, expected {expected_rate} Hz "
                                      f"(resample, e.g. 'sox FILE -t wav -r {expected_rate} - |')"))
    if samples.size == 0 and not allow_empty:
        raise DataError(_where(where, f"{source} contains no audio samples"))
    return _to_float(samples, where)


def slice_segment(samples, start_s, end_s, *, rate=16000, where=""):
    """Samples ``[start_s, end_s)`` of a recording, as Kaldi's extract-segments cuts them.

    ``end_s`` < 0 (Kaldi writes -1) means the end of the recording. An end up to ``MAX_SEGMENT_OVERSHOOT_S``
    past the recording is clipped (as Kaldi does); further past is a DataError.
    """
    n = len(samples)
    start = int(start_s * rate)
    end = n if end_s < 0 else int(end_s * rate)
    if end_s >= 0 and start >= end:
        raise DataError(_where(where, f"segment start {start_s} s is not before its end {end_s} s"))
    if end > n:
        if end >= n + int(MAX_SEGMENT_OVERSHOOT_S * rate):
            raise DataError(_where(where, f"segment [{start_s}, {end_s}] s ends past the recording "
                                          f"({n / rate:.3f} s)"))
        end = n
    if start >= n:
        raise DataError(_where(where, f"segment start {start_s} s is past the end of the "
                                      f"recording ({n / rate:.3f} s)"))
    return samples[start:end]
