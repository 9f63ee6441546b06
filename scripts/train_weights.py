"""Train the weights the course ships in sdlab/weights/, so readers can skip training.

    .venv/bin/python scripts/train_weights.py scenes32   # chapter 2: colour scenes, 32x32
    .venv/bin/python scripts/train_weights.py catdog32   # chapter 3: cat and dog silhouettes only

Each run prints its settings, time and final loss, and writes the final weights
(float16) with the model config and loss history as one safetensors file. A run
resumes from build/NAME-run.safetensors if that exists.
Options: --steps, --batch-size, --threads, --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sdlab as sd
from sdlab.checkpoints import WEIGHTS_DIR, save_pretrained

RECIPES = {
    # name: (data function, UNet config, default steps)
    "scenes32": (
        lambda n, g: sd.data.make_scenes(n, resolution=32, generator=g, device=g.device).images,
        sd.UNetConfig(in_channels=3, out_channels=3, sample_size=32),
        1000,
    ),
    "catdog32": (
        lambda n, g: sd.data.make_silhouette_batch(n, classes=("cat", "dog"), resolution=32, generator=g,
                                                   device=g.device)[0],
        sd.UNetConfig(in_channels=1, out_channels=1, sample_size=32),
        1000,
    ),
}


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

    data_fn, unet_config, default_steps = RECIPES[args.name]
    device = sd.pick_device()
    schedule = sd.NoiseSchedule("cosine")
    config = sd.train.TrainConfig(steps=args.steps or default_steps, batch_size=args.batch_size, lr=1e-3,
                                  warmup_steps=200, ema_decay=0.999, seed=0, checkpoint_every=250)
    torch.manual_seed(0)
    model = sd.UNet(unet_config).to(device)
    print(f"{args.name}: {sd.unet.describe(model)}\n{config}")
    checkpoint = Path(f"build/{args.name}-run.safetensors")
    result = sd.train.train(model, schedule, data_fn, config=config, checkpoint=checkpoint, resume=True)
    final = sum(result.losses[-100:]) / len(result.losses[-100:])
    out = args.out or WEIGHTS_DIR / f"{args.name}.safetensors"
    info = {"schedule": schedule.name, "steps": config.steps, "batch_size": config.batch_size,
            "final_loss": round(final, 5), "losses": [round(x, 5) for x in result.losses[::10]],
            "trained_on": f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type,
            "seconds": round(result.seconds, 1) if result.seconds > 1 else None,  # None: only exported here
            "date": time.strftime("%Y-%m-%d")}
    # The final weights, not the EMA: these runs are short (1 000 steps), and the shipped
    # files were trained before the EMA had its warm-up, when it still leaned on the untrained start.
    save_pretrained(out, result.model, info=info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): final loss {final:.4f}, "
          f"{result.images_per_second:.0f} images/s, {result.seconds:.0f} s")


if __name__ == "__main__":
    main()
