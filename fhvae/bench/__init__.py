"""Benchmarks behind ``fhvae-bench`` (not tests; results in BENCHMARKS.md).

Each ``bench_*`` returns a JSON-able dict that the CLI prints as a table. Modules: ``step`` (the
training step: time vs K, throughput, one LSTM layer, Adam, DDP processes, memory), ``gemms`` (its
matrix products), ``data`` (loader, utterance index), ``cpu`` (malloc, MKL VML), ``export``
(export and fbank speed); ``train_step`` (the step they time), ``common`` (timing helpers).
"""
