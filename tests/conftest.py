import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (kept small; still run in CI)")


@pytest.fixture
def repo_root():
    return REPO
