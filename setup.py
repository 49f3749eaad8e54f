"""fhvae: Scalable Factorized Hierarchical VAE toolkit (Hsu & Glass, 2018).

Every module fhvae/bin/<name>.py with a main() becomes the console script
``fhvae-<name with _ as ->`` (e.g. fhvae/bin/compute_fbank.py -> fhvae-compute-fbank).
"""
import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
bin_dir = os.path.join(here, "fhvae", "bin")
scripts = sorted(
    f[:-3] for f in os.listdir(bin_dir) if f.endswith(".py") and not f.startswith("_")
)
setup(
    name="fhvae",
    version="0.1.0",
    description="Scalable FHVAE toolkit: Kaldi-style recipes, hierarchical sampling, Kaldi exports",
    packages=find_packages(include=["fhvae", "fhvae.*"]),
    package_data={"fhvae.cpu": ["lstm_kernels.c"]},  # compiled on first use (fhvae/cpu/kernels.py)
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "kaldiio>=2.18",
        "kaldi-native-fbank>=1.20",
        "numpy",
        "scipy",
        "scikit-learn",
        "matplotlib",
        "pyyaml",
        "tqdm",
        "sentencepiece",
        "jiwer",
    ],
    entry_points={
        "console_scripts": [f"fhvae-{s.replace('_', '-')}=fhvae.bin.{s}:main" for s in scripts]
    },
)
