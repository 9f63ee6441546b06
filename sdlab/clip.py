"""mini-CLIP: a text tower that is a real ``transformers.CLIPTextModel``, a small image tower, one contrastive loss.

CLIP (Radford et al. 2021) learns two encoders at once: one for captions, one for images,
each ending in a vector of the same size. For a batch of B matching pairs it computes the
B × B matrix of cosine similarities (scaled by a learned temperature) and asks each image to
pick its own caption out of the B, and each caption its own image: a cross-entropy in both
directions (the symmetric InfoNCE loss). After training, a caption and a picture of the same
thing point the same way.

Stable Diffusion keeps only the text tower, and not its pooled vector but its per-token
states (``last_hidden_state``, (B, 77, width)): they are the ``encoder_hidden_states`` the U-Net
attends to. So the course's text tower is a genuine ``CLIPTextModel`` that chapter 7's
``StableDiffusionPipeline`` takes as its ``text_encoder``; the image tower is a small CNN that
only training and chapter 4's measurements use.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from sdlab.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from sdlab.data import ATTRIBUTES as _ATTRIBUTES
from sdlab.data import SCENES as _SCENES
from sdlab.validation import number_in_range, one_of, positive_int

__all__ = ["MiniCLIPConfig", "ImageTower", "MiniCLIP", "save_text_encoder", "load_text_encoder", "check_loaded",
           "fingerprint",
           "contrastive_loss", "similarity_matrix", "ATTRIBUTES",
           "text_embeddings", "class_embeddings", "zero_shot", "zero_shot_accuracy", "probe_accuracy", "SCENES",
           "clip_batch", "clip_loss"]

BOS, EOS, VOCAB_SIZE = 49406, 49407, 49408  # OpenAI's CLIP vocabulary (sdlab.tokenizer)


@dataclass(frozen=True)
class MiniCLIPConfig:
    """The sizes of mini-CLIP: a ``width``-wide, ``layers``-deep text transformer and a CNN image tower."""

    embed_dim: int = 128  # the shared space both towers project into
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    image_channels: int = 32  # channels of the image tower's first convolution (then 2×, 4×, 4×)
    image_size: int = 64

    def __post_init__(self) -> None:
        for name in ("embed_dim", "text_width", "text_layers", "text_heads", "image_channels", "image_size"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name))
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width={self.text_width} must be divisible by text_heads={self.text_heads}")
        if self.image_size % 16 or self.image_channels % 8:
            raise ValueError(f"image_size must be a multiple of 16 and image_channels of 8; "
                             f"got {self.image_size} and {self.image_channels}")

    def text_config(self) -> CLIPTextConfig:
        """The ``CLIPTextConfig`` of the text tower: OpenAI's vocabulary, 77 positions, quick-GELU as CLIP."""
        return CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=self.text_width,
                              intermediate_size=4 * self.text_width, num_hidden_layers=self.text_layers,
                              num_attention_heads=self.text_heads, max_position_embeddings=77,
                              hidden_act="quick_gelu", bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
                              projection_dim=self.embed_dim)


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars from transformers while loading or saving: they would freeze on the website."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


class ImageTower(nn.Module):
    """A small CNN: images (B, 3, S, S) in [−1, 1] → (B, embed_dim). Four 3×3 convolutions of stride 2.

    It flattens its last 4 × 4 grid instead of pooling it, so where things are (left, centre, right)
    and how big they are survive into the embedding.
    """

    def __init__(self, config: MiniCLIPConfig) -> None:
        super().__init__()
        c = config.image_channels
        chans = [3, c, 2 * c, 4 * c, 4 * c]  # a stride-2 first layer: full-resolution convolutions cost 8x
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                       nn.GroupNorm(8, chans[i + 1]), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        self.size = config.image_size
        self.project = nn.Linear(chans[-1] * (config.image_size // 16) ** 2, config.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, self.size,
                                                                                                     self.size):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, {self.size}, {self.size}) tensor in [-1, 1]; got {shape}")
        return self.project(self.convs(images).flatten(1))


