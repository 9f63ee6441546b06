"""The image-tower benchmark runs and reports both towers against the CNN, in the same run."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_clip_towers.py"


def test_bench_clip_towers_reports_both_towers_and_the_ratio():
    out = subprocess.run([sys.executable, str(SCRIPT), "--batch-size", "4", "--repeats", "1", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "images/s" in line]
    assert len(lines) == 2 and "(x1.00 the CNN)" in lines[0] and "CLIPVisionModel" in lines[1]
