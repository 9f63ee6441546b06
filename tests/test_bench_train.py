"""scripts/bench_train.py: its runs work on tiny sizes, and its loss-level arithmetic is right."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_train"] = bench  # dataclasses look their module up there
spec.loader.exec_module(bench)

CPU = torch.device("cpu")


def tiny_hf():
    torch.manual_seed(0)
    return bench.hf_course_unet(layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
                                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def test_the_baseline_model_is_the_courses():
    config = bench.HF_COURSE_UNET
    assert config["block_out_channels"] == (64, 128, 128, 256) and config["layers_per_block"] == 2
    assert config["down_block_types"][2:] == ("AttnDownBlock2D", "AttnDownBlock2D")
    model = tiny_hf()  # built from a config: no download
    assert model.config.sample_size == 32 and model.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")


def test_both_runs_train_on_the_same_number_of_images():
    pool = bench.scene_pool(8)
    assert pool.shape == (8, 3, 32, 32) and pool.min() >= -1 and pool.max() <= 1
    base = bench.run_baseline(tiny_hf, pool, images=8, batch_size=4, device=CPU, warmup_steps=0)
    ours = bench.run_sdlab(tiny_hf, pool, images=8, batch_size=4, device=CPU, warmup_steps=1)
    for run in (base, ours):
        assert run.images == 8 and len(run.losses) == 2 and run.seconds > 0
        assert 0.1 < run.final_loss < 10 and run.images_per_second == pytest.approx(8 / run.seconds)
        assert "GiB" in run.peak_memory


def test_baseline_loop_cycles_through_the_data():
    losses = bench.baseline_loop(tiny_hf(), bench.scene_pool(4), steps=3, batch_size=4, device=CPU)
    assert len(losses) == 3  # three epochs of one batch


def test_target_and_time_to_target():
    losses = [1.0] * 10 + [0.5] * 10  # recorded every 10 steps
    assert bench.target_from_losses(losses, every=10, step=200, smooth=50) == 0.5
    assert bench.target_from_losses(losses, every=10, step=110, smooth=50) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="outside the history of 200 steps"):
        bench.target_from_losses(losses, every=10, step=300)
    run = bench.RunResult("r", batch_size=2, images=40, seconds=10.0, losses=[1.0] * 10 + [0.2] * 10)
    assert bench.time_to_target(run, 0.5, smooth=4) == (26, 6.5)  # mean of steps 10..13 first <= 0.5 at step 13
    assert bench.time_to_target(run, 0.1, smooth=4) is None
