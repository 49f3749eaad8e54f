"""The mini recipe end to end (stages 1-8), shrunk: a few speakers, a tiny model, a few steps."""
import json
import os

import kaldiio
import pytest

from tests.test_recipes import recipe_copy, run

TINY_TRAIN = ("--model.z1_hidden 16 --model.z2_hidden 16 --model.dec_hidden 16 --model.z1_dim 8 "
              "--model.z2_dim 8 --train.batch_size 32 --train.seq_batch_size 8 --train.epoch_steps 5 "
              "--train.max_epochs 2 --train.num_threads 1")


@pytest.mark.slow
def test_mini_recipe_all_stages(tmp_path):
    recipe = recipe_copy(str(tmp_path), "mini")
    env_run = ["env", "OMP_NUM_THREADS=1", "./run.sh"]
    out = run(env_run + ["--num-train-spk", "4", "--num-test-spk", "3", "--utts-per-spk", "6",
                         "--num-dev-utts", "2", "--nj", "2", "--train-opts", TINY_TRAIN, "--train-nproc", "2",
                         "--tsne-segments", "200", "--asr-opts", "--epochs 2 --vocab-size 30 --hidden 16"],
              cwd=recipe).stdout
    exp = os.path.join(recipe, "exp", "fhvae")
    # stage 4: a finished run with its config, curve and checkpoints
    for f in ("config.yaml", "done", "metrics.jsonl", "training_curve.png", "checkpoints/best.pt"):
        assert os.path.isfile(os.path.join(exp, f)), f
    last = open(os.path.join(exp, "checkpoints", "last")).read().strip()   # --train-nproc 2: two ranks
    assert sorted(os.listdir(os.path.join(exp, "checkpoints", last))) == ["model.pt", "rank0.pt", "rank1.pt"]
    # stages 2, 5-8: the commands ran side by side (run.sh --jobs 2), each with its log; stages 6-8
    # shared the job slots and printed their EER lines and ASR table at the end
    for s in ("train", "train_clean", "dev", "test", "test_1s"):
        assert os.path.isfile(os.path.join(recipe, "exp", "make_fbank", f"{s}.log")), s
    for f in ("log/export.train.log", "log/export.train_clean.log", "log/baseline.test_1s.log",
              "log/score.trials.svector_plda.log", "log/score.test_1s_trials_same_cond.baseline_cosine.log",
              "log/plot.log", "log/probe.log", "log/asr.log", "asr/fbank/log", "asr/z1/log"):
        assert os.path.isfile(os.path.join(exp, f)), f
    assert out.count("plda: EER") == 8 and out.count("cosine: EER") == 8
    assert "ASR word error rate" in out and "| z1 |" in out
    assert "run.sh: done (stages 1-8 in " in out   # the wall time of the whole run (README's demo time)
    # stage 1: the ASR's training set, the clean train utterances
    conds = dict(line.split() for line in open(os.path.join(recipe, "data", "train", "utt2cond")))
    clean = [line.split()[0] for line in open(os.path.join(recipe, "data", "train_clean", "utt2spk"))]
    assert clean == sorted(u for u, c in conds.items() if c == "clean") and clean
    # stage 5: s-vectors of every set; frame-level z1 of test and train_clean with frame counts equal to
    # utt2num_frames; train, dev and the 1 s crops of the test set as s-vectors only
    for s in ("train", "train_clean", "dev", "test", "test_1s"):
        n2f = dict(line.split() for line in open(os.path.join(recipe, "data", s, "utt2num_frames")))
        assert len(kaldiio.load_scp(os.path.join(exp, "export", s, "svector.scp"))) == len(n2f)
        if s in ("train_clean", "test"):
            z1 = kaldiio.load_scp(os.path.join(exp, "export", s, "z1.scp"))
            assert {k: v.shape[0] for k, v in z1.items()} == {k: int(v) for k, v in n2f.items()}
        else:
            assert not os.path.exists(os.path.join(exp, "export", s, "z1.scp")), s
    assert set(n2f.values()) == {"98"}  # test_1s: 1 s at 16 kHz: 1 + (16000 - 400) // 160 frames
    # stage 6: two trial lists (whole utterances, 1 s crops) x four scorings, each with the metrics
    for trials in ("trials", "trials_same_cond", "test_1s/trials", "test_1s/trials_same_cond"):
        for name in ("svector_cosine", "svector_plda", "baseline_cosine", "baseline_plda"):
            r = json.load(open(os.path.join(exp, "sv", trials, name, "results.json")))
            assert 0 <= r["eer"] <= 100 and "mindcf_p0.01" in r
    # stage 7: plots, probes and the generated RESULTS.md
    for f in ("plots/tsne_grid.png", "plots/tsne_z2_speaker.png", "plots/recombination.png",
              "probes/probes.json", "RESULTS.md"):
        assert os.path.isfile(os.path.join(exp, f)), f
    # stage 7: ABX of fbank and z1
    for feats in ("fbank", "z1"):
        r = json.load(open(os.path.join(exp, "abx", feats, "results.json")))
        assert 0 <= r["within"] <= 100 and 0 <= r["across"] <= 100
    # stage 8: ASR on fbank and z1, WER per test condition
    for feats in ("fbank", "z1"):
        r = json.load(open(os.path.join(exp, "asr", feats, "results.json")))
        assert set(r["per_cond"]) == {"clean", "noise", "telephone"} and r["wer"] >= 0
    report = open(os.path.join(exp, "RESULTS.md")).read()
    assert "Speaker verification" in report and "svector" in report and "probes" in report.lower()
    assert "ABX" in report and "WER telephone" in report
    # local/repeat_training.py: the same short training in two fresh processes at once, the same weights
    tiny = TINY_TRAIN.replace("--train.epoch_steps 5 --train.max_epochs 2 ", "").split()
    out = run(["../../../tools/venv/bin/python", "local/repeat_training.py", "--runs", "2", "--steps", "3",
               "--jobs", "2", "--", *tiny], cwd=recipe).stdout
    assert out.strip().startswith("2 runs: weights") and len(out.strip().splitlines()) == 1, out
    # re-running a finished stage range redoes nothing harmful: training is not redone
    out = run(env_run + ["--stage", "4", "--stop-stage", "4", "--train-opts", TINY_TRAIN], cwd=recipe)
    assert "already finished" in out.stderr
