"""Training configuration: typed sections read from YAML, overridable by ``--section.key value``.

The fully resolved config is written into the exp dir (``exp/<tag>/config.yaml``); export,
scoring and resume read it from there. Unknown keys, wrong types and impossible values are
ConfigErrors naming the key (with a did-you-mean).
"""
import dataclasses
import difflib
import os
from dataclasses import dataclass, field

import yaml

from fhvae.errors import ConfigError
from fhvae.io.atomic import atomic_write_text


@dataclass
class ModelConfig:
    """Sizes of the FHVAE (fhvae/models/fhvae.py). Defaults are the paper's (Sec. 4.2)."""
    feat_dim: int = 80          # F: feature dimension (80 log-mel fbank)
    z1_dim: int = 32            # segment latent
    z2_dim: int = 32            # sequence latent
    z1_hidden: int = 256        # LSTM cells of the z1 encoder
    z2_hidden: int = 256        # LSTM cells of the z2 encoder
    dec_hidden: int = 256       # LSTM cells of the decoder
    num_layers: int = 2         # LSTM layers of each encoder and of the decoder
    z2_prior_var: float = 0.25  # sigma_z2^2 in p(z2 | mu2) = N(mu2, sigma_z2^2 I)
    # Seed systems (off by default: the paper's FHVAE)
    z1_bottleneck: str = "gauss"  # gauss | vq: vector-quantized z1 (models/vq.py, Łańcucki et al. 2020)
    vq_codes: int = 256           # K codes of the vq bottleneck
    vq_commitment: float = 0.25   # weight of ||ze - sg(e)||^2
    vq_batchnorm: bool = True     # BatchNorm before the linear layer that feeds the quantizer
    decoder: str = "lstm"         # lstm | ar: add an autoregressive output (models/ar.py, WaveNet-style)
    ar_channels: int = 64         # channels of the causal dilated convolutions
    ar_layers: int = 4            # dilations 1, 2, ..., 2^(ar_layers-1)
    zforcing: bool = False        # Z-forcing auxiliary cost (models/ar.py, Goyal et al. 2017); the backward
                                  # states are predicted from the decoder's LSTM state (a function of the
                                  # per-segment z1, z2), not from per-step latents as in the paper
    zforcing_hidden: int = 128    # cells of its backward LSTM

    def checks(self):
        """[(ok, message)] of the section's own constraints."""
        sizes = ("feat_dim", "z1_dim", "z2_dim", "z1_hidden", "z2_hidden", "dec_hidden", "num_layers",
                 "vq_codes", "ar_channels", "ar_layers", "zforcing_hidden")
        return [(getattr(self, k) >= 1, f"model.{k} must be >= 1, got {getattr(self, k)}") for k in sizes] + [
            (self.z2_prior_var > 0, f"model.z2_prior_var must be > 0, got {self.z2_prior_var}"),
            (self.z1_bottleneck in ("gauss", "vq"),
             f"model.z1_bottleneck must be 'gauss' or 'vq', got {self.z1_bottleneck!r}"),
            (self.decoder in ("lstm", "ar"), f"model.decoder must be 'lstm' or 'ar', got {self.decoder!r}"),
            (self.vq_commitment >= 0, f"model.vq_commitment must be >= 0, got {self.vq_commitment}"),
        ]


@dataclass
class DataConfig:
    """Segments cut from normalized features. Units: frames."""
    seg_len: int = 20           # frames per segment (the paper: 20)
    seg_shift: int = 8          # training: N_i = floor((L_i - seg_len) / seg_shift) + 1 random-start segments
    dev_seg_shift: int = 20     # dev bound: non-overlapping segments
    svector_shift: int = 20     # exported s-vectors: MAP estimate of mu2 over the segments at 0, shift, 2*shift,
                                # ... (20: non-overlapping, the 2017 eval code; 8 = seg_shift: the segments
                                # a training sequence's cache MAP estimate averages)
    dev_max_utts: int = 0       # dev bound on at most this many dev utterances (seeded sample); 0 = all
    max_bad_utts: float = 0.05  # fraction of broken utterances (NaN/inf, unreadable) tolerated before stopping


