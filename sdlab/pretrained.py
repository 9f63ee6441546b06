"""The registry of shipped weights: every file the course ships, described once, and one loader.

Each entry says what the model is (its class and config), what it was trained on and how
(the recipe `scripts/train_weights.py` runs), and where its file lives. ``load_pretrained(name)``
returns the model with its training record, whatever the model: chapter 2's and 3's U-Nets,
chapter 3's cat-or-dog judge, and the library classes of chapters 4–7, which are stored in
their own library's ``save_pretrained`` folder format so that diffusers or transformers load
them without sdlab.

    >>> model, info = sd.pretrained.load_pretrained("scenes32")
    >>> info["steps"], info["final_loss"]

``weights_dir(folder)`` moves the whole registry to another folder for a while: ``scripts/reproduce.py``
trains every model into a fresh folder with it, each stage loading the fresh files of the stages before.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sdlab.checkpoints import _TRAINING_PREFIXES, WEIGHTS_DIR, CheckpointError, _load_into, _read, save_checkpoint
from sdlab.data import make_scenes, make_silhouette_batch
from sdlab.unet import UNetConfig

__all__ = ["DiffusionRecipe", "ClassifierRecipe", "JudgeRecipe", "CLIPRecipe", "VAERecipe", "PipelineRecipe",
           "Shipped", "REGISTRY", "names", "load_pretrained", "phases",
           "save_pretrained", "RECORD_FILE", "replace_folder", "weights_dir"]

# "sdlab": one .safetensors file; "folder": the class's own save_pretrained folder (diffusers,
# transformers, or an sdlab class with from_pretrained, such as mini-CLIP's).
Format = Literal["sdlab", "folder"]
RECORD_FILE = "sdlab_record.json"  # the training record inside a save_pretrained folder
# The sdlab classes a single-file entry can hold, by the name stored in the file.
_SDLAB_CLASSES = {"UNet": "sdlab.unet.UNet", "CatDogClassifier": "sdlab.evaluate.CatDogClassifier",
                  "AttributeJudge": "sdlab.judge.AttributeJudge"}


def _train_config(recipe: Any, overrides: dict, **fixed: Any):
    """A `sdlab.train.TrainConfig` from the recipe's fields of the same names, ``fixed`` and ``overrides``."""
    from sdlab.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    settings = {name: getattr(recipe, name) for name in names if hasattr(recipe, name)}
    return TrainConfig(**{**settings, **fixed, **overrides})


@dataclass(frozen=True)
class DiffusionRecipe:
    """How a shipped noise predictor is trained: its data, network, schedule and `fit` settings."""

    data: Callable[[int, torch.Generator], torch.Tensor]  # (batch size, generator) -> clean images
    unet: UNetConfig
    steps: int
    # Which weights ship: the EMA pays off once a run is several times longer than the EMA's memory
    # (about 1 / (1 - 0.999) = 1 000 steps); a 1 000-step run ships its final weights.
    weights: Literal["final", "ema"] = "final"
    schedule: str = "cosine"
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0

    def train_config(self, **overrides: Any):
        """The `sdlab.train.TrainConfig` of this recipe (``steps``, ``batch_size`` ... may be overridden)."""
        return _train_config(self, overrides, checkpoint_every=250)


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the cat-or-dog judge is trained: the arguments of `sdlab.evaluate.train_classifier`."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    resolution: int = 32
    seed: int = 0


@dataclass(frozen=True)
class JudgeRecipe:
    """How the attribute judge of chapters 5–7 is trained: the arguments of `sdlab.judge.train_judge`."""

    steps: int = 4000
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 32
    seed: int = 0


@dataclass(frozen=True)
class VAERecipe:
    """How a shipped autoencoder is trained: `sdlab.vae.make_vae` arguments, its data and `fit` settings."""

    factor: int
    steps: int = 3000
    batch_size: int = 64
    crop: int = 32  # training squares cut from 64×64 scenes (sdlab.vae.vae_batch)
    kl_weight: float = 1e-6
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    seed: int = 0

    def train_config(self, **overrides: Any):
        """The `sdlab.train.TrainConfig` of this recipe (no EMA: the final weights ship)."""
        return _train_config(self, overrides, ema_decay=0.0, checkpoint_every=250)


