"""Lint and types are part of the test command: ruff and mypy must be clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import installed_script

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_boundaries_hold() -> None:
    """The layers in docs/architecture.md, enforced by import-linter (.importlinter)."""
    script = installed_script("lint-imports")
    result = subprocess.run([str(script)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
