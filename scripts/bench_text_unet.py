"""How fast do chapter 6's text-conditioned U-Nets train on this machine, and what does the data cost?

    .venv/bin/python scripts/bench_text_unet.py            # 1 thread, batch 64, 16x16x4 latents
    .venv/bin/python scripts/bench_text_unet.py --steps 3  # a quick look

"low": attention (self and cross) at the 8x8 and 4x4 levels only, none at the full 16x16.

Times whole training steps (text tower forward without gradients, U-Net forward, loss, backward,
AdamW) of ``sd.text_unet.text_unet_loss`` per configuration, and the one-off cost of encoding
captioned scenes with the factor-4 VAE (``sd.text_unet.encode_scenes``).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import sdlab as sd

ALL, LOW = None, (False, True, True)  # attention at every level but the lowest / at 8x8 and 4x4 only
CONFIGS = {"(32,64,64)": ((32, 64, 64), ALL), "(48,96,96)": ((48, 96, 96), ALL),
           "(64,128,128)": ((64, 128, 128), ALL), "(32,64,64) low": ((32, 64, 64), LOW),
           "(64,128,128) low": ((64, 128, 128), LOW), "(64,128,192) low": ((64, 128, 192), LOW)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = sd.pretrained.load_pretrained("vae_f4")[0]
    text = sd.pretrained.load_pretrained("miniclip")[0].text_model.float().eval()
    start = time.perf_counter()
    data = sd.text_unet.encode_scenes(vae, 1000, generator=torch.Generator().manual_seed(0), progress=False)
    print(f"encoding scenes: {1000 / (time.perf_counter() - start):.0f} scenes/s ({args.threads} thread(s))")
    loss_fn = functools.partial(sd.text_unet.text_unet_loss, schedule=sd.NoiseSchedule("scaled_linear"),
                                text_encoder=text)
    g = torch.Generator().manual_seed(0)
    batch = data.batch(args.batch_size, g)
    start = time.perf_counter()
    for _ in range(args.steps):
        sd.text_unet.encode_prompts(text, batch[1])
    text_rate = args.steps * args.batch_size / (time.perf_counter() - start)
    print(f"text tower alone: {text_rate:.0f} captions/s")
    for name, (channels, attention) in CONFIGS.items():
        unet = sd.text_unet.make_text_unet(block_out_channels=channels, attention=attention)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        for i in range(args.steps + 1):
            if i == 1:
                start = time.perf_counter()  # the first step warms up
            loss = loss_fn(unet, batch, g)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rate = args.steps * args.batch_size / (time.perf_counter() - start)
        print(f"{name:14} {sd.unet.count_parameters(unet) / 1e6:5.2f} M parameters: {rate:6.1f} images/s",
              flush=True)


if __name__ == "__main__":
    main()
