"""Image towers for mini-CLIP: the course's CNN against a small transformers CLIPVisionModel (ViT).

    .venv/bin/python scripts/bench_clip_towers.py --threads 1

Times forward + backward of each tower on batches of 64 × 64 scenes (after one warm-up batch)
and prints parameters and images per second, with the ratio to the CNN, in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

import sdlab as sd


def _images_per_second(tower, images: torch.Tensor, repeats: int) -> float:
    tower(images).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        tower(images).sum().backward()
    return repeats * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = sd.data.make_scenes(args.batch_size, **sd.clip.SCENES, generator=torch.Generator().manual_seed(0)).images
    with sd.random.seeded_global_rng(0):
        cnn = sd.clip.ImageTower(sd.clip.MiniCLIPConfig())
        vit = CLIPVisionModel(CLIPVisionConfig(image_size=64, patch_size=8, hidden_size=128, intermediate_size=512,
                                               num_hidden_layers=4, num_attention_heads=4))
    towers = {"CNN (sdlab.clip.ImageTower)": cnn,
              "ViT (CLIPVisionModel, 8x8 patches, 4 x 128)": lambda x: vit(pixel_values=x).pooler_output}
    rates = {name: _images_per_second(t, images, args.repeats) for name, t in towers.items()}
    base = rates["CNN (sdlab.clip.ImageTower)"]
    for (name, rate), model in zip(rates.items(), (cnn, vit)):
        print(f"{name}: {sd.unet.count_parameters(model):,} parameters, {rate:.0f} images/s "
              f"(x{rate / base:.2f} the CNN), {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
