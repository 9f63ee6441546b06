"""Train the weights the course ships in sdlab/weights/, so readers can skip training.

    .venv/bin/python scripts/train_weights.py scenes32   # chapter 2: colour scenes, 32x32
    .venv/bin/python scripts/train_weights.py catdog32   # chapter 3: cat and dog silhouettes only
    .venv/bin/python scripts/train_weights.py catdog_classifier   # chapter 3's judge (about a minute)
    .venv/bin/python scripts/train_weights.py miniclip   # chapter 4: mini-CLIP (about 45 min, 1 thread)
    .venv/bin/python scripts/train_weights.py judge      # chapters 5-7: the attribute judge (about 12 min)
    .venv/bin/python scripts/train_weights.py vae_f4     # chapter 5: the autoencoders (after the judge)
    .venv/bin/python scripts/train_weights.py vae_f4 --rescore   # only re-score it with the current judge

Every recipe lives in the registry of shipped weights, sdlab/pretrained.py.

Each run prints its settings, time and final loss, and writes the weights (float16;
the EMA or the final weights, as the recipe says) with the model config and loss
history as one safetensors file. A run resumes from build/NAME-run.safetensors
if that exists (a finished run is then only exported again).
Options: --steps, --batch-size, --threads, --out, --rescore (autoencoders: measure the shipped
model again, with the current judge, and update its record; nothing is trained).

scripts/reproduce.py runs these train functions for every registry entry, in order, into a fresh folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import sdlab as sd
from sdlab.pretrained import (
    RECORD_FILE,
    REGISTRY,
    ClassifierRecipe,
    CLIPRecipe,
    DiffusionRecipe,
    JudgeRecipe,
    PipelineRecipe,
    TextUNetRecipe,
    VAERecipe,
    replace_folder,
    save_pretrained,
)


def _machine(device: torch.device) -> str:
    """Where the run happened, for the shipped file's record: "cpu (1 thread)", "cuda (NVIDIA H100 ...)"."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


@dataclasses.dataclass(frozen=True)
class Run:
    """What one run changes of its recipe, and where it writes: the command line's options.

    Every train function below takes one and returns the record it stored with the weights.
    """

    steps: int | None = None  # None: the recipe's
    batch_size: int | None = None  # None: the recipe's
    out: Path | None = None  # where the weights go; None: the registry's path (sd.pretrained.weights_dir moves it)
    build: Path = Path("build")  # training checkpoints (NAME-run.safetensors, resumed if present) and caches
    eval_scenes: int | None = None  # held-out scenes the record's figures are measured on; None: each recipe's own
    start: Path | None = None  # a recipe in phases: the weights of the phase before its last (a folder); None: train it
    phase: int | None = None  # the number of the phase this run trains (1: the first); None: the recipe's last

    def train_config(self, recipe: Any) -> sd.train.TrainConfig:
        """The recipe's `sdlab.train.TrainConfig`, with this run's steps and batch size where given."""
        return recipe.train_config(**{k: v for k, v in (("steps", self.steps), ("batch_size", self.batch_size)) if v})

    def sizes(self, recipe: Any) -> tuple[int, int]:
        """(steps, batch size) of a recipe trained by its own function rather than `Run.train_config`."""
        return self.steps or recipe.steps, self.batch_size or recipe.batch_size

    def checkpoint(self, name: str) -> Path:
        """The training checkpoint of ``name`` (in `build`), which a later run resumes from."""
        return self.build / f"{name}-run.safetensors"

    def target(self, name: str) -> Path:
        """Where the weights of ``name`` go: `out`, else the registry's path."""
        return Path(self.out or REGISTRY[name].path)


def _phases(recipe: Any) -> int:
    """How many phases a recipe trains in: 1, plus those of the recipe it starts from (``recipe.start``)."""
    start = getattr(recipe, "start", None)
    return 1 if start is None else 1 + _phases(start)


