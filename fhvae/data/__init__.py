"""fhvae.data."""
