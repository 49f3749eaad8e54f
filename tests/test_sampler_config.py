"""Samplers (hierarchical / flat), the compact index and the config system."""
import numpy as np
import pytest

from fhvae import config
from fhvae.data.loader import drop_sequences
from fhvae.data.sampler import FlatSampler, HierarchicalSampler, fixed_segments, num_segments
from fhvae.errors import ConfigError


def test_num_segments_formula():
    L = np.array([19, 20, 27, 28, 100])
    # N_i = floor((L - 20) / 8) + 1, 0 for L < 20
    assert num_segments(L, 20, 8).tolist() == [0, 1, 1, 2, 11]


def test_hierarchical_block_is_k_distinct_sequences_and_all_their_segments():
    lengths = np.random.default_rng(0).integers(20, 300, size=50)
    s = HierarchicalSampler(lengths, k=10, seg_len=20, shift=8, passes=1, seed=3)
    b = s.block(0)
    assert len(b.seqs) == 10 and len(set(b.seqs.tolist())) == 10
    # every segment belongs to a sampled sequence, count per sequence = N_i, starts in range
    counts = np.bincount(b.seg_seq, minlength=10)
    assert counts.tolist() == num_segments(lengths[b.seqs], 20, 8).tolist() == b.n_segs.tolist()
    L = lengths[b.seqs][b.seg_seq]
    assert (b.seg_start >= 0).all() and (b.seg_start + 20 <= L).all()
    # blocks differ and are pure functions of (seed, block number)
    assert not np.array_equal(s.block(1).seqs, b.seqs)
    b2 = HierarchicalSampler(lengths, 10, 20, 8, 1, 3).block(0)
    assert np.array_equal(b2.seg_start, b.seg_start) and np.array_equal(b2.seg_seq, b.seg_seq)


def test_k_larger_than_m_uses_m():
    s = HierarchicalSampler([30, 40, 50], k=2000, seg_len=20, shift=8)
    assert s.k == 3 and sorted(s.block(0).seqs.tolist()) == [0, 1, 2]


def test_flat_block_holds_all_sequences_and_passes_redraw_starts():
    lengths = np.array([40, 60, 80])
    f = FlatSampler(lengths, 20, 8, passes=2, seed=1)
    b = f.block(0)
    assert b.seqs.tolist() == [0, 1, 2]
    assert len(b.seg_seq) == 2 * num_segments(lengths, 20, 8).sum()
    assert not np.array_equal(f.block(0).seg_start, f.block(1).seg_start)


def test_batches_cover_block_once():
    s = HierarchicalSampler(np.full(30, 100), k=7, seg_len=20, shift=8)
    b = s.block(2)
    got = np.concatenate([b.batch(j, 16)[1] * 1000 + b.batch(j, 16)[0] for j in range(b.batches(16))])
    assert len(got) == len(b.seg_seq) == 7 * 11


def test_drop_sequences_renumbers():
    s = HierarchicalSampler(np.arange(20, 80, 3), k=5, seg_len=20, shift=8, seed=0)
    b = s.block(0)
    keep = np.array([True, False, True, True, False])
    d = drop_sequences(b, keep)
    assert d.seqs.tolist() == b.seqs[keep].tolist()
    assert set(d.seg_seq.tolist()) <= {0, 1, 2}
    assert np.bincount(d.seg_seq, minlength=3).tolist() == d.n_segs.tolist()


def test_fixed_segments():
    assert fixed_segments(65, 20, 20).tolist() == [0, 20, 40]
    assert fixed_segments(10, 20, 20).tolist() == [0]


def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.0005\n  seq_batch_size: 100\nmodel:\n  z1_dim: 16\n")
    cfg = config.load_config(str(p), [("train.batch_size", "64"), ("train.sampling", "flat")])
    assert cfg.train.lr == 5e-4 and cfg.train.seq_batch_size == 100 and cfg.model.z1_dim == 16
    assert cfg.train.batch_size == 64 and cfg.train.sampling == "flat"
    with pytest.raises(ConfigError, match="did you mean 'seq_batch_size'"):
        config.load_config(None, [("train.seq_batch_sise", "3")])
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        config.load_config(None, [("trian.lr", "3")])
    with pytest.raises(ConfigError, match="expected an integer"):
        config.load_config(None, [("train.batch_size", "abc")])
    with pytest.raises(ConfigError, match="K\\) must be >= 1"):
        config.load_config(None, [("train.seq_batch_size", "0")])
    with pytest.raises(ConfigError, match="svector_shift must be >= 1"):
        config.load_config(None, [("data.svector_shift", "0")])
    with pytest.raises(ConfigError, match="expected true/false"):
        config.load_config(None, [("train.amp", "maybe")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_config(str(bad))


def test_parse_overrides():
    assert config.parse_overrides(["--train.lr", "1e-4", "--model.z1_dim=8"]) == [
        ("train.lr", "1e-4"), ("model.z1_dim", "8")]
    with pytest.raises(ConfigError, match="unrecognized"):
        config.parse_overrides(["--bogus"])


def test_config_round_trip(tmp_path):
    cfg = config.load_config(None, [("train.lr", "0.01")])
    config.save_config(cfg, tmp_path / "config.yaml", {"train_dir": "/x"})
    back, extra = config.read_exp_config(str(tmp_path))
    assert back.to_dict() == cfg.to_dict() and extra == {"train_dir": "/x"}


def test_exp_config_written_before_svector_shift_reads_as_non_overlapping(tmp_path):
    """An exp dir trained before data.svector_shift existed keeps its s-vectors (shift 20)."""
    cfg = config.load_config(None)
    config.save_config(cfg, tmp_path / "config.yaml", {})
    text = (tmp_path / "config.yaml").read_text()
    assert "svector_shift: 20" in text
    (tmp_path / "config.yaml").write_text(text.replace("  svector_shift: 20\n", ""))
    back, _ = config.read_exp_config(str(tmp_path))
    assert back.data.svector_shift == 20
