"""Log-mel filterbank features with kaldi-native-fbank, and the Kaldi-style fbank stage.

Conventions (as Kaldi's compute-fbank-feats): audio in [-1, 1] is multiplied by 32768
(int16 scale) before feature extraction; 25 ms / 10 ms frames; with ``snip_edges`` a signal of
N samples gives ``1 + (N - 400) // 160`` frames at 16 kHz (0 when N < 400). kaldi-native-fbank's
own dither default is not 0; here dither is a config value, 0 by default (deterministic).

The stage (``make_fbank``, CLI ``fhvae-compute-fbank``) follows Kaldi's ``steps/make_fbank.sh``:
split the data dir by speaker into ``nj`` parts, run one job per part writing
``<fbank-dir>/raw_fbank_<name>.JOB.{ark,scp}``, then merge into ``<data-dir>/feats.scp``
(absolute ark paths, sorted), ``utt2num_frames`` and ``frame_shift``.
"""
import dataclasses
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np
import yaml

from fhvae.config import coerce, unknown_key
from fhvae.datadir import load_data_dir, split_data_dir, validate_data_dir
from fhvae.errors import ConfigError, DataError
from fhvae.io.ark import ArkScpWriter, read_scp
from fhvae.io.atomic import atomic_write_text
from fhvae.io.audio import read_wav_entry, slice_segment
from fhvae.io.tables import line_numbers, read_kv

log = logging.getLogger(__name__)

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "sine", "blackman")


