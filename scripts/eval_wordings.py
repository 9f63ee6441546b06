"""Does the course's Stable Diffusion obey the reader's words? Adherence per family of wordings, and why.

    .venv/bin/python scripts/eval_wordings.py                        # the shipped text_unet + miniclip
    .venv/bin/python scripts/eval_wordings.py --unet build/old_weights/text_unet \\
        --clip build/old_weights/miniclip --json build/wordings-old.json   # any saved pair of folders
    .venv/bin/python scripts/eval_wordings.py --diagnose             # the text tower's own tests only (1 min)

Adherence (`sd.guidance.wording_adherence`): ``--n`` test scenes of held-out animal-colour pairs, each
said in every family of `sd.captions.FAMILIES` (held-out families marked *), painted at guidance 3 with
20 DDIM steps as chapters 6 and 7 do, and read back by the course's judge (`sdlab.judge`), which
scores only the attributes the wording states.

``--diagnose`` asks where a failure would come from, per family, on the same held-out scenes:
  swap:  mini-CLIP's similarity of each picture with its prompt against the same prompt with the
         animal's colour and the background's swapped ("a blue cat, red background"): share of
         pictures that prefer their own prompt (0.5 is chance: the tower does not bind colour to role);
  probe: a linear probe from the token states the U-Net reads (the first 24 positions, flattened), trained on
         the seen families' captions of training scenes, read on this family's held-out captions:
         share of animal colours and background colours it reads right.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import sdlab as sd

POSITIONS = 24  # token states the probe reads: every caption of the course is shorter


def load(unet_folder: str, clip_folder: str):
    from diffusers import UNet2DConditionModel

    if unet_folder in sd.pretrained.names():
        unet, record = sd.pretrained.load_pretrained(unet_folder)
    else:
        unet = UNet2DConditionModel.from_pretrained(unet_folder, low_cpu_mem_usage=False).eval()
        record = json.loads((Path(unet_folder) / sd.pretrained.RECORD_FILE).read_text())
    if clip_folder in sd.pretrained.names():
        clip = sd.pretrained.load_pretrained(clip_folder)[0]
    else:
        clip = sd.clip.MiniCLIP.from_pretrained(clip_folder)
    return unet.eval(), record, clip.float().eval()


def swapped(spec: sd.data.SceneSpec) -> sd.data.SceneSpec:
    from dataclasses import replace

    return replace(spec, colour=spec.background, background=spec.colour)


def swap_test(clip, scenes, family) -> float:
    """Share of pictures closer (mini-CLIP) to their own prompt than to its colour-swapped twin."""
    specs = scenes.specs()
    own = [sd.captions.wordings(s, (family,), variant=i)[family.name] for i, s in enumerate(specs)]
    twin = [sd.captions.wordings(swapped(s), (family,), variant=i)[family.name] for i, s in enumerate(specs)]
    with torch.no_grad():
        image = clip.encode_image(scenes.images)
        a = (image * sd.clip.text_embeddings(clip, own)).sum(-1)
        b = (image * sd.clip.text_embeddings(clip, twin)).sum(-1)
    return (a > b).double().mean().item()


def states(text_encoder, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([sd.text_unet.encode_prompts(text_encoder, prompts[i:i + 500])[:, :POSITIONS].flatten(1)
                          for i in range(0, len(prompts), 500)])


def fit_probe(text_encoder, train_scenes):
    """A ridge-regression linear probe from flattened token states to one-hot animal and background colours.

    Trained on the seen families that state both colours, one family per training scene in turn.
    """
    seen = [f for f in sd.captions.FAMILIES if not f.held_out and {"colour", "background"} <= set(f.says)]
    prompts = [sd.captions.wordings(s, (seen[i % len(seen)],), variant=i)[seen[i % len(seen)].name]
               for i, s in enumerate(train_scenes.specs())]
    x = states(text_encoder, prompts)
    mean, std = x.mean(0), x.std(0) + 1e-4
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], 1).double()
    gram = x.T @ x + 10.0 * torch.eye(x.shape[1], dtype=x.dtype)
    weights = {name: torch.linalg.solve(gram, x.T @ torch.nn.functional.one_hot(
        train_scenes.labels[name], len(sd.data.COLOURS)).double()) for name in ("colour", "background")}
    return mean, std, weights


def probe(text_encoder, fitted, test_scenes, family) -> dict[str, float]:
    """Share of the family's prompts whose animal colour and background colour the probe reads right."""
    mean, std, weights = fitted
    test = [sd.captions.wordings(s, (family,), variant=i)[family.name] for i, s in enumerate(test_scenes.specs())]
    x = torch.cat([(states(text_encoder, test) - mean) / std, torch.ones(len(test), 1)], 1).double()
    return {name: ((x @ w).argmax(1) == test_scenes.labels[name]).double().mean().item()
            for name, w in weights.items()}


