"""fhvae: Scalable Factorized Hierarchical VAE toolkit.

Names used everywhere: z1 = segment-level latent, z2 = sequence-level latent,
mu2 = sequence prior mean (its per-utterance MAP estimate is the s-vector).
"""
__version__ = "0.1.0"
