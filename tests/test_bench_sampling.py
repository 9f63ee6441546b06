"""scripts/bench_sampling.py: its equal-quality rule and its list of candidate samplers."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_sampling", ROOT / "scripts" / "bench_sampling.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_sampling"] = bench
spec.loader.exec_module(bench)

DDPM_1000 = {"frechet_distance": 20.0, "confidence": 0.99}


@pytest.mark.parametrize("fd, confidence, expected", [
    (20.0, 0.99, True),    # the reference itself
    (25.0, 0.98, True),    # both limits exactly
    (25.1, 0.99, False),   # Fréchet distance more than 1.25 x the reference's
    (10.0, 0.979, False),  # better distance, but the judge is less sure
])
def test_equal_quality_rule(fd, confidence, expected):
    assert bench.equal_quality({"frechet_distance": fd, "confidence": confidence}, DDPM_1000) is expected


def test_parse_candidates():
    assert bench.parse_candidates("dpmsolver++:20, ddpm:100,ddim-eta1:50") == [
        ("dpmsolver++", 20), ("ddpm", 100), ("ddim-eta1", 50)]


@pytest.mark.parametrize("text", ["dpm:20", "ddpm", "ddpm:0", "ddpm:1001", "ddim:ten", ""])
def test_parse_candidates_rejects(text):
    with pytest.raises(ValueError, match="is not SAMPLER:STEPS"):
        bench.parse_candidates(text)
