"""fhvae-train and fhvae-export on what they must finish cleanly or refuse in one line: a finished exp
dir, --overwrite, someone else's checkpoint, features of another dimension, a CUDA device that is not
there; the training log."""
import os
import re
import subprocess
import sys

import pytest
import torch

from fhvae import config
from fhvae.errors import DataError, FhvaeError
from fhvae.export import export
from fhvae.train import checkpoint as ckpt
from fhvae.train.expdir import prepare_exp_dir, read_metrics
from fhvae.train.progress import EpochProgress
from fhvae.train.trainer import Trainer
from tests.conftest import REPO
from tests.fakedata import make_feats_dir
from tests.test_trainer import TINY, sets, train  # noqa: F401 (sets: the fixture)

ENV = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d fhvae-train [A-Z]+: ")


def cli(sets, exp, *extra):
    """fhvae-train on the tiny sets in a fresh process, stderr redirected (not a terminal)."""
    d = str(sets)
    over = [a for k, v in TINY for a in (f"--{k}", str(v))]
    return subprocess.run([sys.executable, "-m", "fhvae.bin.train", "--train-dir", f"{d}/train", "--dev-dir",
                           f"{d}/dev", "--exp-dir", exp, *over, *extra], env=ENV, capture_output=True, text=True)


def test_finished_run_says_how_to_train_again_and_done_removed_does_not_train_on(sets, caplog):
    exp = str(sets / "exp")
    assert train(sets, exp)["step"] == 9
    with caplog.at_level("INFO"):
        assert train(sets, exp)["step"] == 9
    assert "training already finished (use --overwrite to train again from scratch, or a new --exp-dir)" \
        in caplog.text
    best = os.path.join(exp, "checkpoints", "best.pt")
    before = open(best, "rb").read()
    os.unlink(os.path.join(exp, "done"))
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train(sets, exp)["step"] == 9   # not one more epoch past train.max_epochs=3
    assert "already meets the stopping rule (train.max_epochs=3" in caplog.text
    assert os.path.isfile(os.path.join(exp, "done"))
    assert open(best, "rb").read() == before
    assert [r["step"] for r in read_metrics(exp)] == [3, 6, 9]


def test_cli_log_file_plain_progress_lines_and_overwrite(sets):
    exp = str(sets / "exp")
    p = cli(sets, exp)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr   # no progress bar into redirected output
    text = open(os.path.join(exp, "log", "train.log")).read()
    assert "epoch 1 step 1/3: loss " in text and "epoch 3 step 3/3: loss " in text
    assert [x for x in p.stderr.splitlines() if LOG_LINE.match(x)] == text.splitlines()
    # another config: refused, naming the values, and the log says why
    p = cli(sets, exp, "--train.lr", "0.002")
    assert p.returncode == 1
    msg = "differs in: train.lr (was 0.001, now 0.002); use --overwrite to train again from scratch"
    assert p.stderr.splitlines()[-1].startswith("fhvae-train: error: ") and msg in p.stderr
    assert msg in open(os.path.join(exp, "log", "train.log")).read().splitlines()[-1]
    # --overwrite: trained again from scratch with the new config; the log goes on
    p = cli(sets, exp, "--train.lr", "0.002", "--overwrite")
    assert p.returncode == 0, p.stderr
    assert [r["step"] for r in read_metrics(exp)] == [3, 6, 9]
    assert config.read_exp_config(exp)[0].train.lr == 0.002
    after = open(os.path.join(exp, "log", "train.log")).read()
    assert after.startswith(text) and "--overwrite" in after[len(text):]


def test_progress_lines_every_tenth_of_an_epoch(caplog):
    with caplog.at_level("INFO"):
        p = EpochProgress(2, 25, show=True, tty=False)
        for _ in range(25):
            p.update({"loss": 4.0})
        p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 12 and re.fullmatch(r"epoch 2 step 2/25: loss 4.0 \([\d.]+ steps/s\)", lines[0])
    caplog.clear()
    p = EpochProgress(1, 25, show=False, tty=False)   # rank > 0: silent
    p.update({"loss": 1.0})
    assert not caplog.records


def test_checkpoint_with_a_pickled_callable_is_refused(sets):
    exp = str(sets / "exp")
    train(sets, exp, [("train.max_epochs", 1)])
    path = os.path.join(ckpt.last_step_dir(os.path.join(exp, "checkpoints")), "model.pt")
    torch.save({**torch.load(path, weights_only=True), "x": os.system}, path)
    refused = rf"{re.escape(path)}: not a plain-weights checkpoint \(it refers to \w+\.system\)"
    with pytest.raises(FhvaeError, match=refused):
        train(sets, exp, [("train.max_epochs", 2)])
    best = os.path.join(exp, "checkpoints", "best.pt")
    torch.save({"model": ckpt.load_file(best)["model"], "x": os.system}, best)
    with pytest.raises(FhvaeError, match=rf"{re.escape(best)}: not a plain-weights checkpoint"):
        export(exp, str(sets / "dev"), str(sets / "out"))


def test_dev_or_export_features_of_another_dim(sets):
    make_feats_dir(str(sets / "dev5"), n_spk=2, utts_per_spk=2, dim=5, seed=1)
    d, exp = str(sets), str(sets / "exp")
    cfg = config.load_config(None, TINY + [("train.max_epochs", 1)])
    prepare_exp_dir(cfg, exp, f"{d}/train", f"{d}/dev5", f"{d}/train/stats.npz")
    with pytest.raises(DataError, match=rf"^model.feat_dim=8 but {re.escape(d)}/dev5/feats.scp has dim 5$"):
        Trainer(cfg, f"{d}/train", f"{d}/dev5", exp).run()
    assert not os.path.exists(os.path.join(exp, "metrics.jsonl"))
    assert ckpt.last_step_dir(os.path.join(exp, "checkpoints")) is None
    train(sets, str(sets / "ok"), [("train.max_epochs", 1)])
    with pytest.raises(DataError, match=rf"^model.feat_dim=8 but {re.escape(d)}/dev5/feats.scp has dim 5$"):
        export(str(sets / "ok"), f"{d}/dev5", f"{d}/out")
    assert not os.path.exists(f"{d}/out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("recipe", ["timit", "aurora4", "librispeech", "voxceleb1", "ami"])
def test_recipe_config_asks_for_cuda_on_a_machine_without_it(sets, recipe, capsys):
    from fhvae.bin import train as train_cli
    d, exp = str(sets), str(sets / "exp")
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--config", os.path.join(REPO, "egs", recipe, "v1", "conf", "train.yaml"),
                        "--train-dir", f"{d}/train", "--dev-dir", f"{d}/dev", "--exp-dir", exp])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == ("fhvae-train: error: train.device=cuda but no CUDA device is available; "
                   "run with --train.device cpu")
    assert not os.path.exists(exp)   # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_export_on_cuda_without_it(sets, capsys):
    from fhvae.bin import export as export_cli
    d = str(sets)
    train(sets, f"{d}/exp", [("train.max_epochs", 1)])
    with pytest.raises(SystemExit) as e:
        export_cli.main(["--exp-dir", f"{d}/exp", "--data-dir", f"{d}/dev", "--out-dir", f"{d}/out",
                         "--device", "cuda"])
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().endswith(
        "error: --device=cuda but no CUDA device is available; run with --device cpu")
    assert not os.path.exists(f"{d}/out")
