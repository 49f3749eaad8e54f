"""fhvae-plot: t-SNE of z1/z2 coloured by speaker, condition and phone class (paper Fig. 3) and
decoded recombinations of z1 and z2 of different segments (Fig. 4)."""
import argparse
import os

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-plot --exp-dir exp/fhvae --data-dir data/test --export-dir exp/fhvae/export/test \\
      --phone-classes local/phone_classes.txt --out-dir exp/fhvae/plots
  fhvae-plot --exp-dir exp/fhvae --data-dir data/test --out-dir plots --recombine-n 0   # t-SNE only

outputs in OUT_DIR:
  tsne_{z1,z2}_{speaker,condition,phone}.png   one t-SNE embedding per latent, coloured by each factor
                                              (phone = SON/OBS/SIL class); factors without labels
                                              (utt2cond, phones.ctm, --phone-classes) are skipped
  tsne_grid.png                               all of them: rows z1, z2; columns speaker, condition, phone
  recombination.png                           cell (i, j) decoded from [z1 of A_i, z2 of B_j]

labels read from DATA_DIR: utt2spk, utt2cond, phones.ctm ('<utt> 1 <start> <dur> <phone>')."""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-plot", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="trained exp dir (config.yaml + checkpoints)")
    p.add_argument("--data-dir", required=True, help="data dir with feats.scp and the label files")
    p.add_argument("--export-dir", help="fhvae-export output for DATA_DIR with z1.scp, z2.scp "
                                        "(default: EXP_DIR/export/<basename of DATA_DIR>)")
    p.add_argument("--out-dir", required=True, help="where the PNGs go")
    p.add_argument("--phone-classes", help="'<phone> <class>' lines (e.g. SON/OBS/SIL) for the phone plots")
    p.add_argument("--max-segments", type=int, default=2000, help="segments in the t-SNE (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="segment sampling and t-SNE seed")
    p.add_argument("--recombine-n", type=int, default=4,
                   help="n x n recombination grid (0: no recombination plot; default 4)")
    p.add_argument("--no-tsne", action="store_true", help="only the recombination plot")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.max_segments < 2 or a.recombine_n < 0:
        p.error("--max-segments must be >= 2 and --recombine-n >= 0")

    from fhvae.config import read_exp_config
    from fhvae.eval.plots import plot_recombination, plot_tsne
    if not a.no_tsne:
        cfg, _ = read_exp_config(a.exp_dir)
        export_dir = a.export_dir or os.path.join(a.exp_dir, "export", os.path.basename(os.path.normpath(a.data_dir)))
        plot_tsne(a.data_dir, export_dir, a.out_dir, seg_len=cfg.data.seg_len, phone_classes=a.phone_classes,
                  max_segments=a.max_segments, seed=a.seed)
    if a.recombine_n:
        plot_recombination(a.exp_dir, a.data_dir, os.path.join(a.out_dir, "recombination.png"),
                           n=a.recombine_n, seed=a.seed, which=a.checkpoint, device=a.device)
    return 0


def main(argv=None):
    run_cli("fhvae-plot", _main, argv)


if __name__ == "__main__":
    main()
