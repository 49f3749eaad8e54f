"""Kaldi data directories: load (``load``), check (``validate``), subset / crop / fix / split
(``edit``) and speaker-verification trials (``trials``). Text tables: :mod:`fhvae.io.tables`."""
from fhvae.datadir.edit import crop_data_dir, fix_data_dir, split_data_dir, subset_data_dir
from fhvae.datadir.load import DataDir, load_data_dir
from fhvae.datadir.trials import make_trials, sample_utts_per_speaker, write_trials
from fhvae.datadir.validate import validate_data_dir

__all__ = ["DataDir", "load_data_dir", "validate_data_dir", "subset_data_dir", "crop_data_dir", "fix_data_dir",
           "split_data_dir", "make_trials", "write_trials", "sample_utts_per_speaker"]
