"""The landing page's strip of pictures is what the shipped pipeline paints, not a hand-picked image."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_the_strip_on_the_landing_page_is_what_the_script_paints():
    spec = importlib.util.spec_from_file_location("landing_strip", ROOT / "scripts" / "landing_strip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    painted = np.asarray(module.paint_strip(), dtype=np.float64)
    committed = np.asarray(Image.open(module.OUT).convert("RGB"), dtype=np.float64)
    assert painted.shape == committed.shape == (64 * 4, 6 * 64 * 4 + 5 * 8, 3)
    # float32 round-off differs between CPUs: allow a level here and there, not another picture
    assert np.abs(painted - committed).mean() < 0.5
    assert "images/landing_strip.png" in (ROOT / "book" / "intro.md").read_text()
