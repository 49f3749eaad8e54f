"""fhvae.features."""
