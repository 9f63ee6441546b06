"""Reproduce every shipped weight file from scratch, in dependency order, then say what each one reached.

    python3 run.py reproduce                 # every recipe in full into build/reproduced (hours: see --report)
    python3 run.py reproduce --quick         # tiny settings, into build/reproduced-quick: well under a minute
    python3 run.py reproduce --stages judge,vae_f4     # a subset; the stages before load from --out
    python3 run.py reproduce --report        # train nothing: the table of the weights in sdlab/weights

(or .venv/bin/python scripts/reproduce.py ...). Each stage is one registry entry (sdlab/pretrained.py),
trained by its train function of scripts/train_weights.py under ``sd.pretrained.weights_dir(out)``: a
stage loads the fresh files of the stages before it, never those of sdlab/weights, which only
``--into-package`` writes. Training checkpoints and the encoded scenes of text_unet go to out/build/,
and a run resumes from them (a finished stage is then only exported again).

At the end a table gives each stage's wall time and the quality figures its weights reach (from
their records, or measured: mini-CLIP's zero-shot accuracy, and the adherence of text_unet and of
the saved mini_sd pipeline at guidance 3 on held-out prompts); out/reproduce.json holds it.
``--report`` gives the same table for the shipped weights, with the seconds their records say
training took: the cost of a full run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from tqdm.auto import tqdm

import sdlab as sd
from sdlab import pretrained
from sdlab.pretrained import RECORD_FILE, REGISTRY, load_pretrained, weights_dir

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:  # imported from elsewhere (the tests): where the train functions are
    sys.path.append(str(ROOT / "scripts"))
from train_weights import Run, train  # noqa: E402

# Every registry entry, each after what it loads: fast ones first, so that a broken chain fails early.
STAGES = ("catdog_classifier", "scenes32", "catdog32", "judge", "miniclip", "vae_f4", "vae_f8", "text_unet",
          "mini_sd")
# What a stage loads of earlier stages, to train or to measure its figures (the judge reads the pictures).
NEEDS: dict[str, tuple[str, ...]] = {
    "vae_f4": ("judge",), "vae_f8": ("judge",), "text_unet": ("judge", "miniclip", "vae_f4"),
    "mini_sd": ("judge", *REGISTRY["mini_sd"].recipe.parts)}
QUICK_RUN = {"steps": 3, "batch_size": 8, "eval_scenes": 16}  # every stage's `Run` in --quick
QUICK_RECIPES: dict[str, dict[str, Any]] = {"text_unet": {"scenes": 64}}  # recipe fields --quick shrinks too
GUIDANCE_SCALE = 3.0  # of the adherence figures


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """How the figures that no record holds are measured: held-out scenes and prompts, sampling steps."""

    zero_shot_scenes: int = 1000  # chapter 4's measurement (tests/test_shipped_weights.py)
    prompts: int = 100  # held-out captions painted once each at GUIDANCE_SCALE
    inference_steps: int = 20


QUICK_EVALUATION = Evaluation(zero_shot_scenes=16, prompts=4, inference_steps=2)


def check_stages(stages: tuple[str, ...] = STAGES, needs: dict[str, tuple[str, ...]] = NEEDS) -> None:
    """Fail unless ``stages`` holds every registry entry once, and each after the stages it needs.

    Raises:
        ValueError: naming the entries missing, unknown or out of order.
    """
    missing = [name for name in REGISTRY if name not in stages]
    unknown = sorted({*stages, *needs, *(part for parts in needs.values() for part in parts)} - set(REGISTRY))
    if missing or unknown or len(set(stages)) != len(stages):
        raise ValueError(f"the stage list must hold every registry entry once: {missing} missing, {unknown} "
                         f"unknown, in {list(stages)} (scripts/reproduce.py STAGES)")
    late = [f"{stage} before {part}" for stage, parts in needs.items() for part in parts
            if stages.index(part) > stages.index(stage)]
    if late:
        raise ValueError(f"stages out of order: {', '.join(late)} (scripts/reproduce.py STAGES)")


def selected(text: str | None) -> tuple[str, ...]:
    """The stages ``--stages a,b`` names, in the order of STAGES (all of them for None)."""
    if text is None:
        return STAGES
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names or names - set(STAGES):
        raise SystemExit(f"--stages takes names from {', '.join(STAGES)}; got {text!r}")
    return tuple(name for name in STAGES if name in names)


def check_needs(stages: tuple[str, ...]) -> None:
    """Fail, saying which stages to run first, where a stage needs one that neither runs nor has its file."""
    missing = [part for part in STAGES if part not in stages and not REGISTRY[part].path.exists()
               and any(part in NEEDS.get(stage, ()) for stage in stages)]
    if missing:
        needing = [stage for stage in stages if set(NEEDS.get(stage, ())) & set(missing)]
        raise SystemExit(f"{', '.join(needing)} need{'s' if len(needing) == 1 else ''} {', '.join(missing)}, "
                         f"which {REGISTRY[missing[0]].path.parent} does not hold: run --stages "
                         f"{','.join(missing)} first (or add {'it' if len(missing) == 1 else 'them'} to --stages)")


def held_out_prompts(evaluation: Evaluation) -> sd.data.SceneBatch:
    """The held-out scenes whose captions the adherence figures paint (pairs no model trained on)."""
    return sd.data.make_scenes(evaluation.prompts, held_out="only", split="test", **sd.data.SCENES,
                               generator=torch.Generator().manual_seed(21))


def text_unet_adherence(record: dict, evaluation: Evaluation, device: torch.device) -> dict[str, float]:
    """`sd.guidance.adherence` of the text U-Net (with the mini-CLIP and vae_f4 it was trained with)."""
    pipe = sd.pipeline.assemble(device=device)
    judge = load_pretrained("judge", device=device)[0]
    sampler = sd.text_unet.record_sampler(record)
    return sd.guidance.adherence(pipe.unet, pipe.text_encoder, pipe.vae, judge, held_out_prompts(evaluation),
                                 guidance_scale=GUIDANCE_SCALE, sampler=sampler,
                                 num_inference_steps=evaluation.inference_steps,
                                 generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def pipeline_adherence(folder: Path, evaluation: Evaluation, device: torch.device) -> dict[str, float]:
    """The same adherence through a saved pipeline folder, loaded by plain diffusers and painted by `paint`."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    scenes = held_out_prompts(evaluation)
    images = sd.pipeline.paint(pipe, list(scenes.captions), guidance_scale=GUIDANCE_SCALE,
                               num_inference_steps=evaluation.inference_steps,
                               generator=torch.Generator().manual_seed(0))
    return sd.judge.judge_accuracy(load_pretrained("judge", device=device)[0], scenes, images)


