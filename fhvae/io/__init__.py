"""Kaldi data dirs, feats.scp random access, atomic ark/scp writers."""
