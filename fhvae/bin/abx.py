"""fhvae-abx: ABX phone discriminability (ZeroSpeech / libri-light style, within and across speakers)
of any frame-level feature scp: fbank, or an exported latent such as z1."""
import argparse

from fhvae.bin import run_cli

EPILOG = """examples:
  # exported z1 of the test set (one row per 10 ms frame)
  fhvae-abx --feats exp/fhvae/export/test/z1.scp --data-dir data/test --out-dir exp/fhvae/abx/z1

  # fbank reference, every item kept (slower)
  fhvae-abx --feats data/test/feats.scp --data-dir data/test --out-dir exp/fbank/abx \\
      --max-items-per-cell 0

Items are the non-SIL phones of DATA_DIR/phones.ctm in their triphone context (previous, next
phone); speakers come from DATA_DIR/utt2spk. Frame distance: angle / pi of L2-normalised frames;
item distance: DTW normalised by the path length. Error of (A, B, X), A and X the same phone, B
another, one context: 1 if d(A,X) > d(B,X), 0.5 if equal. Within: A, B, X of one speaker; across:
A, B of one speaker, X of another. Averaged as libri-light's eval_ABX.py: over the triplets of a
cell, then within over contexts, speakers, phone pairs; across over (context, X speaker), A speakers,
phone pairs.
Each (context, phone, speaker) cell keeps at most --max-items-per-cell items (seeded sample).

outputs: OUT_DIR/results.json  within, across (percent), counts, options, inputs
         OUT_DIR/results.md    the same as a one-row Markdown table"""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-abx", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats", required=True, help="frame-level feature scp (fbank feats.scp, z1.scp, ...)")
    p.add_argument("--data-dir", required=True, help="data dir with utt2spk and phones.ctm")
    p.add_argument("--out-dir", required=True, help="writes results.json and results.md here")
    p.add_argument("--max-items-per-cell", type=int, default=5,
                   help="items kept per (context, phone, speaker), 0 = all (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the item sample (default %(default)s)")
    a = p.parse_args(argv)
    if a.max_items_per_cell < 0:
        p.error("--max-items-per-cell must be >= 0")

    from fhvae.eval.abx import run_abx
    r = run_abx(a.feats, a.data_dir, a.out_dir, max_items_per_cell=a.max_items_per_cell or None, seed=a.seed)
    f = lambda v: "n/a" if v is None else f"{v:.2f}%"  # noqa: E731
    print(f"ABX within {f(r['within'])}, across {f(r['across'])} ({r['n_items']} items, "
          f"{r['n_cells']['within']} within / {r['n_cells']['across']} across cells) -> {a.out_dir}")
    return 0


def main(argv=None):
    run_cli("fhvae-abx", _main, argv)


if __name__ == "__main__":
    main()
