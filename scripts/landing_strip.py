"""Paint the strip of pictures on the website's landing page with the course's own pipeline.

    .venv/bin/python scripts/landing_strip.py [OUT.png]      (default: book/images/landing_strip.png)

Six prompts, 20 DDIM steps, guidance scale 3, seed 0, on the CPU: about a second. The pictures are
enlarged 4 times (nearest neighbour, so the pixels stay honest) and set side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

import sdlab as sd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "images" / "landing_strip.png"
PROMPTS = [  # six wordings: the canonical caption, short prompts, other orders and phrases
    "a small red cat on the left, blue background",
    "white horse on green",
    "a large black elephant on the right on a yellow backdrop",
    "orange bird",
    "a blue dog, large, on the left, white background",
    "black background, a large green giraffe on the right",
]
ZOOM, GAP = 4, 8


def paint_strip() -> Image.Image:
    """The six pictures, enlarged and side by side on a white background."""
    pipe = sd.pipeline.load_pipeline(device="cpu")
    pictures = sd.pipeline.paint(pipe, PROMPTS, guidance_scale=3.0, num_inference_steps=20,
                                 generator=torch.Generator().manual_seed(0))
    tiles = [sd.images.to_pil(p).resize((p.shape[-1] * ZOOM, p.shape[-2] * ZOOM), Image.NEAREST) for p in pictures]
    width = sum(t.width for t in tiles) + GAP * (len(tiles) - 1)
    strip = Image.new("RGB", (width, tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (tile.width + GAP), 0))
    return strip


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    paint_strip().save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
