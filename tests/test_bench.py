"""Benchmarks run (tiny sizes) and report consistent figures; timings themselves are not asserted."""
import pytest
import torch

from fhvae.bench import cpu, gemms, step
from fhvae.bench.train_step import SEG_LEN, Step
from fhvae.models.fhvae import FHVAE, ModelConfig

TINY = ModelConfig(feat_dim=8, z1_dim=4, z2_dim=4, z1_hidden=8, z2_hidden=8, dec_hidden=8)


def test_procs_compares_ddp_processes_with_one_process():
    r = step.bench_procs(batch=8, procs=2, iters=2, warmup=1, cfg=TINY)
    assert r["procs"] == 2 and r["batch"] == 8 and r["hidden"] == (8, 8, 8)
    assert r["one_process_step_ms"] > 0 and r["ddp_step_ms"] > 0
    assert r["ddp_speedup"] == pytest.approx(r["one_process_step_ms"] / r["ddp_step_ms"], rel=0.01)
    assert r["ddp_segments_per_s"] == pytest.approx(8 / (r["ddp_step_ms"] / 1000), rel=0.01)


def test_procs_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="multiple"):
        step.bench_procs(batch=7, procs=2, cfg=TINY)


def test_malloc_compares_fresh_processes_with_the_tuning_off_and_on():
    r = cpu.bench_malloc(hidden=8, batch=4, iters=2, reps=1, threads=1)
    assert r["tuned"] == [False, True]   # FHVAE_MALLOC_TUNE=0 / 1 reached each process
    for name in ("off", "on"):
        assert r[f"{name}_step_ms"] > 0 and r[f"{name}_encode_segments_per_s"] > 0 and r[f"{name}_faults_per_step"] >= 0
    assert r["step_speedup"] == pytest.approx(r["off_step_ms"] / r["on_step_ms"], rel=0.02)


def test_adam_times_the_fused_update_against_the_loop():
    r = step.bench_adam(batch=4, iters=2, warmup=1, cfg=TINY)
    assert r["parameters"] == sum(p.numel() for p in FHVAE(TINY).parameters())
    for name in ("fused", "loop"):
        assert r[f"{name}_step_ms"] > 0 and r[f"{name}_update_ms"] > 0
    assert r["step_speedup"] == pytest.approx(r["loop_step_ms"] / r["fused_step_ms"], rel=0.02)


def test_memory_reports_the_median_of_fresh_processes_with_its_spread():
    r = step.bench_memory(ms=(50,), k=20, steps=1, batch=4, repeats=2)   # 4 processes
    assert r["m"] == [50] and r["repeats"] == 2
    for name in ("hierarchical", "flat"):
        lo, mid, hi = r[f"{name}_min_mb"], r[f"{name}_rss_mb"], r[f"{name}_max_mb"]
        assert len(mid) == 1 and 0 < lo[0] <= mid[0] <= hi[0]
    assert r["hierarchical_growth"] == 0 and r["flat_growth"] == 0


def test_layer_times_the_split_one_chunk_and_pytorch_ops():
    from fhvae.cpu import kernels as cpu_kernels
    r = step.bench_layer(hidden=16, batch=40, seg_len=4, iters=3, warmup=1)
    for name in ("split", "one_chunk", "pytorch_ops"):
        assert r[f"{name}_forward_ms"] > 0 and r[f"{name}_backward_ms"] > 0
    assert r["fused_kernels"] and r["split_over_one_chunk"] > 0 and r["split_over_pytorch_ops"] > 0
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert cpu_kernels.chunks() == 2
        with cpu_kernels.split(1):
            assert cpu_kernels.chunks() == 1
        assert cpu_kernels.chunks() == 2
    finally:
        torch.set_num_threads(old)


def test_recorded_gemms_are_the_steps_products():
    """The recorded products of a step of the PyTorch ops path carry the model's FLOPs (all but the
    input projections of inputs constant over a segment, done once), and their replay runs them."""
    batch = 6
    one_step = Step(TINY, 10, batch, torch.device("cpu"), fused=False)
    calls = gemms.record_gemms(one_step)
    names = {f.__name__.split(".")[0] for f, _ in calls}
    assert {"mm", "addmm"} <= names
    assert all(dtype == torch.float32 for _, ops in calls for _, _, dtype in ops)
    # every time step but the first (h0 = 0) of every layer has a recurrent product, forward and backward
    rec = [ops for _, ops in calls if [op[0] for op in ops][-2:] in (
        [(batch, 8), (8, 32)], [(32, 8), (8, batch)], [(8, 32), (32, batch)], [(batch, 32), (32, 8)])]
    assert len(rec) >= 3 * TINY.num_layers * (SEG_LEN - 1) * 2
    replay, flops = gemms.gemm_replay(calls, torch.device("cpu"))
    assert 0.5 * gemms.lstm_flops(TINY, batch) < flops <= gemms.lstm_flops(TINY, batch)
    replay()
    r = step.bench_throughput(batch=batch, iters=2, warmup=1, cfg=TINY)
    assert r["gemm_only_ms"] > 0 and r["gemm_only_gflop"] == pytest.approx(flops / 1e9, abs=0.01)
    assert r["share_of_gemm_bound"] == pytest.approx(r["gemm_only_ms"] / r["step_ms"], rel=0.05)


def test_gemms_groups_a_steps_products_by_shape():
    r = gemms.bench_gemms(batch=6, iters=2, warmup=1, cfg=TINY)
    n = len(r["shapes"])
    assert n >= 4 and len(set(r["shapes"])) == n
    assert all(len(r[k]) == n for k in ("calls", "ms", "gflops", "share"))
    assert r["ms"] == sorted(r["ms"], reverse=True) and sum(r["share"]) == pytest.approx(1, abs=0.01)
    # the recurrent product of a forward step, W_hh (4H x H) @ h (H x batch), once per step after the first
    assert r["calls"][r["shapes"].index("32x8 @ 8x6")] >= 3 * TINY.num_layers * (SEG_LEN - 1)


def test_vml_counts_wrong_first_calls_in_fresh_processes_without_and_with_the_warm_up():
    r = cpu.bench_vml(procs=1, threads=2)   # one pair: 2 processes
    assert r["pairs"] == 1 and r["threads"] == 2
    for arm in ("cold", "warm"):
        for op in ("exp", "log", "sqrt"):
            assert r[f"{arm}_{op}_wrong"] in (0, 1) and r[f"{arm}_{op}_max_ulp"] >= 0
            assert (r[f"{arm}_{op}_wrong"] == 0) == (r[f"{arm}_{op}_max_ulp"] == 0)
