"""fhvae.models: the FHVAE (encoders, decoder) and its loss terms."""
from fhvae.models.fhvae import FHVAE, ModelConfig, sample_gauss
from fhvae.models import losses

__all__ = ["FHVAE", "ModelConfig", "sample_gauss", "losses"]
