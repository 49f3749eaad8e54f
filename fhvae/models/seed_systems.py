"""The seed systems: every model variant fhvae ships (interface: fhvae/models/variant.py), in the
order their parameters are created and their hooks run."""
from fhvae.models.ar import ARDecoder, ZForcing
from fhvae.models.jitter import TimeJitter
from fhvae.models.vq import VectorQuantizer

MODEL_VARIANTS = (VectorQuantizer, ARDecoder, ZForcing)   # enabled by model.* options: parts of the model
TRAIN_VARIANTS = (TimeJitter,)                            # enabled by train.* options: the trainer's only


def build(variants, cfg):
    """The variants of ``variants`` that ``cfg`` (ModelConfig or TrainConfig) enables, built."""
    return [v.from_config(cfg) for v in variants if v.enabled(cfg)]