def _first_phase(name: str, recipe: Any, run: Run) -> tuple[Path, dict] | None:
    """The folder and record of the weights a recipe in phases trains on from (None: it starts from random ones).

    ``run.start`` names them; otherwise the phase before (``recipe.start``, itself perhaps in phases) is
    trained now, into ``build/NAME-phaseK``.
    """
    if recipe.start is None:
        return None
    phase = _phases(recipe.start)
    folder = run.start or run.build / f"{name}-phase{phase}"
    if run.start is None and not (folder / RECORD_FILE).is_file():
        print(f"{name}: training its phase {phase} into {folder}")
        # --steps, --batch-size: each phase
        train(name, recipe.start, dataclasses.replace(run, out=folder, phase=phase))
    if not (folder / RECORD_FILE).is_file():
        raise SystemExit(f"--start {folder}: no {RECORD_FILE} there (a folder written by train_weights.py)")
    return folder, json.loads((folder / RECORD_FILE).read_text())


def _phase_name(name: str, run: Run) -> str:
    """The checkpoint name of the phase ``run`` trains: NAME for the recipe's last, NAME-phaseK for the others."""
    return name if run.phase is None else f"{name}-phase{run.phase}"


def train_unet(name: str, recipe: DiffusionRecipe, run: Run = Run()) -> dict:
    device = sd.pick_device()
    schedule = sd.NoiseSchedule(recipe.schedule)
    config = run.train_config(recipe)
    with sd.random.seeded_global_rng(recipe.seed):  # the initial weights
        model = sd.UNet(recipe.unet).to(device)
    print(f"{name}: {sd.unet.describe(model)}\n{config}")
    result = sd.train.train(model, schedule, recipe.data, config=config, checkpoint=run.checkpoint(name),
                            resume=True)
    final = sum(result.losses[-100:]) / len(result.losses[-100:])
    out = run.target(name)
    info = {"schedule": schedule.name, "steps": config.steps, "batch_size": config.batch_size,
            "weights": recipe.weights, "final_loss": round(final, 5),
            "losses": [round(x, 5) for x in result.losses[::10]],
            "trained_on": _machine(device),
            "seconds": round(result.seconds, 1) if result.seconds > 1 else None,  # None: only exported here
            "date": time.strftime("%Y-%m-%d")}
    save_pretrained(out, result.ema if recipe.weights == "ema" else result.model, info=info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): final loss {final:.4f}, "
          f"{result.images_per_second:.0f} images/s, {result.seconds:.0f} s")
    return info


def train_judge(name: str, recipe: ClassifierRecipe, run: Run = Run()) -> dict:
    steps, batch_size = run.sizes(recipe)
    start = time.perf_counter()
    classifier, losses = sd.evaluate.train_classifier(steps=steps, batch_size=batch_size, lr=recipe.lr,
                                                      resolution=recipe.resolution,
                                                      generator=torch.Generator().manual_seed(recipe.seed))
    seconds = time.perf_counter() - start
    results = {}
    for split in ("train", "test"):
        images, labels = sd.evaluate.real_images(split=split, resolution=recipe.resolution)
        results[f"{split}_accuracy"] = round(sd.evaluate.accuracy(classifier, images, labels), 4)
    info = {"steps": steps, "batch_size": batch_size, "seed": recipe.seed, "seconds": round(seconds, 1),
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4), **results,
            "trained_on": _machine(torch.device("cpu")), "date": time.strftime("%Y-%m-%d")}
    path = sd.evaluate.save_classifier(run.target(name), classifier, info=info)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {seconds:.0f} s: {info}")
    return info


def train_attribute_judge(name: str, recipe: JudgeRecipe, run: Run = Run()) -> dict:
    steps, batch_size = run.sizes(recipe)
    start = time.perf_counter()
    judge, losses = sd.judge.train_judge(steps=steps, batch_size=batch_size, lr=recipe.lr, width=recipe.width,
                                         generator=torch.Generator().manual_seed(recipe.seed))
    seconds = time.perf_counter() - start
    n = run.eval_scenes or 2000
    test = sd.data.make_scenes(n, held_out="include", split="test", **sd.data.SCENES,
                               generator=torch.Generator().manual_seed(12345))
    accuracy = {k: round(v, 4) for k, v in sd.judge.judge_accuracy(judge, test).items()}
    info = {"steps": steps, "batch_size": batch_size, "seed": recipe.seed, "seconds": round(seconds, 1),
            "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4), "test_accuracy": accuracy,
            "test_scenes": n, "scenes": dict(sd.data.SCENES), "trained_on": _machine(torch.device("cpu")),
            "date": time.strftime("%Y-%m-%d")}
    path = save_pretrained(run.target(name), judge, info=info, dtype=torch.float32)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {seconds:.0f} s: held-out accuracy {accuracy}")
    return info