class MiniCLIP(nn.Module):
    """The course's CLIP: ``text_model`` (a ``CLIPTextModel``), ``image_model``, projections and temperature."""

    def __init__(self, config: MiniCLIPConfig | None = None) -> None:
        super().__init__()
        self.config = config or MiniCLIPConfig()
        self.text_model = CLIPTextModel(self.config.text_config())
        self.text_projection = nn.Linear(self.config.text_width, self.config.embed_dim, bias=False)
        self.image_model = ImageTower(self.config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature 0.07

    @property
    def embedding_table(self) -> torch.Tensor:
        """The text tower's table of piece vectors, (49 408, text_width)."""
        return self.text_model.get_input_embeddings().weight

    def token_vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the transformer starts from: piece vectors plus position vectors, (B, L, text_width)."""
        embeddings = getattr(self.text_model, "text_model", self.text_model).embeddings  # transformers 4 or 5
        return embeddings(input_ids=input_ids)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The text tower's per-token states (B, L, text_width): what a U-Net attends to."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-length caption embeddings (B, embed_dim): the state at the end-of-text token, projected."""
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings (B, embed_dim) of images (B, 3, S, S) in [−1, 1]."""
        return F.normalize(self.image_model(images), dim=-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """logits_per_image (B, B): temperature-scaled cosine similarity of image i and caption j."""
        return similarity_matrix(self.encode_image(images), self.encode_text(input_ids, attention_mask),
                                 logit_scale=self.logit_scale)

    def save_pretrained(self, folder: str | os.PathLike, *, info: dict | None = None) -> Path:
        """Write ``text_encoder/`` (transformers' format, float16, loadable without sdlab) and ``heads.safetensors``."""
        folder = Path(folder)
        save_text_encoder(self.text_model, folder / "text_encoder")
        heads = nn.ModuleDict({"text_projection": self.text_projection, "image_model": self.image_model})
        heads.register_parameter("logit_scale", self.logit_scale)
        save_checkpoint(folder / "heads.safetensors", model=heads, info={"config": asdict(self.config)})
        (folder / "sdlab_record.json").write_text(json.dumps(info or {}, indent=1) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, local_files_only: bool = True) -> MiniCLIP:
        """Load what :meth:`save_pretrained` wrote (never from a hub)."""
        folder = Path(folder)
        if not (folder / "heads.safetensors").is_file() or not (folder / "text_encoder").is_dir():
            raise CheckpointError(f"{folder} holds no mini-CLIP (text_encoder/ and heads.safetensors)")
        with open(folder / "text_encoder" / "config.json") as f:
            width = json.load(f)["hidden_size"]
        from safetensors import safe_open

        with safe_open(folder / "heads.safetensors", framework="pt") as f:
            config = MiniCLIPConfig(**json.loads(f.metadata()["sdlab"])["info"]["config"])
        if config.text_width != width:
            raise CheckpointError(f"{folder}: text_encoder is {width} wide but heads expect {config.text_width}")
        model = cls(config)
        model.text_model = load_text_encoder(folder / "text_encoder", local_files_only=local_files_only)
        heads = nn.ModuleDict({"text_projection": model.text_projection, "image_model": model.image_model})
        heads.register_parameter("logit_scale", model.logit_scale)
        load_checkpoint(folder / "heads.safetensors", model=heads)
        return model


PREFIX = "text_model."  # the names transformers 4 gives CLIPTextModel's weights; 5 reads them too


def save_text_encoder(text_model: CLIPTextModel, folder: str | os.PathLike, *,
                      dtype: torch.dtype = torch.float16) -> Path:
    """``save_pretrained`` of a text tower, its weights named as every transformers version reads them.

    transformers 5 writes the names without the ``text_model.`` prefix that 4.x expects; 4.x then loads
    *random* weights and says so only in a log line. With the prefix, 4.40 to 5.x load the same tensors.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    with _quiet_transformers():
        copy.deepcopy(text_model).to(dtype).save_pretrained(folder, safe_serialization=True)
    file = folder / "model.safetensors"
    tensors = load_file(file)
    save_file({k if k.startswith(PREFIX) else PREFIX + k: v for k, v in tensors.items()}, file,
              metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    for key in ("dtype", "torch_dtype"):  # transformers 5 writes "dtype", 4 "torch_dtype": float32 on loading
        if key in config:
            config[key] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def check_loaded(model: nn.Module, file: str | os.PathLike) -> None:
    """Raise a CheckpointError unless every weight of ``model`` equals its tensor in the safetensors ``file``.

    A loader that skips a weight initialises it at random, silently where logging is quiet; this compares
    the loaded model with the file itself, whatever the library version did.
    """
    import diffusers
    import transformers
    from safetensors.torch import load_file

    stored = {k.removeprefix(PREFIX): v for k, v in load_file(file).items()}
    state = {k.removeprefix(PREFIX): v for k, v in model.state_dict().items()}
    missing = sorted(set(state) - set(stored))
    unused = sorted(set(stored) - set(state))
    differ = sorted(k for k in set(state) & set(stored) if not torch.equal(state[k].float().cpu(), stored[k].float()))
    if missing or unused or differ:
        raise CheckpointError(
            f"{file} did not load exactly into {type(model).__name__} with transformers {transformers.__version__} "
            f"and diffusers {diffusers.__version__}: {len(missing)} weights missing {missing[:3]}, {len(unused)} "
            f"unused {unused[:3]}, {len(differ)} different {differ[:3]}; the course supports transformers>=4.40 "
            f"(pyproject.toml)")


def fingerprint(model: nn.Module) -> str:
    """The sha256 of a model's weights as float32 (names and values, in name order): equal models, equal hex.

    The text U-Net's record keeps the fingerprint of the text tower it learnt to read, so a test can tell
    when mini-CLIP's text tower has moved under it.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.removeprefix(PREFIX).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_text_encoder(folder: str | os.PathLike, *, local_files_only: bool = True) -> CLIPTextModel:
    """A saved text tower in float32, checked weight by weight against its file (`check_loaded`)."""
    folder = Path(folder)
    with _quiet_transformers():
        model = CLIPTextModel.from_pretrained(folder, local_files_only=local_files_only).float()
    check_loaded(model, folder / "model.safetensors")
    return model


def similarity_matrix(image_embeds: torch.Tensor, text_embeds: torch.Tensor, *,
                      logit_scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """Cosine similarities (N, M) of N image and M text embeddings, times exp(logit_scale) if given.

    Both are normalised here, so unnormalised embeddings give the same matrix.
    """
    for name, x in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (N, D) tensor; got {shape}")
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"embedding sizes differ: images {image_embeds.shape[1]}, texts {text_embeds.shape[1]}")
    sims = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
    if logit_scale is None:
        return sims
    return sims * torch.as_tensor(logit_scale).clamp(max=math.log(100)).exp()  # CLIP caps the scale at 100


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: mean of cross-entropy over rows (image → caption) and columns (caption → image).

    Args:
        logits_per_image: (B, B), entry (i, j) = scaled similarity of image i and caption j; pair i is (i, i).
    Returns:
        A scalar: ½ [CE(logits, targets) + CE(logitsᵀ, targets)] with targets 0..B−1.
    """
    if not isinstance(logits_per_image, torch.Tensor) or logits_per_image.dim() != 2 \
            or logits_per_image.shape[0] != logits_per_image.shape[1]:
        shape = tuple(logits_per_image.shape) if isinstance(logits_per_image, torch.Tensor) else type(
            logits_per_image).__name__
        raise ValueError(f"logits_per_image must be a square (B, B) tensor; got {shape}")
    targets = torch.arange(len(logits_per_image), device=logits_per_image.device)
    logits = logits_per_image.float() if logits_per_image.dtype in (torch.float16, torch.bfloat16) \
        else logits_per_image  # half precision is summed in float32; float32 and float64 stay as they are
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


# ----------------------------------------------------------------------------- measuring what it learned

ATTRIBUTES = tuple(_ATTRIBUTES)  # the names alone: sd.data.ATTRIBUTES


def _tokenize(prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from sdlab.tokenizer import tokenize

    tokens = tokenize(prompts, padding="longest")  # warns, as everywhere, if a prompt is cut
    return tokens["input_ids"].to(device), tokens["attention_mask"].to(device)


@torch.no_grad()
def text_embeddings(model: MiniCLIP, prompts: list[str], *, batch_size: int = 512) -> torch.Tensor:
    """Unit-length embeddings (N, embed_dim) of N prompts, tokenized with the real CLIP tokenizer."""
    device = next(model.parameters()).device
    out = [model.encode_text(*_tokenize(prompts[i : i + batch_size], device))
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def class_embeddings(model: MiniCLIP, attribute: str) -> tuple[list[str], torch.Tensor]:
    """One unit vector per value of ``attribute``: the mean embedding of its prompt ensemble.

    Returns:
        (values, embeddings (V, embed_dim)), e.g. the ten animals and their vectors.
    """
    from sdlab.captions import attribute_prompts

    prompts = attribute_prompts(attribute)
    vectors = [F.normalize(text_embeddings(model, p).mean(0), dim=-1) for p in prompts.values()]
    return list(prompts), torch.stack(vectors)


@torch.no_grad()
def zero_shot(model: MiniCLIP, images: torch.Tensor, attribute: str, *, batch_size: int = 256) -> torch.Tensor:
    """Zero-shot labels (N,) for ``attribute``: each image gets the value whose class embedding is closest.

    No classifier is trained: the text tower names the classes (Radford et al. 2021, sec. 3.1).
    """
    _, classes = class_embeddings(model, attribute)
    device = classes.device
    sims = [model.encode_image(chunk.to(device)) @ classes.T for chunk in images.split(batch_size)]
    return torch.cat(sims).argmax(-1).to(images.device)


def zero_shot_accuracy(model: MiniCLIP, scenes, attributes: tuple[str, ...] = ATTRIBUTES) -> dict[str, float]:
    """Fraction of ``scenes`` (a ``SceneBatch``) whose zero-shot label is right, per attribute."""
    labels = scenes.labels
    return {a: (zero_shot(model, scenes.images, a).cpu() == labels[a].cpu()).double().mean().item()
            for a in attributes}


def _pooled_token_state(model: MiniCLIP, captions: list[str], pooling: str = "mean", batch_size: int = 512
                        ) -> torch.Tensor:
    """One vector per caption from the text tower's token states: (N, text_width).

    ``"mean"``: the mean over the caption's real tokens; ``"eos"``: the state at ``<|endoftext|>``,
    the one token that has read the whole caption (causal attention).
    """
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(captions), batch_size):
            ids, mask = _tokenize(captions[i : i + batch_size], device)
            states = model.token_states(ids, mask)
            if pooling == "eos":
                out.append(states[torch.arange(len(ids), device=device), mask.sum(1) - 1])
            else:
                out.append((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(out)


def probe_accuracy(model: MiniCLIP, train, test, *, steps: int = 300, pooling: Literal["mean", "eos"] = "mean",
                   generator: torch.Generator | None = None) -> dict[str, float]:
    """How well the token states carry each attribute: a linear probe per attribute, held-out accuracy.

    The probe sees one vector per caption made from its per-token states (what a U-Net's
    cross-attention reads) and predicts the caption's animal, colour, background, size and position.

    Args:
        train, test: ``SceneBatch``es whose (canonical) captions and labels are used; no images.
        steps: full-batch Adam steps per probe.
        pooling: ``"mean"``: the mean of the caption's token states; ``"eos"``: the state at
            ``<|endoftext|>``, which has read the whole caption.
    Returns:
        {attribute: accuracy on ``test``}.
    """
    pooling = one_of(pooling, "pooling", ("mean", "eos"))
    x_train, x_test = (_pooled_token_state(model, b.captions, pooling) for b in (train, test))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    out = {}
    for attribute in ATTRIBUTES:
        y_train, y_test = train.labels[attribute].to(x_train.device), test.labels[attribute].to(x_test.device)
        n_classes = int(max(y_train.max(), y_test.max())) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if generator is None else int(torch.randint(2**31, (), generator=generator)))
            probe = nn.Linear(x_train.shape[1], n_classes).to(x_train.device)
        optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
        for _ in range(steps):
            loss = F.cross_entropy(probe(x_train), y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            out[attribute] = (probe(x_test).argmax(-1) == y_test).double().mean().item()
    return out


# ----------------------------------------------------------------------------- training

SCENES = _SCENES  # the scenes of chapters 4-7: sd.data.SCENES


def _animal_groups(n: int, group: int, generator: torch.Generator, **render):
    """``n`` scenes in groups of ``group`` that differ only in the animal: hard negatives for the loss."""
    from sdlab.data import ANIMALS, HELD_OUT, make_scenes, render_scenes
    from sdlab.random import randperm

    bases = make_scenes(-(-n // group), generator=generator, **{k: v for k, v in render.items() if k != "device"})
    specs = []
    for base in bases.specs():
        allowed = [a for a in ANIMALS if (a, base.colour) not in HELD_OUT]
        order = randperm(len(allowed), generator=generator).tolist()[:group]
        specs += [dataclasses.replace(base, animal=allowed[i]) for i in order]
    return render_scenes(specs[:n], generator=generator, **render)


def _swapped_pairs(n: int, generator: torch.Generator, **render):
    """``n`` scenes in pairs whose animal colour and background colour are swapped ("a red cat, blue
    background" next to "a blue cat, red background"): hard negatives that only binding tells apart."""
    from sdlab.data import HELD_OUT, make_scenes, render_scenes

    specs = []
    while len(specs) < n:
        bases = make_scenes(n, generator=generator, **{k: v for k, v in render.items() if k != "device"})
        for base in bases.specs():
            if (base.animal, base.background) not in HELD_OUT:
                specs += [base, dataclasses.replace(base, colour=base.background, background=base.colour)]
    return render_scenes(specs[:n], generator=generator, **render)


def clip_batch(batch_size: int, generator: torch.Generator, *, hard_fraction: float = 0.5, group: int = 8,
               swap_fraction: float = 0.0, drop: float = 0.25, drop_colour: float = 0.0,
               **scenes: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch: scenes, varied captions of them, and the captions' token ids and mask.

    A ``hard_fraction`` of the batch comes in groups of ``group`` scenes that share colour, background,
    size and position and differ only in the animal. In a batch of random scenes, colour and place
    alone tell most pairs apart; these groups make the loss depend on recognising the animal. A
    ``swap_fraction`` comes in pairs with the animal's colour and the background's swapped: a text
    tower that only counts colour words cannot tell their captions apart, one that binds each colour
    to its noun can. ``drop`` and ``drop_colour`` go to `sdlab.captions.paraphrase`. ``scenes``
    override the keywords of ``sd.data.SCENES`` (resolution, shading, shapes).

    Returns:
        images (B, 3, R, R) in [−1, 1], input_ids (B, L) and attention_mask (B, L), L the longest caption,
        all on the generator's device.
    """
    from sdlab.captions import paraphrase
    from sdlab.data import SceneBatch, make_scenes

    device = generator.device
    n_hard = int(round(number_in_range(hard_fraction, "hard_fraction", 0, 1) * batch_size))
    n_swap = int(round(number_in_range(swap_fraction, "swap_fraction", 0, 1) * batch_size))
    if n_hard + n_swap > batch_size:
        raise ValueError(f"hard_fraction + swap_fraction must be at most 1; got {hard_fraction} + {swap_fraction}")
    render = {**SCENES, **scenes, "device": device}
    parts = [make_scenes(batch_size - n_hard - n_swap, generator=generator, **render)] \
        if n_hard + n_swap < batch_size else []
    if n_hard:
        parts.append(_animal_groups(n_hard, positive_int(group, "group"), generator, **render))
    if n_swap:
        parts.append(_swapped_pairs(n_swap, generator, **render))
    scenes = parts[0] if len(parts) == 1 else SceneBatch.cat(parts)
    ids, mask = _tokenize(paraphrase(scenes.labels, generator=generator, drop=drop, drop_colour=drop_colour), device)
    return scenes.images, ids, mask


def clip_loss(model: MiniCLIP, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss of mini-CLIP for `sdlab.train.fit`: the symmetric InfoNCE of one batch."""
    images, ids, mask = batch
    return contrastive_loss(model(images, ids, mask))
