"""Kaldi text tables, feats.scp random access, atomic ark/scp writers, audio."""