@dataclass(frozen=True)
class CLIPRecipe:
    """How mini-CLIP is trained: its sizes (`sdlab.clip.MiniCLIPConfig` fields) and `fit` settings."""

    config: dict = field(default_factory=dict)  # MiniCLIPConfig(**config); empty: the defaults
    steps: int = 3000
    batch_size: int = 256
    hard_fraction: float = 0.5  # of each batch in groups that differ only in the animal (sdlab.clip.clip_batch)
    swap_fraction: float = 0.0  # in pairs with the animal's and the background's colours swapped
    drop: float = 0.25  # captions (sdlab.captions.paraphrase): each of size, place and background left out
    drop_colour: float = 0.0  # ... and the animal's colour
    # train only the image tower and the temperature: the text tower, which the text U-Net reads, stays
    # exactly as the phase before left it
    frozen_text: bool = False
    start: CLIPRecipe | None = None  # the recipe of the weights this one trains on from; None: random weights
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0

    def train_config(self, **overrides: Any):
        """The `sdlab.train.TrainConfig` of this recipe (no EMA: the final weights ship)."""
        return _train_config(self, overrides, ema_decay=0.0, checkpoint_every=100)


@dataclass(frozen=True)
class TextUNetRecipe:
    """How chapter 6's text-conditioned U-Net is trained: `sdlab.text_unet.make_text_unet` sizes, data and `fit`."""

    block_out_channels: tuple[int, ...] = (48, 96, 96)  # 3.8 M parameters, 51 images/s on one CPU thread
    attention: tuple[bool, ...] = (False, True, True)  # none at 16x16: 2.5x faster (scripts/bench_text_unet.py)
    attention_head_dim: int = 8  # diffusers' name for the number of heads (8, as Stable Diffusion 1)
    scenes: int = 30_000  # captioned scenes encoded once by vae_f4 (`sdlab.text_unet.encode_scenes`)
    drop: float = 0.1  # their captions (sdlab.captions.paraphrase): size, place, background each left out
    drop_colour: float = 0.0  # ... and the animal's colour ("a cat on blue")
    # the token states pooled into the time embedding (diffusers' addition_embed_type="text"): every
    # resnet hears the whole prompt, as mini-CLIP's contrastive loss taught it to bind colour to noun
    pooled_text: bool = False
    caption_dropout: float = 0.1
    # ᾱ_T ≈ 0 (the cosine schedule) with v-prediction: under scaled_linear the last step keeps enough
    # signal that the pilots read the background from the noise, not from the prompt (chapter 6).
    schedule: str = "cosine"
    prediction_type: str = "v_prediction"
    snr_gamma: float | None = None
    steps: int = 3600
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    seed: int = 0
    start: TextUNetRecipe | None = None  # the recipe of the weights this one trains on from; None: random weights

    def train_config(self, **overrides: Any):
        """The `sdlab.train.TrainConfig` of this recipe; the EMA weights ship."""
        return _train_config(self, overrides, checkpoint_every=100)


@dataclass(frozen=True)
class PipelineRecipe:
    """How chapter 7's pipeline is put together: shipped parts, nothing trained (`sdlab.pipeline.assemble`)."""

    parts: tuple[str, ...] = ("miniclip", "vae_f4", "text_unet")


@dataclass(frozen=True)
class Shipped:
    """One shipped model: what it is, what trains it, and where its file is (under ``sdlab/weights``,
    or the folder of `weights_dir` while one is in force)."""

    name: str
    chapter: int
    description: str
    model_class: str  # "sdlab.unet.UNet", "diffusers.AutoencoderKL", "transformers.CLIPTextModel", ...
    recipe: DiffusionRecipe | ClassifierRecipe | Any
    format: Format = "sdlab"
    extra: dict = field(default_factory=dict)  # anything else a chapter needs to know

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / (f"{self.name}.safetensors" if self.format == "sdlab" else self.name)


def _scenes32(n: int, g: torch.Generator) -> torch.Tensor:
    return make_scenes(n, resolution=32, generator=g, device=g.device).images


