"""Prompt adherence of chapter 6's shipped U-Net against guidance scale, on held-out and seen animal-colour pairs.

    .venv/bin/python scripts/eval_text_unet.py                     # 100 prompts per set, scales 1, 3, 7.5
    .venv/bin/python scripts/eval_text_unet.py --n 200 --scales 1 2 3 5 7.5 10 15
    .venv/bin/python scripts/eval_text_unet.py --unet build/text_unet_pilot   # a folder not (yet) shipped

Each prompt is the canonical caption of a scene ("a small red cat on the left, blue background");
the judge (`sdlab.judge`) reads the generated picture back. "uncond" generates from the empty prompt
at scale 1 and is judged against the same captions: the chance level of an unconditional model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import sdlab as sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 7.5])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unet", default="text_unet", help="a shipped name or a save_pretrained folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.unet in sd.pretrained.names():
        unet, record = sd.pretrained.load_pretrained(args.unet)
    else:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(args.unet, low_cpu_mem_usage=False)
        record = json.loads((Path(args.unet) / sd.pretrained.RECORD_FILE).read_text())
    unet.eval()
    sampler = sd.text_unet.latent_sampler(record["schedule"], record.get("prediction_type", "epsilon"))
    text = sd.pretrained.load_pretrained("miniclip")[0].text_model.float().eval()
    vae = sd.pretrained.load_pretrained("vae_f4")[0].eval()
    judge = sd.pretrained.load_pretrained("judge")[0].eval()
    for held_out in ("only", "exclude"):
        scenes = sd.data.make_scenes(args.n, **sd.data.SCENES, split="test", held_out=held_out,
                                     generator=torch.Generator().manual_seed(21))
        name = "held-out pairs" if held_out == "only" else "seen pairs"
        blank = dataclasses.replace(scenes, captions=[""] * args.n)  # the unconditional model, same truth
        for scale in ["uncond", *args.scales]:
            start = time.perf_counter()
            prompts = blank if scale == "uncond" else scenes
            result = sd.guidance.adherence(unet, text, vae, judge, prompts, guidance_scale=1.0 if scale == "uncond"
                                           else scale, num_inference_steps=args.steps, sampler=sampler,
                                           generator=torch.Generator().manual_seed(0))
            result = {k: round(v, 3) for k, v in result.items()}
            print(f"{name:>14} s={scale}: {result} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
