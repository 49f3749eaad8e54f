"""fhvae-report: the header names the commit of the code that wrote it; the SV table shows what each
results.json records."""
import json
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


def _sv_results(path, backend, trials, vectors, eer, **extra):
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(dict(eer=eer, eer_interp=eer, **{"mindcf_p0.01": 0.5, "mindcf_p0.001": 0.6},
                                    n_target=10, n_nontarget=20, backend=backend,
                                    inputs={"trials": str(trials), "vectors": str(vectors)}, **extra)))


def test_sv_table_reads_what_each_results_json_records(tmp_path):
    exp = tmp_path / "exp" / "fhvae"
    trials = tmp_path / "data" / "test" / "trials"
    # a directory name that says nothing (or the wrong thing) about the scoring it holds
    _sv_results(exp / "sv" / "my_run" / "results.json", "plda", trials, exp / "export/test/svector.scp", 3.75,
                lda_dim=199)
    _sv_results(exp / "sv" / "trials" / "svector_plda" / "results.json", "cosine", trials,
                tmp_path / "elsewhere" / "vectors.scp", 37.04)
    out = tmp_path / "RESULTS.md"
    write_report(str(exp), str(out), "run.sh")
    rows = [line for line in out.read_text().splitlines() if line.startswith("| data/")]
    assert rows == [
        "| data/test/trials | elsewhere/vectors.scp | cosine | 37.04 | 37.04 | 0.500 | 0.600 | 10 / 20 |",
        "| data/test/trials | export/test/svector.scp | plda (LDA 199) | 3.75 | 3.75 | 0.500 | 0.600 | 10 / 20 |"]
