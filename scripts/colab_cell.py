"""The Colab set-up cell, one text for every chapter: `python scripts/colab_cell.py` writes it into cell 0.

It installs sdlab from the repository (keeping Colab's PyTorch) and the two data packages with
``--no-deps``; anywhere but Colab it does nothing. tests/test_install.py runs it for real.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> str:
    text = (ROOT / "requirements-nodeps.txt").read_text()
    return ", ".join(f'"{m}"' for m in re.findall(r"^(\S+==\S+)", text, re.MULTILINE))


def _url() -> str:
    return re.search(r"^\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.MULTILINE).group(1)


def cell_source() -> str:
    """The set-up cell: the repository's URL from _config.yml, the packages from requirements-nodeps.txt."""
    return f'''# Set-up for Colab: installs sdlab (keeping Colab's own PyTorch), the animal
# silhouettes and CLIP's vocabulary (--no-deps: their packages declare
# TensorFlow and torchvision, and need neither). Elsewhere: nothing.
# Running it again is harmless, and no restart is needed.
import subprocess
import sys

if "google.colab" in sys.modules:
    source = "sdlab @ git+{_url()}"
    data = ["--no-deps", {_pins()}]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    for args in ([source], data):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-1500:], file=sys.stderr)
            raise SystemExit(
                f"Could not install {{args[-1]}} (is the network on?). "
                "Offline, get the course with git clone and run "
                "python3 run.py book, or pip install a copy of it."
            )
    print("sdlab is installed. No restart is needed: run the next cell.")'''


def main() -> None:
    source = cell_source()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if nb.cells[0].source != source:
            nb.cells[0].source = source
            nbformat.write(nb, path)
            print(f"wrote the set-up cell of {path.name}")


if __name__ == "__main__":
    sys.exit(main())