def _catdog32(n: int, g: torch.Generator) -> torch.Tensor:
    return make_silhouette_batch(n, classes=("cat", "dog"), resolution=32, generator=g, device=g.device)[0]


@contextlib.contextmanager
def weights_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Resolve every `Shipped.path` inside ``folder`` instead of ``sdlab/weights`` while the block runs.

    ``load_pretrained(name)`` reads there, and ``scripts/train_weights.py`` writes there: a model
    trained under it and the models trained after it use the fresh files, never the shipped ones.
    The shipped folder comes back on exit, also when the block raises. The setting is the process's
    (one folder for every thread), and blocks nest.

        >>> with sd.pretrained.weights_dir("build/reproduced"):
        ...     vae, info = sd.pretrained.load_pretrained("vae_f4")   # build/reproduced/vae_f4

    Yields:
        ``folder`` as an absolute `Path` (it need not exist yet).
    """
    global WEIGHTS_DIR
    previous, WEIGHTS_DIR = WEIGHTS_DIR, Path(folder).resolve()
    try:
        yield WEIGHTS_DIR
    finally:
        WEIGHTS_DIR = previous


# The second phase of mini-CLIP and of the text U-Net (issue 25, "obeys the reader's words"): the weights
# of the first phase trained on with the full caption grammar (sdlab.captions), colour-swapped pairs as hard
# negatives, captions that leave the colour out, and the pooled prompt in the U-Net's time embedding.
_BINDING_CLIP = dict(steps=600, lr=5e-4, warmup_steps=50, hard_fraction=0.4, swap_fraction=0.3, drop=0.3,
                     drop_colour=0.1)
# Phase 3: the image tower alone learns the animal better (zero-shot on unseen animal-colour pairs 94.9 % after
# phase 2), with animal-only groups in most of each batch; the text tower the U-Net reads does not move.
_ANIMAL_CLIP = dict(steps=600, lr=5e-4, warmup_steps=20, hard_fraction=0.7, swap_fraction=0.2, drop=0.3,
                    drop_colour=0.1, frozen_text=True)
_BINDING_UNET = dict(steps=1200, lr=5e-4, warmup_steps=100, scenes=40_000, drop=0.3, drop_colour=0.1,
                     pooled_text=True)

REGISTRY: dict[str, Shipped] = {entry.name: entry for entry in [
    Shipped("scenes32", 2, "noise predictor for 32×32 captioned colour scenes (unconditional)", "sdlab.unet.UNet",
            DiffusionRecipe(_scenes32, UNetConfig(in_channels=3, out_channels=3, sample_size=32), steps=1000)),
    Shipped("catdog32", 3, "noise predictor for 32×32 cat and dog silhouettes (unconditional)", "sdlab.unet.UNet",
            DiffusionRecipe(_catdog32, UNetConfig(in_channels=1, out_channels=1, sample_size=32), steps=4000,
                            weights="ema")),
    Shipped("catdog_classifier", 3, "cat-or-dog judge of generated silhouettes (p(dog), Fréchet features)",
            "sdlab.evaluate.CatDogClassifier", ClassifierRecipe()),
    Shipped("miniclip", 4, "mini-CLIP: a CLIPTextModel text tower and a CNN image tower, on 64×64 scenes",
            "sdlab.clip.MiniCLIP", CLIPRecipe(**_ANIMAL_CLIP, start=CLIPRecipe(**_BINDING_CLIP, start=CLIPRecipe())),
            format="folder"),
    Shipped("judge", 5, "attribute judge: names animal, colour, background, size and position of 64×64 scenes",
            "sdlab.judge.AttributeJudge", JudgeRecipe()),
    Shipped("vae_f4", 5, "autoencoder, factor 4: 64×64×3 scenes ↔ 16×16×4 latents", "diffusers.AutoencoderKL",
            VAERecipe(factor=4, steps=4000), format="folder"),
    Shipped("vae_f8", 5, "autoencoder, factor 8: 64×64×3 scenes ↔ 8×8×4 latents", "diffusers.AutoencoderKL",
            VAERecipe(factor=8, steps=1500), format="folder"),
    Shipped("text_unet", 6, "text-conditioned U-Net: 16×16×4 latents + mini-CLIP token states → v",
            "diffusers.UNet2DConditionModel", TextUNetRecipe(**_BINDING_UNET, start=TextUNetRecipe()), format="folder"),
    Shipped("mini_sd", 7, "the course's Stable Diffusion: its tokenizer, text encoder, VAE, U-Net and DDIM",
            "diffusers.StableDiffusionPipeline", PipelineRecipe(), format="folder"),
]}


def names() -> list[str]:
    """The names ``load_pretrained`` knows, in registry order."""
    return list(REGISTRY)


def _resolve(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _entry(name: str) -> Shipped:
    if name not in REGISTRY:
        raise KeyError(f"no shipped weights called {name!r}; the course ships {names()}")
    return REGISTRY[name]


def _sdlab_class(info: dict, entry: Shipped | None, path: Path) -> type:
    """The sdlab class a single file holds: named in the file, else by its registry entry, else a UNet."""
    class_name = info.get("class")
    if class_name is None:
        return _resolve(entry.model_class) if entry is not None else _resolve(_SDLAB_CLASSES["UNet"])
    if class_name not in _SDLAB_CLASSES:
        raise CheckpointError(f"{path} holds a {class_name!r}, which is not one of {sorted(_SDLAB_CLASSES)}")
    return _resolve(_SDLAB_CLASSES[class_name])


def _pretrained_config(tensors: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> UNetConfig:
    """Check that a file read by `_read` is shipped weights (as `save_pretrained` writes) and return its config.

    Args:
        tensors, meta: the file's, as `_read` returns them.
        path: the file, for messages.

    Returns:
        The file's `sdlab.unet.UNetConfig`.

    Raises:
        CheckpointError: the file is a training checkpoint, holds no weights, or no valid UNet config.
    """
    if "optimizer" in meta or "rng_device" in meta or any(k.startswith(_TRAINING_PREFIXES) for k in tensors):
        raise CheckpointError(f"{path} is a training checkpoint, not shipped weights: load it with "
                              f"load_checkpoint({str(path)!r}, model=...) or load_weights({str(path)!r}, model)")
    if not any(k.startswith("model.") for k in tensors):
        raise CheckpointError(f"{path} holds no model weights (no model.* tensors): was it written by save_pretrained?")
    config = meta["info"].get("config")
    if config is None:
        raise CheckpointError(f"{path} holds no model config: was it written by save_pretrained?")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has a config of type {type(config).__name__}, not a UNetConfig dict: "
                              f"was it written by save_pretrained?")
    try:
        return UNetConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds no valid UNet config (was it written by save_pretrained?): "
                              f"{error}") from error


def _config_of(cls: type, info: dict, tensors: dict, meta: dict, path: Path) -> Any:
    """The model config stored in a single file, checked to be shipped weights for ``cls``."""
    if cls.__name__ == "UNet":
        return _pretrained_config(tensors, meta, path)
    config = info.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds no {cls.__name__} config: was it written by save_pretrained?")
    return config


def _load_file(path: Path, entry: Shipped | None) -> tuple[nn.Module, dict]:
    """An sdlab model from one safetensors file that `save_pretrained` wrote."""
    if entry is not None and not path.is_file():
        raise CheckpointError(f"no weights for {entry.name!r} at {path}; train them with: "
                              f"python scripts/train_weights.py {entry.name}")
    tensors, meta = _read(path)
    info = meta["info"]
    cls = _sdlab_class(info, entry, path)
    config = _config_of(cls, info, tensors, meta, path)
    try:
        model = cls(config) if isinstance(config, UNetConfig) else cls(**config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a {cls.__name__} config that does not build: {error}") from error
    _load_into(model, tensors, "model", path)
    return model, info


def replace_folder(folder: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a ``save_pretrained`` folder all at once: ``write(tmp)`` fills a sibling folder, which then replaces it.

    An interrupted run leaves the old folder whole (and a ``.tmp`` sibling to delete), never a mix of both.
    """
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_folder(path: Path, entry: Shipped) -> tuple[nn.Module, dict]:
    """A diffusers or transformers model from its own ``save_pretrained`` folder, offline."""
    if not path.is_dir():
        raise CheckpointError(f"no {entry.model_class} folder at {path}; train it with: "
                              f"python scripts/train_weights.py {entry.name}")
    # diffusers asks for `accelerate` unless told plainly not to use its low-memory loading
    options = {"low_cpu_mem_usage": False} if entry.model_class.startswith("diffusers.") else {}
    # some layers draw their initial values before the file overwrites them (the pooled-prompt embedding's
    # torch.randn): loading leaves the caller's global random state alone
    with torch.random.fork_rng(devices=[]):
        model = _resolve(entry.model_class).from_pretrained(path, local_files_only=True, **options)
    if hasattr(model, "set_progress_bar_config"):  # a pipeline
        model.set_progress_bar_config(disable=True)
    if entry.model_class.startswith(("diffusers.", "transformers.")):  # MiniCLIP checks its own
        _check_parts(model, path)
    record = path / RECORD_FILE
    info = json.loads(record.read_text()) if record.is_file() else {}
    return model, info