def store(unet: str, out: dict) -> None:
    """Write the table into the U-Net's sdlab_record.json, with the prompts' recipe beside it."""
    folder = sd.pretrained.REGISTRY[unet].path if unet in sd.pretrained.names() else Path(unet)
    file = folder / sd.pretrained.RECORD_FILE
    record = json.loads(file.read_text())
    record["wordings"] = {
        "scenes": f"{out['n']} held-out animal-colour pairs, test silhouettes (seed 31)", "clip": out["clip"],
        "guidance_scale": out["scale"], "num_inference_steps": out["steps"], "judge": "judge",
        "families": {f.name: {"template": f.template, "says": list(f.says), "held_out": f.held_out}
                     for f in sd.captions.FAMILIES},
        "adherence": out["adherence"],
        "command": "python scripts/eval_wordings.py --record",
    }
    file.write_text(json.dumps(record, indent=1) + "\n")


def table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    held = set(sd.captions.HELD_OUT_FAMILIES)
    width = max(12, *(len(c) + 2 for c in columns))
    lines = [f"{'wording':<28}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, row in rows.items():
        lines.append(f"{name + (' *' if name in held else ''):<28}"
                     + "".join(f"{row[c]:>{width}.3f}" if c in row else f"{'—':>{width}}" for c in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default="text_unet", help="a shipped name or a save_pretrained folder")
    parser.add_argument("--clip", default="miniclip", help="a shipped name or a MiniCLIP folder")
    parser.add_argument("--n", type=int, default=200, help="held-out scenes: pictures per wording")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--diagnose", action="store_true", help="only the text tower's tests (swap, probe)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--record", action="store_true",
                        help="also store the adherence table in the U-Net folder's training record (chapters 6 and 7 "
                             "show it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unet, record, clip = load(args.unet, args.clip)
    scenes = sd.data.make_scenes(args.n, **sd.data.SCENES, split="test", held_out="only",
                                 generator=torch.Generator().manual_seed(31))
    out = {"unet": args.unet, "clip": args.clip, "n": args.n, "steps": args.steps, "scale": args.scale}
    if args.diagnose:
        train = sd.data.make_scenes(4000, **sd.data.SCENES, split="train", generator=torch.Generator().manual_seed(32))
        both = [f for f in sd.captions.FAMILIES if {"colour", "background"} <= set(f.says)]
        fitted = fit_probe(clip.text_model, train)
        rows = {f.name: {"swap": swap_test(clip, scenes, f),
                         **{f"probe {k}": v for k, v in probe(clip.text_model, fitted, scenes, f).items()}}
                for f in both}
        print(table(rows, ["swap", "probe colour", "probe background"]))
        out["diagnose"] = rows
    else:
        sampler = sd.text_unet.record_sampler(record)
        vae = sd.pretrained.load_pretrained("vae_f4")[0].eval()
        judge = sd.pretrained.load_pretrained("judge")[0].eval()
        start = time.perf_counter()
        rows = sd.guidance.wording_adherence(unet, clip.text_model, vae, judge, scenes, guidance_scale=args.scale,
                                             num_inference_steps=args.steps, sampler=sampler)
        print(f"{args.unet} + {args.clip}: {args.n} held-out scenes per wording, guidance {args.scale}, "
              f"{args.steps} DDIM steps ({time.perf_counter() - start:.0f} s); * a wording kept out of training")
        print(table(rows, [*sd.judge.ATTRIBUTES, "all"]))
        out["adherence"] = rows
        if args.record:
            store(args.unet, out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
