"""fhvae.train."""
