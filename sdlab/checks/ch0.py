"""Chapter 0's exercise: predict the shape of what the U-Net reads at each step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.checks.core import Answer, Case, Exercise, generator, randint

__all__ = ["check_unet_input_shape"]

CHANNELS, FACTOR = 4, 4  # the course's autoencoder: 4 latent channels, each side 4 times shorter
SD_FACTOR = 8  # Stable Diffusion 1's autoencoder: each side 8 times shorter


def _cases(seed: int) -> list[Case]:
    g = generator(seed, 1)
    # (prompts, height, width, scale): the trace above, more prompts, a wide picture, no guidance
    plan = [(1, 64, 64, 3.0), (4, 64, 64, 7.5), (2, 96, 128, 3.0), (3, 64, 64, 1.0)]
    if seed:
        plan = [(randint(g, 1, 6), 8 * randint(g, 4, 20), 8 * randint(g, 4, 20), scale)
                for scale in (float(randint(g, 2, 12)), 1.0, float(randint(g, 2, 12)))]
    return [Case((batch, height, width, scale), f"for {batch} prompt{'s' * (batch > 1)} of {height} × {width} "
                 f"pixels at guidance scale {scale:g}", ("batch", "height", "width", "guidance_scale"))
            for batch, height, width, scale in plan]


def _shape(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    return torch.tensor([batch, channels, height, width], dtype=torch.float64)


def _answer(case: Case) -> Answer:
    batch, height, width, scale = case.args
    copies = 2 * batch if scale > 1 else batch
    h, w = height // FACTOR, width // FACTOR  # the canvas's sides
    slips = [
        ("the course's autoencoder makes each side 4 times shorter (64 → 16 pixels); 8 is Stable "
         "Diffusion 1's factor", _shape(copies, CHANNELS, height // SD_FACTOR, width // SD_FACTOR)),
        ("the canvas has 4 latent channels, not the picture's 3 colours", _shape(copies, 3, h, w)),
        ("that is the picture's shape: the U-Net works on the smaller latent canvas",
         _shape(batch, 3, height, width)),
        ("the height comes before the width, as in (batch, channels, height, width)",
         _shape(copies, CHANNELS, w, h) if height != width else None),
    ]
    if scale > 1:
        slips.append(("with guidance the U-Net sees two copies of each canvas at once, one with the prompt and one "
                      "without", _shape(batch, CHANNELS, h, w)))
    else:
        slips.append(("at guidance scale 1 there is nothing to compare: the pipeline skips the unconditional "
                      "copy", _shape(2 * batch, CHANNELS, h, w)))
    return Answer(_shape(copies, CHANNELS, h, w), slips,
                  what="the shape (batch, channels, height, width)")


UNET_INPUT_SHAPE = Exercise("the U-Net's input shape", _cases, _answer)


def check_unet_input_shape(fn: Callable[[int, int, int, float], tuple[int, ...]], *, seed: int = 0) -> bool:
    """Check ``fn(batch, height, width, guidance_scale) -> (B, C, H, W)``: what the U-Net reads at each step.

    For the course's model: its latents have 4 channels and sides 4 times shorter than the picture's,
    and with guidance (scale > 1) the batch holds two copies of each canvas. Any sequence of four
    integers is accepted (a tuple, a list, a ``torch.Size``).
    """
    return UNET_INPUT_SHAPE.check(fn, seed=seed)


EXERCISES = {"check_unet_input_shape": UNET_INPUT_SHAPE}
