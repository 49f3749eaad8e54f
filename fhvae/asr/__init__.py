"""fhvae.asr: downstream CTC ASR (BPE units, greedy decoding, WER) on any frame-level feature scp.

``text`` (BPE units, CTC labels, WER, transcripts), ``model`` (CtcModel), ``data`` (features of a
data dir), ``train`` (AsrOptions, train_ctc, run_asr: the ``fhvae-asr`` pipeline).
"""
