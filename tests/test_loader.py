"""BlockLoader: blocks equal a fresh load; sequences of the previous block are reused, not re-read."""
import collections

import numpy as np
import pytest

from fhvae.data.index import UttIndex
from fhvae.data.loader import BlockLoader, UttReader
from fhvae.data.sampler import FlatSampler, HierarchicalSampler
from fhvae.features.stats import load_stats
from tests.fakedata import make_feats_dir, write_stats


class CountingReader(UttReader):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = collections.Counter()

    def load(self, i):
        self.calls[i] += 1
        return super().load(i)


@pytest.fixture
def train(tmp_path):
    d = str(tmp_path / "train")
    feats = make_feats_dir(d, n_spk=3, utts_per_spk=4, dim=8, seed=0)
    write_stats(d + "/stats.npz", feats)
    return d, UttIndex.from_data_dir(d), load_stats(d + "/stats.npz")


def assert_same(data, fresh):
    for f in ("number", "seqs", "seg_seq", "seg_start", "n_segs"):
        np.testing.assert_array_equal(getattr(data.block, f), getattr(fresh.block, f))
    assert len(data.feats) == len(fresh.feats)
    for a, b in zip(data.feats, fresh.feats):
        np.testing.assert_array_equal(a, b)


def fresh_block(index, stats, sampler, b, max_bad=0.05):
    loader = BlockLoader(UttReader(index, stats, 8, max_bad), sampler, prefetch=False)
    try:
        return loader.get(b)
    finally:
        loader.close()


def test_flat_sampling_reads_each_utterance_once(train):
    d, index, stats = train
    sampler = FlatSampler(index.nframes, 20, 10, passes=1, seed=3)
    utts = CountingReader(index, stats, 8)
    loader = BlockLoader(utts, sampler, prefetch=True)
    for b in range(3):
        assert_same(loader.get(b), fresh_block(index, stats, sampler, b))
    loader.close()
    assert utts.calls == collections.Counter(range(len(index)))


def test_hierarchical_blocks_reuse_their_overlap(train):
    d, index, stats = train
    sampler = HierarchicalSampler(index.nframes, 8, 20, 10, passes=2, seed=1)
    utts = CountingReader(index, stats, 8)
    loader = BlockLoader(utts, sampler, prefetch=False)
    prev = set()
    for b in range(4):
        before = collections.Counter(utts.calls)
        data = loader.get(b)
        assert_same(data, fresh_block(index, stats, sampler, b))
        seqs = set(data.block.seqs.tolist())
        assert set((utts.calls - before).elements()) == seqs - prev
        prev = seqs
    loader.close()


def test_broken_sequences_dropped_in_every_block(train):
    d, index, stats = train
    scp = d + "/feats.scp"
    lines = open(scp).read().splitlines()
    key = lines[2].split()[0]
    lines[2] = f"{key} {d}/gone.ark:5"
    open(scp, "w").write("\n".join(lines) + "\n")
    index = UttIndex.from_data_dir(d)
    sampler = FlatSampler(index.nframes, 20, 10, passes=1, seed=3)
    utts = UttReader(index, stats, 8, max_bad=0.5)
    loader = BlockLoader(utts, sampler, prefetch=True)
    for b in range(3):
        data = loader.get(b)
        assert 2 not in data.block.seqs and len(data.block.seqs) == len(index) - 1
        assert_same(data, fresh_block(index, stats, sampler, b, max_bad=0.5))
    loader.close()
    assert list(utts.bad) == [2]
