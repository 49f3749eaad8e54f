"""fhvae.models."""
