"""fhvae-convert: decode utterances with their sequence-level factor replaced by a target speaker's
(z2 of every segment shifted by target s-vector - the utterance's own s-vector)."""
import argparse

from fhvae.bin import run_cli

EPILOG = """examples:
  fhvae-convert --exp-dir exp/fhvae --data-dir data/test --target-spk spk03 \\
      --svectors exp/fhvae/export/train/spk_svector.scp --out-dir exp/fhvae/convert/test_to_spk03
  fhvae-convert ... --src-utt2tgt conf/utt2tgt --windows frame

For each window w of an utterance u with s-vector s_u, and the target speaker's s-vector s_t:
  x'(w) = decoder mean of p(x | z1 = zbar1(w), z2 = zbar2(w) + s_t - s_u)
(zbar = posterior means), then un-normalized with the training stats.
--windows segment: non-overlapping windows (fast); frame: a window per frame, centre frame kept.

outputs: OUT_DIR/feats.{ark,scp} (Kaldi FM, same frame counts as the input), utt2num_frames,
         utt2tgt ('<utt> <target-spk>')."""


def _main(argv):
    p = argparse.ArgumentParser(prog="fhvae-convert", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="trained exp dir (config.yaml + checkpoints)")
    p.add_argument("--data-dir", required=True, help="data dir with feats.scp of the source utterances")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target-spk", help="convert every utterance to this speaker")
    tgt.add_argument("--src-utt2tgt", help="file '<utt> <target-spk>': convert only these utterances")
    p.add_argument("--svectors", required=True, help="speaker s-vectors (spk_svector.scp of fhvae-export)")
    p.add_argument("--out-dir", required=True, help="writes feats.ark/scp, utt2num_frames, utt2tgt here")
    p.add_argument("--windows", choices=["segment", "frame"], default="segment",
                   help="decode non-overlapping segments (default) or one window per frame")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    from fhvae.eval.convert import convert
    convert(a.exp_dir, a.data_dir, a.out_dir, a.svectors, target_spk=a.target_spk, src_utt2tgt=a.src_utt2tgt,
            mode=a.windows, which=a.checkpoint, device=a.device)
    return 0


def main(argv=None):
    run_cli("fhvae-convert", _main, argv)


if __name__ == "__main__":
    main()