def train_vae(name: str, recipe: VAERecipe, run: Run = Run()) -> dict:
    device = sd.pick_device()
    config = run.train_config(recipe)
    with sd.random.seeded_global_rng(recipe.seed):  # the initial weights
        vae = sd.vae.make_vae(recipe.factor).to(device)
    print(f"{name}: {sd.unet.count_parameters(vae):,} parameters\n{config}")
    data = functools.partial(sd.vae.vae_batch, crop=recipe.crop)
    loss = functools.partial(sd.vae.vae_loss, kl_weight=recipe.kl_weight)
    result = sd.train.fit(vae, loss, data, config=config, checkpoint=run.checkpoint(name), resume=True, desc=name)
    vae = result.model
    n = run.eval_scenes or 512
    scale = sd.vae.scaling_factor_from_data(vae, sd.data.make_scenes(n, **sd.data.SCENES, device=device,
                                            generator=torch.Generator(device).manual_seed(1)).images,
                                            generator=torch.Generator(device).manual_seed(2))
    sd.vae.set_scaling_factor(vae, scale)
    judge = sd.pretrained.load_pretrained("judge", device=device)[0] if REGISTRY["judge"].path.is_file() else None
    quality = sd.vae.evaluate_vae(vae, judge=judge, n=run.eval_scenes or 500)
    final = sum(result.losses[-50:]) / len(result.losses[-50:])
    info = {"steps": config.steps, "batch_size": config.batch_size, "crop": recipe.crop, "kl_weight": recipe.kl_weight,
            "scaling_factor": round(scale, 5), "scenes": dict(sd.data.SCENES), **quality,
            "final_loss": round(final, 5), "losses": [round(x, 5) for x in result.losses[::10]],
            "trained_on": _machine(device), "seconds": round(result.seconds, 1) if result.seconds > 1 else None,
            "images_per_second": round(result.images_per_second, 1), "date": time.strftime("%Y-%m-%d")}
    out = run.target(name)

    def write(folder: Path) -> None:
        vae.save_pretrained(folder, safe_serialization=True)
        (folder / RECORD_FILE).write_text(json.dumps(info, indent=1) + "\n")

    replace_folder(out, write)
    print(f"wrote {out}: scaling factor {scale:.4f}, {quality}, {result.seconds:.0f} s")
    return info


def train_clip(name: str, recipe: CLIPRecipe, run: Run = Run()) -> dict:
    device = sd.pick_device()
    config = run.train_config(recipe)
    first = _first_phase(name, recipe, run)
    with sd.random.seeded_global_rng(recipe.seed):  # the initial weights
        model = sd.clip.MiniCLIP(sd.clip.MiniCLIPConfig(**recipe.config)).to(device)
    if first:
        model = sd.clip.MiniCLIP.from_pretrained(first[0]).float().to(device)
    if recipe.frozen_text:
        model.text_model.requires_grad_(False)
        model.text_projection.requires_grad_(False)
    trained = sd.unet.count_parameters(model, trainable_only=True)
    print(f"{name}: {trained:,} parameters trained{', from ' + str(first[0]) if first else ''}\n{config}")
    data = functools.partial(sd.clip.clip_batch, hard_fraction=recipe.hard_fraction,
                             swap_fraction=recipe.swap_fraction, drop=recipe.drop, drop_colour=recipe.drop_colour)
    result = sd.train.fit(model, sd.clip.clip_loss, data, config=config,
                          checkpoint=run.checkpoint(_phase_name(name, run)), resume=True, desc=name)
    final = sum(result.losses[-50:]) / len(result.losses[-50:])
    info = {"steps": config.steps, "batch_size": config.batch_size, "scenes": dict(sd.clip.SCENES),
            "hard_fraction": recipe.hard_fraction, "recipe": dataclasses.asdict(recipe),
            "final_loss": round(final, 4), "losses": [round(x, 4) for x in result.losses],
            "trained_on": _machine(device), "seconds": round(result.seconds, 1) if result.seconds > 1 else None,
            "pairs_per_second": round(result.images_per_second, 1), "date": time.strftime("%Y-%m-%d")}
    if first:
        info["start"] = first[1]
    out = run.target(name)
    replace_folder(out, lambda folder: result.model.save_pretrained(folder, info=info))
    print(f"wrote {out}: final loss {final:.4f}, {result.images_per_second:.0f} pairs/s, {result.seconds:.0f} s")
    return info