def _check_parts(model: Any, path: Path) -> None:
    """Every weight of a loaded folder (or of each part of a pipeline) equals its file: none left random."""
    from sdlab.clip import check_loaded

    parts = {name: getattr(model, name) for name in ("text_encoder", "unet", "vae")} \
        if hasattr(model, "components") else {"": model}
    for sub, part in parts.items():
        files = sorted((path / sub).glob("*.safetensors"))
        if isinstance(part, nn.Module) and len(files) == 1:
            check_loaded(part, files[0])


def load_pretrained(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None
                    ) -> tuple[nn.Module, dict]:
    """Load shipped weights by name (``sd.pretrained.names()``) or from a file `save_pretrained` wrote.

    Args:
        name_or_path: a registry name such as ``"scenes32"``, or the path of a ``.safetensors`` file.
        device: where to put the model (default: the CPU).

    Returns:
        ``(model in eval mode, float32, on device; info)``: info is the training record (settings,
        losses, time, machine) stored with the weights. ``"mini_sd"`` gives a ``StableDiffusionPipeline``.

    Raises:
        KeyError: an unknown name. CheckpointError: the file is missing, corrupt, or not shipped weights.
    """
    name = os.fspath(name_or_path)
    if name in REGISTRY:
        entry = REGISTRY[name]
        model, info = _load_file(entry.path, entry) if entry.format == "sdlab" else _load_folder(entry.path, entry)
    elif Path(name).suffix or os.sep in name or "/" in name:
        model, info = _load_file(Path(name), None)
    else:
        _entry(name)  # raises: an unknown name
    if not isinstance(model, nn.Module):  # a pipeline: its parts are float32 modules in eval mode already
        return model.to(device or "cpu"), info
    return model.float().to(device or "cpu").eval(), info


