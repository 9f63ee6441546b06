"""What each of chapter 5's VAE design choices cost in PSNR: the same training budget in steps, per configuration.

    .venv/bin/python scripts/vae_choices.py                       # every configuration, 600 steps each
    .venv/bin/python scripts/vae_choices.py --only "(16,32,64) no attn" --steps 600
    .venv/bin/python scripts/vae_choices.py --steps 5 --out /tmp/x.json   # a quick look

Each configuration of ``bench_vae.CONFIGS`` (factor 4 only) trains from the same seed for the same
number of steps of the shipped recipe (batch 64 of 32 × 32 crops, lr 2e-3, KL weight 1e-6), then
is scored on 300 held-out scenes (``sdlab.vae.evaluate_vae``). The results, with the training
speed measured in the same run, are merged into ``sdlab/data_files/vae_choices.json``, which
chapter 5 shows as a table. Runs of different configurations may go in parallel processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch
from bench_vae import CONFIGS

import sdlab as sd
from sdlab.pretrained import REGISTRY

OUT = Path(sd.__file__).parent / "data_files" / "vae_choices.json"


def run(name: str, steps: int) -> dict:
    recipe = REGISTRY["vae_f4"].recipe
    with sd.random.seeded_global_rng(recipe.seed):
        vae = sd.vae.make_vae(**CONFIGS[name])
    config = recipe.train_config(steps=steps)
    data = functools.partial(sd.vae.vae_batch, crop=recipe.crop)
    loss = functools.partial(sd.vae.vae_loss, kl_weight=recipe.kl_weight)
    result = sd.train.fit(vae, loss, data, config=config, desc=name)
    quality = sd.vae.evaluate_vae(result.model, n=300)
    return {"parameters": sd.unet.count_parameters(vae), "steps": steps, "batch_size": config.batch_size,
            "seconds": round(result.seconds, 1), "crops_per_second": round(result.images_per_second, 1), **quality,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", action="append", choices=[n for n in CONFIGS if not n.startswith("f8")])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.only or [n for n in CONFIGS if not n.startswith("f8")]:
        row = run(name, args.steps)
        print(f"{name}: {row}", flush=True)
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
        results[name] = row
        tmp = args.out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        tmp.replace(args.out)  # atomic: a parallel run never reads half a file


if __name__ == "__main__":
    main()