def measure(name: str, evaluation: Evaluation, device: torch.device) -> tuple[dict, dict]:
    """The training record of ``name``'s weights (wherever the registry points now) and the figures they reach."""
    entry = REGISTRY[name]
    recipe = entry.recipe
    if isinstance(recipe, pretrained.PipelineRecipe):
        record_file = entry.path / RECORD_FILE
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        return record, {"adherence": pipeline_adherence(entry.path, evaluation, device)}
    model, record = load_pretrained(name, device=device)
    if isinstance(recipe, pretrained.ClassifierRecipe):
        figures = {"test_accuracy": record["test_accuracy"]}
    elif isinstance(recipe, pretrained.DiffusionRecipe):
        figures = {"final_loss": record["final_loss"]}
    elif isinstance(recipe, pretrained.JudgeRecipe):
        accuracy = record["test_accuracy"]
        figures = {"held_out_accuracy": {"mean": mean(accuracy[a] for a in sd.judge.ATTRIBUTES),
                                         "all five": accuracy["all"]}}
    elif isinstance(recipe, pretrained.CLIPRecipe):
        scenes = sd.data.make_scenes(evaluation.zero_shot_scenes, **sd.clip.SCENES, split="test", held_out="only",
                                     generator=torch.Generator().manual_seed(1))
        figures = {"zero_shot": sd.clip.zero_shot_accuracy(model, scenes)}
    elif isinstance(recipe, pretrained.VAERecipe):
        figures = {"psnr_db": record["psnr_db"]}
    elif isinstance(recipe, pretrained.TextUNetRecipe):
        figures = {"adherence": text_unet_adherence(record, evaluation, device)}
    else:
        raise TypeError(f"no quality figures for a {type(recipe).__name__} (the recipe of {name!r})")
    return record, figures


LABELS = {"test_accuracy": "test accuracy", "final_loss": "final loss", "held_out_accuracy": "held-out accuracy",
          "zero_shot": "zero-shot, held-out scenes", "psnr_db": "PSNR",
          "adherence": f"adherence at s = {GUIDANCE_SCALE:g}, held-out prompts"}
SHARES = {"test_accuracy", "held_out_accuracy", "zero_shot", "adherence"}  # shown as percentages


def describe(figures: dict) -> str:
    """One line of figures: "PSNR 32.37 dB", "zero-shot, held-out scenes: animal 97.1%, colour 99.0%, ..."."""

    def value(key: str, number: float) -> str:
        return f"{number:.1%}" if key in SHARES else f"{number:g} dB" if key == "psnr_db" else f"{number:.4g}"

    return "; ".join(f"{LABELS[key]}: " + ", ".join(f"{k} {value(key, v)}" for k, v in figure.items())
                     if isinstance(figure, dict) else f"{LABELS[key]} {value(key, figure)}"
                     for key, figure in figures.items())


