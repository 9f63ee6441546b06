"""Prompt adherence, diversity and quality of chapter 6's U-Net against guidance scale, held-out and seen pairs.

    .venv/bin/python scripts/eval_text_unet.py                       # 100 prompts per set, 2 pictures each
    .venv/bin/python scripts/eval_text_unet.py --n 200 --scales uncond 1 3 7.5
    .venv/bin/python scripts/eval_text_unet.py --unet build/tu_trial   # a folder not (yet) shipped

Each prompt is the canonical caption of a test scene ("a small red cat on the left, blue background"),
painted ``--per-prompt`` times; the judge (`sdlab.judge`) reads the pictures back
(`sd.guidance.guidance_sweep`). "uncond" paints from the empty prompt and is judged against the same
captions: the chance level. Diversity is the mean distance between the judge's features of the
pictures of one prompt; "Fréchet" the Fréchet distance of their features to as many real test scenes.
``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import sdlab as sd

SCALES = ["uncond", "1", "2", "3", "5", "7.5", "10", "15"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="prompts per set")
    parser.add_argument("--per-prompt", type=int, default=2)
    parser.add_argument("--scales", nargs="+", default=SCALES)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unet", default="text_unet", help="a shipped name or a save_pretrained folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.unet in sd.pretrained.names():
        unet, record = sd.pretrained.load_pretrained(args.unet)
    else:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(args.unet, low_cpu_mem_usage=False)
        record = json.loads((Path(args.unet) / sd.pretrained.RECORD_FILE).read_text())
    unet.eval()
    sampler = sd.text_unet.record_sampler(record)
    text = sd.pretrained.load_pretrained("miniclip")[0].text_model.float().eval()
    vae = sd.pretrained.load_pretrained("vae_f4")[0].eval()
    judge = sd.pretrained.load_pretrained("judge")[0].eval()
    scales = [s if s == "uncond" else float(s) for s in args.scales]
    out = {"unet": args.unet, "n": args.n, "per_prompt": args.per_prompt, "steps": args.steps, "sets": {}}
    for held_out, name in (("only", "held-out pairs"), ("exclude", "seen pairs")):
        scenes = sd.data.make_scenes(args.n, **sd.data.SCENES, split="test", held_out=held_out,
                                     generator=torch.Generator().manual_seed(21))
        reference = sd.data.make_scenes(args.n * args.per_prompt, **sd.data.SCENES, split="test",
                                        held_out=held_out, generator=torch.Generator().manual_seed(22))
        start = time.perf_counter()
        rows = sd.guidance.guidance_sweep(unet, text, vae, judge, scenes, scales=scales, reference=reference,
                                          per_prompt=args.per_prompt, sampler=sampler,
                                          num_inference_steps=args.steps)
        print(f"{name}: {args.n} prompts x {args.per_prompt}, {args.steps} DDIM steps "
              f"({time.perf_counter() - start:.0f} s)")
        print(f"{'scale':>7} " + " ".join(f"{a:>10}" for a in [*sd.judge.ATTRIBUTES, "all"])
              + f" {'diversity':>9} {'Fréchet':>8}")
        for r in rows:
            print(f"{r['scale']:>7} " + " ".join(f"{r[a]:>10.3f}" for a in [*sd.judge.ATTRIBUTES, "all"])
                  + f" {r['diversity']:>9.3f} {r['frechet']:>8.2f}", flush=True)
        out["sets"][name] = rows
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
