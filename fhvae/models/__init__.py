"""fhvae.models: the FHVAE (fhvae.py), its loss terms (losses.py), the LSTM seam (lstm.py) and the
seed-system variants (variant.py: the interface; seed_systems.py: the list)."""
from fhvae.models.fhvae import FHVAE, sample_gauss

__all__ = ["FHVAE", "sample_gauss"]
