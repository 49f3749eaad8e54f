"""fhvae-bench: benchmarks that print tables (and write JSON). Not tests."""
import argparse
import json

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-bench step-vs-k                      # paper Table 2: step time vs K (batch 256)
  fhvae-bench step-vs-k --dense --k 10 20000 # also the 2017 dense formulation
  fhvae-bench memory --m 1000 10000 100000 1000000
  fhvae-bench throughput                     # segments/s vs plain nn.LSTM, GFLOP/step, sgemm rate,
                                             # the step's own matrix products alone (gemm_only)
  fhvae-bench gemms --hidden 128 --batch 128 # a training step's matrix products by shape, each alone
  fhvae-bench procs --hidden 128 --batch 128 # 2 one-thread DDP processes vs one 2-thread process
  fhvae-bench layer --hidden 128 --batch 128 # one LSTM layer: C kernels split / one chunk vs PyTorch ops
  fhvae-bench malloc --hidden 128 --batch 128 # step and export speed with fhvae/cpu/malloc.py off and on
  fhvae-bench adam --hidden 128 --batch 128 # a step with fused Adam (fhvae-train's) vs Adam's per-parameter loop
  fhvae-bench vml --procs 200                # wrong first MKL VML calls without / with fhvae/cpu/mkl.py's warm-up
  fhvae-bench loader --size-gb 20            # on-disk feats.scp of 20 GB
  fhvae-bench export
  fhvae-bench index --index-utts 10000000   # memory of the utterance index
  fhvae-bench all --quick                    # every benchmark, shrunk
  ... --device cuda --json out.json"""

QUICK = {"k": [10, 1000, 20000], "m": [1000, 100000], "iters": 3, "size_gb": 0.2, "blocks": 2,
         "index_utts": 100000, "repeats": 1}


def _table(res):
    """Print a dict: list-valued keys as columns, scalars and tuples (e.g. hidden sizes) as 'key: value' lines."""
    lists = {k: v for k, v in res.items() if isinstance(v, list)}
    for k, v in res.items():
        if not isinstance(v, list):
            print(f"{k}: {v}")
    if lists:
        keys = list(lists)
        print(" | ".join(f"{k:>20}" for k in keys))
        for row in zip(*lists.values()):
            print(" | ".join(f"{x:>20}" for x in row))


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-bench", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["step-vs-k", "memory", "throughput", "gemms", "loader", "export", "index", "procs", "malloc", "adam",
                                      "layer", "vml", "all"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quick", action="store_true", help="shrink every benchmark for a quick run")
    p.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000, 2000, 5000, 10000, 20000])
    p.add_argument("--m", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=7, help="timed repetitions (median reported)")
    p.add_argument("--dense", action="store_true", help="step-vs-k: also time the dense (B,K,D) formulation")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (cuda)")
    p.add_argument("--size-gb", type=float, default=20.0, help="loader: corpus size on disk")
    p.add_argument("--corpus-dir", help="loader: reuse (or create) the synthetic corpus here")
    p.add_argument("--blocks", type=int, default=3, help="loader: blocks to time")
    p.add_argument("--index-utts", type=int, default=10_000_000, help="index: utterances")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--hidden", type=int, default=256,
                   help="throughput, gemms, layer, procs, malloc, adam: LSTM cells of every encoder/decoder (256: the paper; "
                        "128: the mini recipe)")
    p.add_argument("--procs", type=int,
                   help="procs: DDP processes, one thread each (default 2); vml: pairs of fresh processes (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="memory: fresh processes per point (median reported)")
    args = p.parse_args(argv)

    import torch

    from fhvae.bench import cpu, data, export, gemms, step
    from fhvae.config import ModelConfig
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    out = {}
    todo = ["step-vs-k", "memory", "throughput", "loader", "export", "index"] if args.which == "all" else [args.which]
    for w in todo:
        print(f"== {w}")
        if w == "step-vs-k":
            r = step.bench_step_vs_k(args.k, args.batch, args.iters, 2, args.device, args.dense)
        elif w == "memory":
            r = step.bench_memory(args.m, batch=args.batch, repeats=args.repeats)
        elif w == "gemms":
            cfg = ModelConfig(z1_hidden=args.hidden, z2_hidden=args.hidden, dec_hidden=args.hidden)
            r = gemms.bench_gemms(args.batch, max(args.iters, 5), 2, args.device, cfg=cfg)
        elif w == "throughput":
            cfg = ModelConfig(z1_hidden=args.hidden, z2_hidden=args.hidden, dec_hidden=args.hidden)
            r = step.bench_throughput(args.batch, args.iters, 2, args.device, args.amp, cfg=cfg)
        elif w == "procs":
            cfg = ModelConfig(z1_hidden=args.hidden, z2_hidden=args.hidden, dec_hidden=args.hidden)
            r = step.bench_procs(args.batch, args.procs or 2, args.iters, cfg=cfg)
        elif w == "layer":
            r = step.bench_layer(args.hidden, args.batch, iters=max(args.iters, 5))
        elif w == "malloc":
            r = cpu.bench_malloc(args.hidden, args.batch, max(args.iters, 5), threads=args.threads or 2)
        elif w == "adam":
            cfg = ModelConfig(z1_hidden=args.hidden, z2_hidden=args.hidden, dec_hidden=args.hidden)
            r = step.bench_adam(args.batch, max(args.iters, 5), cfg=cfg)
        elif w == "vml":
            r = cpu.bench_vml(args.procs or 200, threads=args.threads or 2)
        elif w == "loader":
            r = data.bench_loader(args.size_gb, blocks=args.blocks, corpus_dir=args.corpus_dir, batch=args.batch)
        elif w == "index":
            r = data.bench_index(args.index_utts)
        else:
            r = export.bench_export(device=args.device)
        _table(r)
        out[w] = r
    if args.json:
        from fhvae.io.atomic import atomic_write_text
        atomic_write_text(args.json, json.dumps(out if len(out) > 1 else out[todo[0]], indent=1) + "\n")
    return 0


def main(argv=None):
    run_cli("fhvae-bench", _main, argv)


if __name__ == "__main__":
    main()
