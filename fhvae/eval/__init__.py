"""fhvae.eval."""