def _encoded_scenes(vae, n: int, seed: int, device, build: Path, **captions) -> tuple[sd.text_unet.LatentScenes, float]:
    """`sd.text_unet.encode_scenes` and its seconds, kept in ``build`` between runs (keyed by n, seed, VAE weights,
    the caption settings and the caption grammar)."""
    weights = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in vae.parameters()))
    weights.update(json.dumps(captions, sort_keys=True).encode() + Path(sd.captions.__file__).read_bytes())
    cache = build / f"latent-scenes-{n}-{seed}-{weights.hexdigest()[:12]}.pt"
    if cache.exists():
        stored = torch.load(cache)
        return sd.text_unet.LatentScenes(**stored["data"]), stored["seconds"]
    start = time.perf_counter()
    data = sd.text_unet.encode_scenes(vae, n, generator=torch.Generator(device).manual_seed(seed), **captions)
    seconds = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"data": dataclasses.asdict(data), "seconds": seconds}, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)
    return data, seconds


def train_text_unet(name: str, recipe: TextUNetRecipe, run: Run = Run()) -> dict:
    device = sd.pick_device()
    config = run.train_config(recipe)
    vae = sd.pretrained.load_pretrained("vae_f4", device=device)[0]
    text = sd.pretrained.load_pretrained("miniclip", device=device)[0].text_model.float().eval()
    # the seconds of the first encoding, also when the scenes come from the cache
    data, encoding = _encoded_scenes(vae, recipe.scenes, recipe.seed, device, run.build, drop=recipe.drop,
                                     drop_colour=recipe.drop_colour)
    first = _first_phase(name, recipe, run)
    with sd.random.seeded_global_rng(recipe.seed):  # the initial weights
        unet = sd.text_unet.make_text_unet(block_out_channels=recipe.block_out_channels, attention=recipe.attention,
                                           cross_attention_dim=text.config.hidden_size,
                                           attention_head_dim=recipe.attention_head_dim,
                                           pooled_text=recipe.pooled_text).to(device)
    if first:
        sd.text_unet.load_into(unet, first[0])
    print(f"{name}: {sd.unet.count_parameters(unet):,} parameters, {len(data)} scenes encoded in {encoding:.0f} s\n"
          f"{config}")
    loss = functools.partial(sd.text_unet.text_unet_loss, schedule=sd.NoiseSchedule(recipe.schedule),
                             text_encoder=text, caption_dropout=recipe.caption_dropout,
                             prediction_type=recipe.prediction_type, snr_gamma=recipe.snr_gamma)
    trial = run.out.name if run.out and run.phase is None else name  # parallel trial runs keep their own checkpoints
    result = sd.train.fit(unet, loss, data.batch, config=config, checkpoint=run.checkpoint(_phase_name(trial, run)),
                          resume=True, desc=trial)
    final = sum(result.losses[-100:]) / len(result.losses[-100:])
    info = {"steps": config.steps, "batch_size": config.batch_size, "scenes": recipe.scenes,
            "scene_settings": dict(sd.data.SCENES), "caption_dropout": recipe.caption_dropout,
            "schedule": recipe.schedule, "prediction_type": recipe.prediction_type,
            "snr_gamma": recipe.snr_gamma, "recipe": dataclasses.asdict(recipe), "weights": "ema",
            "text_encoder_sha256": sd.clip.fingerprint(text),  # the token states it learnt to read
            "final_loss": round(final, 5),
            "losses": [round(x, 5) for x in result.losses[::10]], "trained_on": _machine(device),
            "encoding_seconds": round(encoding, 1), "seconds": round(result.seconds, 1),
            "images_per_second": round(result.images_per_second, 1), "date": time.strftime("%Y-%m-%d")}
    if first:
        info["start"] = first[1]

    def write(folder: Path) -> None:
        result.ema.save_pretrained(folder, safe_serialization=True)
        (folder / RECORD_FILE).write_text(json.dumps(info, indent=1) + "\n")

    out = run.target(name)
    replace_folder(out, write)
    print(f"wrote {out}: final loss {final:.4f}, {result.images_per_second:.0f} images/s, {result.seconds:.0f} s")
    return info


