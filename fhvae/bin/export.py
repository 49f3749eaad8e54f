"""fhvae-export: write z1, z2 (frame rate), s-vectors and speaker s-vectors as Kaldi ark/scp."""
import argparse
import json

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-export --exp-dir exp/fhvae --data-dir data/test --out-dir exp/fhvae/export/test
  fhvae-export ... --logvars --checkpoint last
  fhvae-export ... --svectors-only --svector-shift 8   # s-vectors from segments every 8 frames

outputs (absolute ark paths in every scp):
  z1.scp, z2.scp           frame-level posterior means, Kaldi float matrices (T x 32), T = utt2num_frames
  z1_logvar.scp, ...       with --logvars
  svector.scp              per-utterance MAP estimate of mu2 (segments every --svector-shift frames), FV
  spk_svector.scp          per-speaker mean s-vector (FV); num_utts.ark: 'spk count'"""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-export", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="trained exp dir (config.yaml + checkpoints)")
    p.add_argument("--data-dir", required=True, help="Kaldi data dir with feats.scp, utt2num_frames, utt2spk")
    p.add_argument("--out-dir", required=True, help="where the ark/scp files go (recipes: <exp>/export/<set>)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--logvars", action="store_true", help="also write z1_logvar and z2_logvar")
    p.add_argument("--svectors-only", action="store_true",
                   help="only svector/spk_svector (no frame-level z1/z2), e.g. for a large train set")
    p.add_argument("--svector-shift", type=int,
                   help="frames between the segments an s-vector averages (default: the exp's "
                        "data.svector_shift; 20 = non-overlapping)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-windows", type=int,
                   help="windows per forward pass (default: 512 on CPU, 4096 on a GPU)")
    p.add_argument("--max-bad", type=float, default=0.05, help="fraction of broken utterances tolerated")
    args = p.parse_args(argv)

    from fhvae.export import export
    summary = export(args.exp_dir, args.data_dir, args.out_dir, which=args.checkpoint, device=args.device,
                     logvars=args.logvars, batch_windows=args.batch_windows, max_bad=args.max_bad,
                     svectors_only=args.svectors_only, svector_shift=args.svector_shift)
    print(json.dumps(summary))
    return 0


def main(argv=None):
    run_cli("fhvae-export", _main, argv)


if __name__ == "__main__":
    main()
