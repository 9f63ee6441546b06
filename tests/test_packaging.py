"""The package as Colab installs it: a wheel (not this checkout) that holds every shipped weights file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from sdlab.pretrained import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_shipped_weights_file_and_they_load_outside_the_checkout(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("sdlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for entry in REGISTRY.values():
        files = [entry.path] if entry.path.is_file() else [p for p in entry.path.rglob("*") if p.is_file()]
        for file in files:
            assert file.relative_to(ROOT).as_posix() in names, f"the wheel lacks {file.relative_to(ROOT)}"
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # what pip install does with a pure-Python wheel
        archive.extractall(site)
    script = f"""
import sdlab, sdlab.pretrained as p
assert sdlab.__file__.startswith({str(site)!r}), sdlab.__file__
for name in p.names():
    p.load_pretrained(name)
print("loaded", len(p.names()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["loaded", str(len(REGISTRY))]