def phases(record: dict) -> list[dict]:
    """The training phases of a record, first first: a two-phase recipe's record holds its first in ``"start"``.

    >>> sum(phase["seconds"] for phase in sd.pretrained.phases(record))   # what all the training cost
    """
    if not isinstance(record, dict):
        raise TypeError(f"record must be a training record (a dict); got {type(record).__name__}")
    first = record.get("start")
    return [*(phases(first) if isinstance(first, dict) else []), record]


def save_pretrained(path: str | os.PathLike, model: nn.Module, *, info: dict | None = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Ship a trained sdlab model (UNet or classifier): weights in ``dtype``, config and record, in one file.

    Args:
        path: the ``.safetensors`` file to write (atomically).
        model: a `sdlab.unet.UNet` or `sdlab.evaluate.CatDogClassifier`.
        info: the training record, any JSON (schedule, steps, losses, time).
        dtype: the dtype the weights are stored in (they load as float32).

    Returns:
        ``path``, as a `Path`.
    """
    class_name = type(model).__name__
    if class_name not in _SDLAB_CLASSES:
        raise TypeError(f"save_pretrained stores {sorted(_SDLAB_CLASSES)}; got {class_name} (library models: use "
                        "their own save_pretrained)")
    config = asdict(model.config) if is_dataclass(model.config) else dict(model.config)
    shipped = copy.deepcopy(model).to(dtype=dtype)
    return save_checkpoint(path, model=shipped, info={"class": class_name, "config": config, **(info or {})})