@dataclass
class TrainConfig:
    """Optimization and sampling (Algorithm 1 of the paper; flat = the 2017 algorithm)."""
    sampling: str = "hierarchical"   # hierarchical | flat
    cache_optimizer: str = "reset"   # reset: a fresh Adam for the cache at every block | carry: its moments
                                     # carry on across blocks (the original code's single Adam)
    flat_cache_init: str = "random"  # flat sampling: the M-row cache starts at N(0, I) (random: the original
                                     # code) or at the MAP estimates of the sequences (map)
    seq_batch_size: int = 2000       # K: sequences per block (hierarchical); ignored for flat
    block_passes: int = 1            # shuffled passes over a block's segments before sampling the next block
    batch_size: int = 256            # segments per optimization step
    alpha: float = 10.0              # weight of the discriminative term
    lr: float = 1e-3
    lr_warmup_steps: int = 0         # linear warm-up of the learning rates from 0 over this many steps
    lr_decay_steps: int = 0          # cosine decay from lr to lr * lr_final over this many steps after the
                                     # warm-up, constant afterwards (0 = constant lr: the paper)
    lr_final: float = 0.05           # fraction of lr left at the end of the decay
    beta1: float = 0.95
    beta2: float = 0.999
    ema_decay: float = 0.0           # > 0: the dev bound, best.pt and so the export use an exponential moving
                                     # average of the weights, decay min(ema_decay, (1 + n) / (10 + n)) after n
                                     # steps (0 = the weights as trained: the paper)
    epoch_steps: int = 1000          # steps between dev evaluations / checkpoints ("epoch")
    max_epochs: int = 100
    patience: int = 10               # epochs without dev-bound improvement before stopping
    seed: int = 1
    device: str = "cpu"              # cpu | cuda
    amp: bool = False                # bf16 autocast (cuda only)
    num_threads: int = 0             # torch intra-op threads; 0 = torch default
    on_nonfinite: str = "stop"       # stop | skip: what a NaN/inf loss does
    max_skipped_batches: int = 100   # with on_nonfinite=skip: stop after this many skipped batches
    prefetch: bool = True            # load the next block in a background thread
    # Seed systems (model.z1_bottleneck = vq, model.zforcing; see fhvae/models/vq.py, ar.py)
    vq_lr_mult: float = 10.0         # the codebook's Adam group runs at this times lr (1 = no trick)
    vq_reinit_epochs: int = 5        # k-means re-init of the codebook at the start of epochs 2..N+1 (0 = never)
    vq_reservoir: int = 20000        # encoder outputs kept (reservoir sampling) over an epoch for the re-init
    z1_jitter: float = 0.0           # time jitter (Chorowski et al. 2019; 0.12 there): probability that the
                                     # z1 encoder reads a neighbouring segment instead (training only)
    z1_jitter_shift: int = 8         # frames between a segment and its neighbours (the latent stride)
    zforcing_weight: float = 1.0     # weight of the Z-forcing auxiliary cost ...
    zforcing_anneal_steps: int = 2000  # ... ramped linearly from 0 over this many steps (0 = constant)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self):
        """Raise ConfigError for impossible values (the first one found); returns self."""
        t, d, m = self.train, self.data, self.model
        checks = m.checks() + [
            (t.sampling in ("hierarchical", "flat"), "train.sampling must be 'hierarchical' or 'flat'"),
            (t.cache_optimizer in ("reset", "carry"), "train.cache_optimizer must be 'reset' or 'carry'"),
            (t.flat_cache_init in ("random", "map"), "train.flat_cache_init must be 'random' or 'map'"),
            (t.seq_batch_size >= 1, "train.seq_batch_size (K) must be >= 1"),
            (t.batch_size >= 1, "train.batch_size must be >= 1"),
            (t.block_passes >= 1, "train.block_passes must be >= 1"),
            (t.epoch_steps >= 1, "train.epoch_steps must be >= 1"),
            (t.max_epochs >= 1, "train.max_epochs must be >= 1"),
            (t.patience >= 1, "train.patience must be >= 1"),
            (t.lr > 0, "train.lr must be > 0"),
            (t.lr_warmup_steps >= 0 and t.lr_decay_steps >= 0,
             "train.lr_warmup_steps and train.lr_decay_steps must be >= 0"),
            (0 <= t.lr_final <= 1, "train.lr_final must be a fraction in [0, 1]"),
            (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
            (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2 must be in [0, 1)"),
            (t.alpha >= 0, "train.alpha must be >= 0"),
            (t.vq_lr_mult > 0, "train.vq_lr_mult must be > 0"),
            (t.vq_reinit_epochs >= 0, "train.vq_reinit_epochs must be >= 0"),
            (t.vq_reservoir >= m.vq_codes or m.z1_bottleneck != "vq" or t.vq_reinit_epochs == 0,
             "train.vq_reservoir must be >= model.vq_codes (k-means needs a point per code)"),
            (0 <= t.z1_jitter < 1, "train.z1_jitter must be a probability in [0, 1)"),
            (t.z1_jitter_shift >= 1, "train.z1_jitter_shift must be >= 1 frame"),
            (t.zforcing_weight >= 0 and t.zforcing_anneal_steps >= 0,
             "train.zforcing_weight and train.zforcing_anneal_steps must be >= 0"),
            (t.on_nonfinite in ("stop", "skip"), "train.on_nonfinite must be 'stop' or 'skip'"),
            (t.device == "cpu" or t.device.startswith("cuda"), "train.device must be cpu or cuda[:N]"),
            (d.seg_len >= 1, "data.seg_len must be >= 1"),
            (d.seg_shift >= 1 and d.dev_seg_shift >= 1 and d.svector_shift >= 1,
             "data.seg_shift/dev_seg_shift/svector_shift must be >= 1"),
            (0 <= d.max_bad_utts <= 1, "data.max_bad_utts must be a fraction in [0, 1]"),
            (d.dev_max_utts >= 0, "data.dev_max_utts must be >= 0 (0 = all)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def coerce(value, typ, key):
    """Coerce a YAML/CLI value to ``typ`` (bool, int, float or str); ConfigError naming ``key`` if
    impossible. Strings given for other types are read as YAML ('1e-3', 'true')."""
    if isinstance(value, str) and typ is not str:
        value = yaml.safe_load(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        return str(value)
    raise ConfigError(f"{key}: unsupported type {typ.__name__}")


def unknown_key(key, choices, where):
    """ConfigError for an unknown ``key``, with a did-you-mean among ``choices``."""
    close = difflib.get_close_matches(key, choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(choices))}"
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def set_value(cfg, dotted, value, where="override"):
    """Set ``cfg.<section>.<key>`` from a dotted name like ``train.lr`` (value coerced to the field type)."""
    parts = dotted.replace("-", "_").split(".")
    if len(parts) != 2:
        raise ConfigError(f"{where}: '{dotted}' must look like section.key (e.g. train.lr)")
    sec_name, key = parts
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if sec_name not in sections:
        raise unknown_key(sec_name, sections, where)
    sec = sections[sec_name]
    names = [f.name for f in dataclasses.fields(sec)]
    if key not in names:
        raise unknown_key(key, names, f"{where} ({sec_name})")
    setattr(sec, key, coerce(value, type(getattr(sec, key)), f"{sec_name}.{key}"))


def from_dict(d, where="config"):
    """Build a Config from a nested dict (missing keys keep their defaults)."""
    cfg = Config()
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(d).__name__}")
    for sec_name, sec in d.items():
        if not isinstance(sec, dict):
            raise ConfigError(f"{where}: section '{sec_name}' must be a mapping")
        for key, value in sec.items():
            if (sec_name, key) == ("model", "seg_len"):   # older configs: the segment length twice
                if value != (d.get("data") or {}).get("seg_len", DataConfig.seg_len):
                    raise ConfigError(f"{where}: model.seg_len={value} differs from data.seg_len (the "
                                      f"segment length is data.seg_len only; remove model.seg_len)")
                continue
            set_value(cfg, f"{sec_name}.{key}", value, where)
    return cfg


def load_config(path=None, overrides=()):
    """Read YAML ``path`` (optional), apply ``overrides`` [(dotted_key, value)], validate."""
    d = None
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: config file not found")
        with open(path, encoding="utf-8") as f:
            try:
                d = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from None
    cfg = from_dict(d, where=str(path or "config"))
    for key, value in overrides:
        set_value(cfg, key, value)
    return cfg.validate()


def parse_overrides(extra_args):
    """Turn ['--train.lr', '1e-4', '--model.z1_dim=16'] into [('train.lr', '1e-4'), ...]."""
    out, i = [], 0
    while i < len(extra_args):
        a = extra_args[i]
        if not a.startswith("--") or "." not in a:
            raise ConfigError(f"unrecognized argument '{a}' (config overrides look like --section.key value)")
        if "=" in a:
            k, v = a[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra_args):
                raise ConfigError(f"option '{a}' needs a value")
            k, v = a[2:], extra_args[i + 1]
            i += 2
        out.append((k, v))
    return out


def save_config(cfg, path, extra=None):
    """Write the resolved config (plus ``extra`` top-level entries, e.g. data paths) atomically."""
    d = cfg.to_dict()
    if extra:
        d.update(extra)
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))


def read_exp_config(exp_dir):
    """Read ``exp_dir/config.yaml`` -> (Config, extra dict of the non-section entries)."""
    path = os.path.join(exp_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: not found (is '{exp_dir}' a trained exp dir?)")
    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f) or {}
    sections = {f.name for f in dataclasses.fields(Config)}
    cfg = from_dict({k: v for k, v in d.items() if k in sections}, where=path)
    return cfg.validate(), {k: v for k, v in d.items() if k not in sections}
