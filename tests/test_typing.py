"""mypy, configured in pyproject.toml ([tool.mypy]: strict enough to catch attribute
errors), finds nothing in psframework/ and models/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[dev]' brings it)")
def test_mypy_finds_no_errors():
    out = subprocess.run([sys.executable, "-m", "mypy", "psframework", "models"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
