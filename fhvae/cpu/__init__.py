"""Work-arounds for fast training on CPUs, behind one seam: the C LSTM kernels (kernels.py,
lstm_kernels.c; used by fhvae.cpu.lstm), MKL VML warm-up (mkl.py) and glibc malloc thresholds (malloc.py)."""
