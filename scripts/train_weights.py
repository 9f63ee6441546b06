"""Train the weights the course ships in sdlab/weights/, so readers can skip training.

    .venv/bin/python scripts/train_weights.py scenes32   # chapter 2: colour scenes, 32x32
    .venv/bin/python scripts/train_weights.py catdog32   # chapter 3: cat and dog silhouettes only

Each run prints its settings, time and final loss, and writes the weights (float16;
the EMA or the final weights, as the recipe says) with the model config and loss
history as one safetensors file. A run resumes from build/NAME-run.safetensors
if that exists (a finished run is then only exported again).
Options: --steps, --batch-size, --threads, --out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import sdlab as sd
from sdlab.checkpoints import WEIGHTS_DIR, save_pretrained


@dataclass(frozen=True)
class Recipe:
    """What one shipped model is trained on, how long, and which of its weights are shipped."""

    data: Callable[[int, torch.Generator], torch.Tensor]  # (batch size, generator) -> clean images
    unet: sd.UNetConfig
    steps: int
    # Which weights to ship: the EMA ("ema") pays off once a run is several times longer than the
    # EMA's memory (about 1 / (1 - 0.999) = 1 000 steps); a 1 000-step run ships its final weights.
    weights: str


RECIPES = {
    "scenes32": Recipe(
        lambda n, g: sd.data.make_scenes(n, resolution=32, generator=g, device=g.device).images,
        sd.UNetConfig(in_channels=3, out_channels=3, sample_size=32),
        steps=1000, weights="final",
    ),
    "catdog32": Recipe(
        lambda n, g: sd.data.make_silhouette_batch(n, classes=("cat", "dog"), resolution=32, generator=g,
                                                   device=g.device)[0],
        sd.UNetConfig(in_channels=1, out_channels=1, sample_size=32),
        steps=4000, weights="ema",
    ),
}


def _machine(device: torch.device) -> str:
    """Where the run happened, for the shipped file's record: "cpu (1 thread)", "cuda (NVIDIA H100 ...)"."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = RECIPES[args.name]
    device = sd.pick_device()
    schedule = sd.NoiseSchedule("cosine")
    config = sd.train.TrainConfig(steps=args.steps or recipe.steps, batch_size=args.batch_size, lr=1e-3,
                                  warmup_steps=200, ema_decay=0.999, seed=0, checkpoint_every=250)
    torch.manual_seed(0)
    model = sd.UNet(recipe.unet).to(device)
    print(f"{args.name}: {sd.unet.describe(model)}\n{config}")
    checkpoint = Path(f"build/{args.name}-run.safetensors")
    result = sd.train.train(model, schedule, recipe.data, config=config, checkpoint=checkpoint, resume=True)
    final = sum(result.losses[-100:]) / len(result.losses[-100:])
    out = args.out or WEIGHTS_DIR / f"{args.name}.safetensors"
    info = {"schedule": schedule.name, "steps": config.steps, "batch_size": config.batch_size,
            "weights": recipe.weights, "final_loss": round(final, 5),
            "losses": [round(x, 5) for x in result.losses[::10]],
            "trained_on": _machine(device),
            "seconds": round(result.seconds, 1) if result.seconds > 1 else None,  # None: only exported here
            "date": time.strftime("%Y-%m-%d")}
    save_pretrained(out, result.ema if recipe.weights == "ema" else result.model, info=info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): final loss {final:.4f}, "
          f"{result.images_per_second:.0f} images/s, {result.seconds:.0f} s")


if __name__ == "__main__":
    main()