def table(rows: list[dict]) -> str:
    """The rows as a text table: stage, seconds, where it trained, and its figures; then the total."""
    seconds = [row["seconds"] for row in rows if row["seconds"] is not None]
    lines = [f"{'stage':<18} {'seconds':>9}  {'trained on':<16} quality figures"]
    for stage in rows:
        took = "—" if stage["seconds"] is None else f"{stage['seconds']:.1f}"
        lines.append(f"{stage['stage']:<18} {took:>9}  {stage['trained_on'] or '—':<16} {describe(stage['figures'])}")
    unknown = [row["stage"] for row in rows if row["seconds"] is None]
    total = sum(seconds)
    notes = [f"{total / 3600:.1f} h"] * (total >= 360) + [f"no time recorded for {', '.join(unknown)}"] * bool(unknown)
    lines.append(f"{'total':<18} {total:>9.1f}" + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines)


def row(name: str, seconds: float | None, record: dict, figures: dict, **extra: Any) -> dict:
    """One stage of the table (and of the JSON file)."""
    return {"stage": name, "seconds": seconds, "trained_on": record.get("trained_on"), "figures": figures, **extra}


def recorded_seconds(record: dict) -> float | None:
    """How long a record says its weights took to make (text_unet's: with encoding its scenes), None if untold."""
    if record.get("seconds") is None:
        return None
    return round(record["seconds"] + record.get("encoding_seconds", 0.0), 1)


def _quick(recipe: Any, fields: dict[str, Any]) -> Any:
    """The recipe with ``fields`` shrunk, and so its first phase (``recipe.start``) when it has one."""
    if getattr(recipe, "start", None) is not None:
        fields = {**fields, "start": _quick(recipe.start, fields)}
    return dataclasses.replace(recipe, **fields)


def reproduce(stages: tuple[str, ...], run: Run, evaluation: Evaluation, *, quick: bool,
              device: torch.device) -> list[dict]:
    """Train ``stages`` in order (where the registry points now), timing each and measuring its figures."""
    rows = []
    bar = tqdm(stages, desc="reproduce", unit="stage")
    for name in bar:
        bar.set_postfix_str(name)
        recipe = REGISTRY[name].recipe
        recipe = _quick(recipe, QUICK_RECIPES.get(name, {})) if quick else recipe
        start = time.perf_counter()
        train(name, recipe, run)
        seconds = time.perf_counter() - start
        record, figures = measure(name, evaluation, device)
        rows.append(row(name, round(seconds, 2), record, figures,
                        measure_seconds=round(time.perf_counter() - start - seconds, 2)))
        tqdm.write(f"[reproduce] {name} done in {seconds:.1f} s: {describe(figures)}")
    return rows


def report(stages: tuple[str, ...], evaluation: Evaluation, device: torch.device) -> list[dict]:
    """The table's rows for the weights where the registry points now, with the seconds of their records."""
    rows = []
    for name in tqdm(stages, desc="measuring", unit="stage"):
        record, figures = measure(name, evaluation, device)
        rows.append(row(name, recorded_seconds(record), record, figures))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="the run's folder: weights, out/build/ checkpoints, the JSON "
                        "(default build/reproduced, or build/reproduced-quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for every stage (a smoke test)")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--into-package", action="store_true",
                        help="write the weights into sdlab/weights (checkpoints and the JSON stay in --out)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: the table of the weights in sdlab/weights, from their records")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.into_package and (args.quick or args.report):
        parser.error("--into-package writes the full recipes' weights: not with --quick or --report")
    check_stages()
    stages = selected(args.stages)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = (args.out or ROOT / "build" / ("reproduced-quick" if args.quick else "reproduced")).resolve()
    evaluation = QUICK_EVALUATION if args.quick else Evaluation()
    device = sd.pick_device()
    start = time.perf_counter()
    if args.report:
        rows = report(stages, evaluation, device)
        title = "the shipped weights (sdlab/weights) with the recipes' full timings, from their records"
        json_file = out / "report.json"
    else:
        run = Run(build=out / "build", **(QUICK_RUN if args.quick else {}))
        into = contextlib.nullcontext(sd.checkpoints.WEIGHTS_DIR) if args.into_package else weights_dir(out)
        with into as folder:
            check_needs(stages)
            rows = reproduce(stages, run, evaluation, quick=args.quick, device=device)
        title = f"reproduced ({'quick' if args.quick else 'full'} recipes) into {folder}, wall times"
        json_file = out / "reproduce.json"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"mode": "report" if args.report else "quick" if args.quick else "full", "stages": rows,
               "total_seconds": round(sum(r["seconds"] for r in rows if r["seconds"] is not None), 1),
               "evaluation": dataclasses.asdict(evaluation), "guidance_scale": GUIDANCE_SCALE,
               "device": str(device), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    json_file.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{title}:\n{table(rows)}\nwrote {json_file} ({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
