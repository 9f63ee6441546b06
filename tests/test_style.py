"""The code passes the linter configured in pyproject.toml (ruff: pyflakes, pycodestyle, isort, bugbear)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it is pinned in requirements.txt (python3 run.py setup)")
    return found


def test_ruff_passes():
    result = subprocess.run([_ruff(), "check", "sdlab", "tests", "scripts", "run.py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_catches_what_it_should(tmp_path):
    # The configuration is live: an unused import and an unsorted import block are reported.
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(os.sep)\n")
    result = subprocess.run([_ruff(), "check", "--config", str(ROOT / "pyproject.toml"), str(bad)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "F401" in result.stdout and "I001" in result.stdout