@dataclass
class FbankConfig:
    """Filterbank options; names follow Kaldi's compute-fbank-feats (dashes -> underscores).

    Output: ``(T, num_mel_bins)`` log-mel energies (``+1`` column, first, with ``use_energy``).
    """
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = 16000              # Hz; audio at another rate is an error (no resampling)
    dither: float = 0.0                   # Gaussian dither on the int16-scale signal; 0 = deterministic
    snip_edges: bool = True               # only whole frames inside the signal (Kaldi default)
    low_freq: float = 20.0                # Hz, low cutoff of the mel bins
    high_freq: float = 0.0                # Hz, high cutoff; <= 0 is an offset from Nyquist
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"            # povey | hamming | hanning | rectangular | sine | blackman
    round_to_power_of_two: bool = True    # FFT size
    blackman_coeff: float = 0.42
    use_energy: bool = False              # add log energy as an extra first column
    energy_floor: float = 0.0
    raw_energy: bool = True               # energy before preemphasis/windowing
    htk_compat: bool = False
    use_log_fbank: bool = True
    use_power: bool = True                # power (not magnitude) spectrum

    @classmethod
    def from_dict(cls, d, where="fbank config"):
        """Build from a mapping; unknown keys / wrong types are ConfigError (with did-you-mean)."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping of fbank options, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for raw_key, value in d.items():
            key = str(raw_key).replace("-", "_")
            if key not in fields:
                raise unknown_key(str(raw_key), list(fields), f"{where} (fbank)")
            values[key] = coerce(value, type(getattr(cls, key)), f"{where}: {raw_key}")
        cfg = cls(**values)
        cfg.validate(where)
        return cfg

    @classmethod
    def from_yaml(cls, path):
        """Read a flat YAML mapping of options (e.g. ``conf/fbank.yaml``)."""
        try:
            with open(path, encoding="utf-8") as f:
                d = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: fbank config not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        return cls.from_dict(d, where=str(path))

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def dim(self):
        """Feature dimension."""
        return self.num_mel_bins + int(self.use_energy)

    def validate(self, where="fbank config"):
        """Raise ConfigError for impossible values."""
        nyquist = self.sample_rate / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        checks = [
            (self.num_mel_bins >= 1, "num_mel_bins must be >= 1"),
            (self.sample_rate > 0, "sample_rate must be > 0"),
            (self.frame_length_ms > 0 and self.frame_shift_ms > 0,
             "frame_length_ms and frame_shift_ms must be > 0"),
            (self.dither >= 0, "dither must be >= 0"),
            (self.window_type in WINDOW_TYPES, f"window_type must be one of {', '.join(WINDOW_TYPES)}"),
            (0 <= self.low_freq < high <= nyquist,
             f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist:g} Hz); got low_freq="
             f"{self.low_freq:g}, effective high_freq={high:g}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"{where}: {msg}")

    def knf_options(self):
        """The equivalent ``kaldi_native_fbank.FbankOptions``."""
        o = knf.FbankOptions()
        fo, mo = o.frame_opts, o.mel_opts
        fo.samp_freq = float(self.sample_rate)
        fo.frame_length_ms = self.frame_length_ms
        fo.frame_shift_ms = self.frame_shift_ms
        fo.dither = self.dither
        fo.snip_edges = self.snip_edges
        fo.preemph_coeff = self.preemphasis_coefficient
        fo.remove_dc_offset = self.remove_dc_offset
        fo.window_type = self.window_type
        fo.round_to_power_of_two = self.round_to_power_of_two
        fo.blackman_coeff = self.blackman_coeff
        mo.num_bins = self.num_mel_bins
        mo.low_freq = self.low_freq
        mo.high_freq = self.high_freq
        o.use_energy = self.use_energy
        o.energy_floor = self.energy_floor
        o.raw_energy = self.raw_energy
        o.htk_compat = self.htk_compat
        o.use_log_fbank = self.use_log_fbank
        o.use_power = self.use_power
        return o

    def num_frames(self, num_samples):
        """Frames for a signal of ``num_samples`` samples (Kaldi's NumFrames)."""
        length = int(self.sample_rate * self.frame_length_ms / 1000)
        shift = int(self.sample_rate * self.frame_shift_ms / 1000)
        if self.snip_edges:
            return 0 if num_samples < length else 1 + (num_samples - length) // shift
        return (num_samples + shift // 2) // shift


def compute_fbank(samples, cfg):
    """Log-mel fbank of float audio in [-1, 1] (1-D, at ``cfg.sample_rate``) -> float32 (T, dim).

    The audio is scaled by 32768 (int16 range) first, as Kaldi and kaldi-native-fbank expect.
    A signal shorter than one frame gives a ``(0, dim)`` array.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected 1-D audio samples, got shape {samples.shape}")
    fbank = knf.OnlineFbank(cfg.knf_options())
    fbank.accept_waveform(float(cfg.sample_rate), (samples.astype(np.float32) * 32768.0))
    fbank.input_finished()
    out = np.empty((fbank.num_frames_ready, cfg.dim), dtype=np.float32)
    for t in range(out.shape[0]):
        out[t] = fbank.get_frame(t)
    return out


def compute_fbank_job(data_dir, ark_path, scp_path, utt2num_frames_path, cfg, *, compress=False,
                      source_dir=None):
    """One job: fbank of every utterance of ``data_dir`` -> ark/scp + utt2num_frames (atomic).

    Honours ``segments``. Utterances too short for one frame, or whose audio has no samples, are
    skipped with a warning (Kaldi skips both). Bad audio (missing, unreadable, wrong rate, multi-channel) raises DataError naming the
    wav.scp line (of ``source_dir``, the unsplit data dir, if given). Returns
    ``(num_written, skipped_utts)``.
    """
    dd = load_data_dir(data_dir)
    wav_scp = os.path.join(source_dir or data_dir, "wav.scp")
    seg_file = os.path.join(source_dir or data_dir, "segments")
    wav_lines = line_numbers(wav_scp)
    seg_lines = line_numbers(seg_file) if dd.segments else {}
    utts = sorted(dd.utts)
    skipped, n2f = [], []
    cached = (None, None)  # (recording, samples): segments of one recording are read once
    last_log = time.monotonic()
    with ArkScpWriter(ark_path, scp_path, compress=compress) as writer:
        for i, utt in enumerate(utts, 1):
            seg = dd.segments.get(utt) if dd.segments else None
            reco = seg[0] if seg else utt
            if cached[0] != reco:
                where = f"{wav_scp}:{wav_lines.get(reco, '?')} (" + (
                    f"recording {reco!r}, utt {utt!r})" if seg else f"utt {utt!r})")
                if reco not in dd.wav_scp:
                    raise DataError(f"{wav_scp}: no entry for recording {reco!r} (utt {utt!r})")
                cached = (reco, read_wav_entry(dd.wav_scp[reco], expected_rate=cfg.sample_rate,
                                               where=where, allow_empty=True))
            samples = cached[1]
            if len(samples) == 0:
                log.warning("skipping utt %s: its audio (%s:%s) has no samples", utt, wav_scp,
                            wav_lines.get(reco, "?"))
                skipped.append(utt)
                continue
            if seg:
                samples = slice_segment(samples, seg[1], seg[2], rate=cfg.sample_rate,
                                        where=f"{seg_file}:{seg_lines.get(utt, '?')} (utt {utt!r})")
            feats = compute_fbank(samples, cfg)
            if feats.shape[0] == 0:
                log.warning("skipping utt %s: %d samples (%.3f s) is shorter than one frame "
                            "(%g ms)", utt, len(samples), len(samples) / cfg.sample_rate,
                            cfg.frame_length_ms)
                skipped.append(utt)
                continue
            writer.write(utt, feats)
            n2f.append(f"{utt} {feats.shape[0]}\n")
            if time.monotonic() - last_log > 30 or i == len(utts):
                log.info("%d/%d utterances done", i, len(utts))
                last_log = time.monotonic()
    atomic_write_text(utt2num_frames_path, "".join(n2f))
    log.info("wrote %d utterances to %s (%d skipped as empty or too short)", len(n2f), ark_path, len(skipped))
    return len(n2f), skipped


def make_fbank(data_dir, log_dir=None, fbank_dir=None, *, nj=4, cmd="utils/run.sh", cfg=None,
               compress=False):
    """The fbank stage (Kaldi ``steps/make_fbank.sh``) for the data dir ``data_dir``.

    Defaults: ``log_dir = <data-dir>/log``, ``fbank_dir = <data-dir>/data``. A feats.scp (and
    utt2num_frames) already there is moved to ``<data-dir>/.backup/`` first (as Kaldi does), so
    a failed run leaves no feats.scp. Writes ``feats.scp`` last, after ``utt2num_frames`` and
    ``frame_shift``. Returns the list of utterances skipped (no audio samples, or too short for one
    frame); they are listed in ``<log-dir>/make_fbank_<name>.skipped``.
    """
    from fhvae.jobs import run_jobs  # the job runner is only needed by the stage

    cfg = cfg or FbankConfig()
    cfg.validate()
    data_dir = os.path.normpath(data_dir)
    name = os.path.basename(os.path.abspath(data_dir))
    log_dir = os.path.abspath(log_dir or os.path.join(data_dir, "log"))
    fbank_dir = os.path.abspath(fbank_dir or os.path.join(data_dir, "data"))

    _backup_old_features(data_dir)  # first, so old features are not validated against the audio
    utts = validate_data_dir(data_dir, need_wav=True).utts
    os.makedirs(log_dir, exist_ok=True)
    os.makedirs(fbank_dir, exist_ok=True)

    split_dirs = split_data_dir(data_dir, nj)
    nj = len(split_dirs)
    split_tpl = os.path.join(os.path.dirname(split_dirs[0]), "JOB")
    conf_path = os.path.join(log_dir, f"make_fbank_{name}.yaml")
    atomic_write_text(conf_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    base = os.path.join(fbank_dir, f"raw_fbank_{name}.JOB")
    n2f_tpl = os.path.join(log_dir, f"utt2num_frames_{name}.JOB")
    command = [sys.executable, "-m", "fhvae.bin.compute_fbank", "--job", "--config", conf_path,
               "--source-dir", os.path.abspath(data_dir)]
    if compress:
        command.append("--compress")
    command += [split_tpl, base + ".ark", base + ".scp", n2f_tpl]
    log.info("computing fbank for %s (%d utterances) with %d jobs; logs in %s",
             data_dir, len(utts), nj, log_dir)
    run_jobs(cmd, nj, os.path.join(log_dir, f"make_fbank_{name}.JOB.log"), command)

    feats, n2f = {}, {}
    for job in range(1, nj + 1):
        feats.update(read_scp(base.replace("JOB", str(job)) + ".scp"))
        n2f.update(read_kv(n2f_tpl.replace("JOB", str(job))))
    if not feats:
        raise DataError(f"{data_dir}: no utterance gave any frames (all empty or shorter than one frame?)")
    skipped = sorted(set(utts) - set(feats))
    skipped_path = os.path.join(log_dir, f"make_fbank_{name}.skipped")
    if skipped:
        atomic_write_text(skipped_path, "".join(u + "\n" for u in skipped))
        log.warning("%d of %d utterances were too short for one frame or had no audio samples, and have no "
                    "features (list: %s); run utils/fix_data_dir.sh %s to drop them from the data dir",
                    len(skipped), len(utts), skipped_path, data_dir)
    elif os.path.exists(skipped_path):
        os.unlink(skipped_path)
    atomic_write_text(os.path.join(data_dir, "utt2num_frames"),
                      "".join(f"{u} {n2f[u]}\n" for u in sorted(n2f)))
    atomic_write_text(os.path.join(data_dir, "frame_shift"), f"{cfg.frame_shift_ms / 1000:g}\n")
    atomic_write_text(os.path.join(data_dir, "feats.scp"),
                      "".join(f"{u} {feats[u]}\n" for u in sorted(feats)))
    log.info("wrote %s/feats.scp: %d utterances, dim %d", data_dir, len(feats), cfg.dim)
    return skipped


def _backup_old_features(data_dir):
    """Move an existing feats.scp / utt2num_frames to ``<data-dir>/.backup/`` (Kaldi style)."""
    for fname in ("feats.scp", "utt2num_frames"):
        path = os.path.join(data_dir, fname)
        if os.path.exists(path):
            backup = os.path.join(data_dir, ".backup")
            os.makedirs(backup, exist_ok=True)
            shutil.move(path, os.path.join(backup, fname))
            log.info("moved the old %s to %s/", path, backup)
