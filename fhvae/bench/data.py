"""Data benchmarks: the block loader on an on-disk corpus against the trainer, and the utterance index.

``make_corpus`` writes a synthetic data dir of a given size. ``bench_index`` indexes in a fresh
process: ``python -m fhvae.bench.data _index DATA_DIR``.
"""
import gc
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from fhvae.bench.common import rss_mb, run_worker
from fhvae.bench.train_step import Step
from fhvae.config import ModelConfig


def make_corpus(path, size_gb, dim=80, mean_frames=400, seed=0):
    """Synthetic on-disk corpus: data dir with feats.scp / utt2num_frames / utt2spk and stats.npz."""
    from fhvae.io.ark import ArkScpWriter
    from fhvae.io.tables import utt2spk_to_spk2utt, write_kv
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    n2f, utt2spk, total, i = {}, {}, 0, 0
    block = rng.normal(size=(4 * mean_frames, dim)).astype(np.float32)
    arks_dir = os.path.join(path, "arks")
    os.makedirs(arks_dir, exist_ok=True)
    target = size_gb * 1e9
    ark_no = 0
    while total < target:
        ark_no += 1
        with ArkScpWriter(f"{arks_dir}/feats.{ark_no}.ark", f"{arks_dir}/feats.{ark_no}.scp") as w:
            for _ in range(5000):
                T = int(rng.integers(mean_frames // 2, 3 * mean_frames // 2))
                s = int(rng.integers(0, len(block) - T))
                utt = f"spk{i // 50:06d}-u{i:09d}"
                w.write(utt, block[s:s + T] + np.float32(i % 7))
                n2f[utt], utt2spk[utt] = str(T), utt.split("-")[0]
                total += T * dim * 4 + 15
                i += 1
                if total >= target:
                    break
    with open(os.path.join(path, "feats.scp"), "w") as out:
        for j in range(1, ark_no + 1):
            with open(f"{arks_dir}/feats.{j}.scp") as f:
                out.write(f.read())
    write_kv(os.path.join(path, "utt2num_frames"), n2f)
    write_kv(os.path.join(path, "utt2spk"), utt2spk)
    write_kv(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    np.savez(os.path.join(path, "stats.npz"), mean=np.full(dim, 3.0), var=np.full(dim, 5.0),
             count=1, dim=dim)
    return {"utts": i, "bytes": total}


def bench_loader(size_gb=0.5, k=2000, blocks=3, corpus_dir=None, train_steps=20, batch=256):
    """Block loader throughput on an on-disk feats.scp vs the trainer's consumption, and RSS.

    Loader: frames/s reading blocks of K random utterances (cold, then the trainer's view with
    prefetch). Trainer: segments/s of the paper model on this machine; one segment needs
    ``seg_shift`` (8) new frames on average, so the loader keeps up when
    loader_frames_per_s / 8 > trainer segments/s.
    """
    from fhvae.data.index import UttIndex
    from fhvae.data.loader import BlockLoader, UttReader
    from fhvae.data.sampler import HierarchicalSampler
    from fhvae.features.stats import load_stats
    tmp = None
    if corpus_dir is None:
        tmp = tempfile.mkdtemp(prefix="fhvae-bench-")
        corpus_dir = tmp
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(corpus_dir, "feats.scp")):
        make_corpus(corpus_dir, size_gb)
    make_s = time.perf_counter() - t0
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = UttIndex.from_data_dir(corpus_dir)
    index_s = time.perf_counter() - t0
    disk = sum(os.path.getsize(p) for p in index.ark_paths)
    stats = load_stats(os.path.join(corpus_dir, "stats.npz"))
    sampler = HierarchicalSampler(index.nframes, k, 20, 8, seed=0)
    utts = UttReader(index, stats, 80)
    loader = BlockLoader(utts, sampler, prefetch=False)
    frames, t0 = 0, time.perf_counter()
    for b in range(blocks):
        data = loader.get(b)
        frames += sum(len(f) for f in data.feats)
        del data
        gc.collect()
    load_s = time.perf_counter() - t0
    loader.close()
    # training on the corpus with prefetch: loader wait time vs compute time
    step = Step(ModelConfig(), k, batch, torch.device("cpu"))
    loader = BlockLoader(utts, sampler, prefetch=True)
    wait, compute, done = 0.0, 0.0, 0
    b = blocks
    while done < train_steps:
        t0 = time.perf_counter()
        data = loader.get(b)
        wait += time.perf_counter() - t0
        for j in range(min(data.block.batches(batch), train_steps - done)):
            t0 = time.perf_counter()
            step.x = data.batch(j, batch, 20)[0]
            step.idx = torch.from_numpy(data.block.batch(j, batch)[0])
            step.n = torch.full((len(step.idx),), 30.0)
            step()
            compute += time.perf_counter() - t0
            done += 1
        b += 1
    loader.close()
    utts.close()
    seg_per_s = done * batch / compute
    res = {"corpus_gb": round(disk / 1e9, 2), "utts": len(index), "make_s": round(make_s, 1),
           "index_s": round(index_s, 2), "k": k, "blocks": blocks,
           "loader_frames_per_s": round(frames / load_s), "loader_segments_per_s": round(frames / load_s / 8),
           "trainer_segments_per_s": round(seg_per_s, 1),
           "loader_over_trainer": round(frames / load_s / 8 / seg_per_s, 2),
           "prefetch_wait_s": round(wait, 2), "train_compute_s": round(compute, 2),
           "rss_before_index_mb": round(rss0, 1), "peak_rss_mb": round(rss_mb(), 1)}
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _index_worker(path):
    """In a fresh process: time and RSS growth of indexing ``path`` (a data dir)."""
    from fhvae.data.index import UttIndex
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = UttIndex.from_data_dir(path)
    return {"utts": len(index), "index_s": round(time.perf_counter() - t0, 1),
            "rss_growth_mb": round(rss_mb() - rss0, 1),
            "index_arrays_mb": round((len(index._blob) + index._name_off.nbytes + index.nframes.nbytes
                                      + index.ark_id.nbytes + index.offset.nbytes) / 2**20, 1)}


def bench_index(n=10_000_000):
    """Memory of the compact utterance index for ``n`` utterances (synthetic feats.scp, no arks)."""
    tmp = tempfile.mkdtemp(prefix="fhvae-index-")
    with open(os.path.join(tmp, "feats.scp"), "w") as scp, open(os.path.join(tmp, "utt2num_frames"), "w") as nf:
        for i in range(n):
            utt = f"spk{i // 100:07d}-utt{i:09d}"
            scp.write(f"{utt} /data/fbank/raw_fbank_train.{i % 64 + 1}.ark:{(i // 64) * 128015 + 24}\n")
            nf.write(f"{utt} {300 + i % 500}\n")
    try:
        return run_worker("fhvae.bench.data", "_index", tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_index":
    print(json.dumps(_index_worker(sys.argv[2])))
