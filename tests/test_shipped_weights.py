"""The weights shipped in sdlab/weights/: they load, say how they were made, and have learned to denoise."""

import pytest
import torch

import sdlab as sd
from sdlab.checkpoints import load_pretrained
from sdlab.train import diffusion_loss

DATA = {  # the same data scripts/train_weights.py trains each model on
    "scenes32": lambda n, g: sd.data.make_scenes(n, resolution=32, generator=g).images,
    "catdog32": lambda n, g: sd.data.make_silhouette_batch(n, classes=("cat", "dog"), generator=g)[0],
}


@pytest.mark.parametrize("name", sorted(DATA))
def test_shipped_weights_load_with_their_training_record(name):
    model, info = load_pretrained(name)
    assert info["schedule"] in sd.SCHEDULE_NAMES and info["steps"] >= 1000 and info["batch_size"] >= 1
    assert len(info["losses"]) == info["steps"] // 10  # every 10th step's loss
    assert info.get("weights", "final") in ("final", "ema")
    assert next(model.parameters()).dtype == torch.float32  # stored in float16, loaded for use in float32


@pytest.mark.parametrize("name", sorted(DATA))
def test_shipped_weights_predict_the_noise(name):
    # An untrained network scores about 1 (the variance of the noise); the shipped ones far less, on
    # held-out silhouettes too. Fixed timesteps across the range keep the number steady.
    model, info = load_pretrained(name)
    schedule = sd.NoiseSchedule(info["schedule"])
    g = torch.Generator().manual_seed(0)
    x0 = DATA[name](64, g)
    t = torch.linspace(0, schedule.num_train_timesteps - 1, 64).long()
    with torch.no_grad():
        trained = diffusion_loss(model, schedule, x0, generator=g, t=t).item()
        untrained = diffusion_loss(sd.UNet(model.config), schedule, x0, generator=g, t=t).item()
    assert trained < 0.1 < 0.5 < untrained, (trained, untrained)
