"""The weights shipped in sdlab/weights/: they load, say how they were made, and have learned to denoise."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import sdlab as sd
from sdlab.checkpoints import load_pretrained
from sdlab.train import diffusion_loss

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_weights", ROOT / "scripts" / "train_weights.py")
train_weights = importlib.util.module_from_spec(spec)
sys.modules["train_weights"] = train_weights  # dataclasses look their module up there
spec.loader.exec_module(train_weights)
RECIPES = train_weights.RECIPES  # each shipped model's data, config, steps and weights


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_weights_load_with_their_training_record(name):
    model, info = load_pretrained(name)
    recipe = RECIPES[name]
    assert model.config == recipe.unet and info["steps"] == recipe.steps  # the file is what the script makes
    assert info["schedule"] in sd.SCHEDULE_NAMES and info["batch_size"] >= 1
    assert len(info["losses"]) == info["steps"] // 10  # every 10th step's loss
    assert info.get("weights", "final") == recipe.weights  # scenes32 predates the field: its final weights
    assert next(model.parameters()).dtype == torch.float32  # stored in float16, loaded for use in float32


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_weights_predict_the_noise(name):
    # An untrained network scores about 1 (the variance of the noise); the shipped ones far less, on
    # held-out silhouettes too. Fixed timesteps across the range keep the number steady.
    model, info = load_pretrained(name)
    schedule = sd.NoiseSchedule(info["schedule"])
    g = torch.Generator().manual_seed(0)
    x0 = RECIPES[name].data(64, g)
    t = torch.linspace(0, schedule.num_train_timesteps - 1, 64).long()
    with torch.no_grad():
        trained = diffusion_loss(model, schedule, x0, generator=g, t=t).item()
        untrained = diffusion_loss(sd.UNet(model.config), schedule, x0, generator=g, t=t).item()
    assert trained < 0.1 < 0.5 < untrained, (trained, untrained)
