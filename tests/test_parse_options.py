"""utils/parse_options.sh, sourced by a bash script under `set -euo pipefail`."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail
stage=0
use_gpu=false
train_opts="a b"
nj=4
help_message="Usage: demo.sh [--stage N] [--use-gpu true|false] <data>"
. {repo}/utils/parse_options.sh
echo "stage=$stage"
echo "use_gpu=$use_gpu"
echo "train_opts=$train_opts"
echo "nj=$nj"
echo "args=$#:$*"
"""


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.sh"
    path.write_text(SCRIPT.format(repo=REPO))

    def run(*args):
        r = subprocess.run(["bash", str(path), *args], capture_output=True, text=True, cwd=tmp_path)
        values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        return r, values
    return run


def test_declared_options_set_variables(demo):
    r, v = demo("--stage", "3", "--train-opts", "--lr 1e-3 'x y'", "--nj=8", "data/train", "--stage", "9")
    assert r.returncode == 0, r.stderr
    assert v == {"stage": "3", "use_gpu": "false", "train_opts": "--lr 1e-3 'x y'", "nj": "8",
                 "args": "3:data/train --stage 9"}  # stops at the first non-option


def test_defaults_without_options(demo):
    r, v = demo()
    assert r.returncode == 0 and v["stage"] == "0" and v["train_opts"] == "a b" and v["args"] == "0:"


def test_undeclared_option_is_an_error(demo):
    r, _ = demo("--stgae", "3", "data")
    assert r.returncode == 1 and "invalid option --stgae" in r.stderr and "stage=" not in r.stdout


def test_missing_value_is_an_error(demo):
    r, _ = demo("--stage")
    assert r.returncode == 1 and "option --stage needs a value" in r.stderr


def test_booleans(demo):
    r, v = demo("--use-gpu", "true")
    assert r.returncode == 0 and v["use_gpu"] == "true"
    r, _ = demo("--use-gpu", "yes")
    assert r.returncode == 1 and "expects true or false, got 'yes'" in r.stderr
    r, _ = demo("--use-gpu=1")
    assert r.returncode == 1 and "expects true or false" in r.stderr


def test_config_file_then_command_line(demo, tmp_path):
    (tmp_path / "my.conf").write_text("stage=5\nnj=2\n")
    r, v = demo("--config", "my.conf", "--nj", "6")
    assert r.returncode == 0, r.stderr
    assert v["stage"] == "5" and v["nj"] == "6"  # the command line wins over the config
    r, v = demo("--nj", "6", "--config=my.conf")
    assert v["stage"] == "5" and v["nj"] == "6"  # whatever the order
    r, _ = demo("--config", "missing.conf")
    assert r.returncode == 1 and "cannot read config file 'missing.conf'" in r.stderr


def test_help(demo):
    for flag in ("--help", "-h"):
        r, _ = demo("--stage", "2", flag)
        assert r.returncode == 0
        assert r.stdout == "Usage: demo.sh [--stage N] [--use-gpu true|false] <data>\n"


def test_double_dash_ends_options(demo):
    r, v = demo("--", "--stage", "3")
    assert r.returncode == 0 and v["stage"] == "0" and v["args"] == "2:--stage 3"
