"""fhvae-report: the header names the commit of the code that wrote it."""
import os
import subprocess

import pytest

from fhvae.eval.report import write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_names_this_codes_commit_wherever_it_is_written(tmp_path):
    p = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("not a git checkout")
    exp = tmp_path / "exp"
    exp.mkdir()
    out = tmp_path / "elsewhere" / "RESULTS.md"   # outside the repository
    out.parent.mkdir()
    write_report(str(exp), str(out), "run.sh")
    assert f"at commit {p.stdout.strip()}" in out.read_text()
