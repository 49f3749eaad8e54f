"""Relative links and images in the repository's Markdown files point at files that exist."""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def markdown_files():
    p = subprocess.run(["git", "-C", REPO, "ls-files", "*.md"], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("not a git checkout")
    return p.stdout.split()


def test_relative_links_resolve():
    broken = []
    for md in markdown_files():
        with open(os.path.join(REPO, md), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                for target in LINK.findall(line):
                    if re.match(r"[a-z]+:", target) or target.startswith("#"):
                        continue  # URL or anchor in the same file
                    path = os.path.normpath(os.path.join(REPO, os.path.dirname(md), target.split("#")[0]))
                    if not path.startswith(REPO + os.sep) or not os.path.exists(path):
                        broken.append(f"{md}:{n}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