def build_pipeline(name: str, recipe: PipelineRecipe, run: Run = Run()) -> dict:
    start = time.perf_counter()
    pipe = sd.pipeline.assemble()
    records = {part: sd.pretrained.load_pretrained(part)[1] for part in recipe.parts}
    seconds = time.perf_counter() - start
    info = {"parts": {part: {k: record.get(k) for k in ("date", "steps", "seconds", "trained_on")}
                      for part, record in records.items()},
            "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}
    out = sd.pipeline.save_pipeline(pipe, run.target(name), info=info)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB) in {seconds:.0f} s")
    return info


# The train function of each kind of recipe (a ClassifierRecipe: chapter 3's cat-or-dog judge).
TRAINERS: dict[type, Callable[[str, Any, Run], dict]] = {
    DiffusionRecipe: train_unet, ClassifierRecipe: train_judge, JudgeRecipe: train_attribute_judge,
    CLIPRecipe: train_clip, VAERecipe: train_vae, TextUNetRecipe: train_text_unet, PipelineRecipe: build_pipeline}


def train(name: str, recipe: Any, run: Run = Run()) -> dict:
    """Train (or, for the pipeline, assemble) ``name`` by ``recipe``, write its weights, and return their record."""
    if type(recipe) not in TRAINERS:
        raise TypeError(f"no train function for a {type(recipe).__name__} (the recipe of {name!r})")
    return TRAINERS[type(recipe)](name, recipe, run)


def rescore_vae(name: str) -> None:
    path = REGISTRY[name].path
    vae, info = sd.pretrained.load_pretrained(name)
    judge = sd.pretrained.load_pretrained("judge")[0]
    info.update(sd.vae.evaluate_vae(vae, judge=judge))
    tmp = path / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.replace(path / RECORD_FILE)
    print(f"re-scored {name}: PSNR {info['psnr_db']} dB, agreement {info['agreement']}")


UNSHIPPED: dict[str, Any] = {}  # recipes trained with --out until their weights ship


def _field(item: str, parser: argparse.ArgumentParser) -> tuple[str, Any]:
    name, sep, text = item.partition("=")
    if not sep:
        parser.error(f"--set takes FIELD=VALUE; got {item!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return name, tuple(value) if isinstance(value, list) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted({*REGISTRY, *UNSHIPPED}))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--start", type=Path, help="a two-phase recipe: begin from these first-phase weights (a "
                        "folder train_weights.py wrote) instead of training the first phase")
    parser.add_argument("--rescore", action="store_true", help="autoencoders: re-measure the shipped model only")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the recipe (a JSON value or a string), e.g. --set snr_gamma=5")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = REGISTRY[args.name].recipe if args.name in REGISTRY else UNSHIPPED[args.name]
    if args.set:
        recipe = dataclasses.replace(recipe, **dict(_field(item, parser) for item in args.set))
        print(recipe)
    if args.name not in REGISTRY and not args.out:
        parser.error(f"{args.name} is not shipped yet: say where to write it with --out")
    if args.rescore:
        if not isinstance(recipe, VAERecipe):
            parser.error("--rescore is for the autoencoders (vae_f4, vae_f8)")
        rescore_vae(args.name)
    else:
        train(args.name, recipe, Run(steps=args.steps, batch_size=args.batch_size, out=args.out, start=args.start))


if __name__ == "__main__":
    main()
