"""How fast do AutoencoderKL configurations train on this machine? The measurements behind chapter 5's VAE.

    .venv/bin/python scripts/bench_vae.py                 # every configuration, 1 thread, 64×64 and 32×32 crops
    .venv/bin/python scripts/bench_vae.py --steps 3       # a quick look

Times whole training steps (forward, loss, backward, AdamW) of ``diffusers.AutoencoderKL`` at
batch 32 and prints images per second, next to the issue's baseline: block_out_channels
(32, 64, 64), one resnet per block, mid-block attention, 32 groups.
"""

from __future__ import annotations

import argparse
import time

import torch

import sdlab as sd

CONFIGS = {  # name: AutoencoderKL keyword arguments (factor 4 unless the name says f8)
    # make_vae leaves the mid-block attention out unless asked: the baseline asks
    "baseline (32,64,64) attn": dict(block_out_channels=(32, 64, 64), norm_num_groups=32, mid_block_add_attention=True),
    "(32,64,64) no attn": dict(block_out_channels=(32, 64, 64), norm_num_groups=32, mid_block_add_attention=False),
    "(32,64,64) no attn, 8 groups": dict(block_out_channels=(32, 64, 64), norm_num_groups=8,
                                         mid_block_add_attention=False),
    "(16,32,64) no attn": dict(block_out_channels=(16, 32, 64), norm_num_groups=8, mid_block_add_attention=False),
    "(16,32,32) no attn": dict(block_out_channels=(16, 32, 32), norm_num_groups=8, mid_block_add_attention=False),
    "f8 (16,32,64,64) no attn": dict(factor=8, block_out_channels=(16, 32, 64, 64), norm_num_groups=8,
                                     mid_block_add_attention=False),
}


def images_per_second(kwargs: dict, side: int, steps: int, batch_size: int = 32) -> float:
    vae = sd.vae.make_vae(**kwargs)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    x = sd.data.make_scenes(batch_size, **sd.data.SCENES, generator=torch.Generator().manual_seed(0)).images
    x = x[..., :side, :side].contiguous()
    g = torch.Generator().manual_seed(0)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()  # the first step warms up
        loss = sd.vae.vae_loss(vae, x, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'configuration':28}{'params':>9}{'64x64 img/s':>13}{'32x32 crops':>13}   ({args.threads} thread(s))")
    base = None
    for name, kwargs in CONFIGS.items():
        n = sd.unet.count_parameters(sd.vae.make_vae(**kwargs))
        full, crop = (images_per_second(kwargs, side, args.steps) for side in (64, 32))
        base = base or full
        print(f"{name:28}{n / 1e6:8.2f}M{full:13.1f}{crop:13.1f}   ({full / base:.1f}x, {crop / base:.1f}x)",
              flush=True)


if __name__ == "__main__":
    main()
