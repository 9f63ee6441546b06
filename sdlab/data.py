"""Captioned colour scenes built from animal silhouettes: the course's training data.

From the silhouettes of ``sdlab.silhouettes`` (the PyPI package ``animal-mnist``)
the course composes scenes such as "a small red cat on the left, blue background":
animal × colour × background × size × position, drawn deterministically from a
``torch.Generator``, with the structured labels behind every caption.

- The animal is painted through its silhouette mask, cropped to its bounding square
  and resized with area averaging; train scenes use train silhouettes only.
- Sizes are fractions of the resolution (small 7/16, large 11/16); positions
  put the animal's square at the left edge, the centre or the right edge, with
  up to R/16 pixels of seeded jitter.
- Held-out combinations (``HELD_OUT``, one colour per animal) are never drawn
  with ``held_out="exclude"`` (for training) and only drawn with ``"only"``
  (to test generalisation to unseen combinations).

The silhouette helpers (``load_silhouettes``, ``make_silhouette_batch``, ``ANIMALS``)
are re-exported here, so ``sd.data`` is the one place a notebook looks for data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

import torch

from sdlab.random import generator_device, randint
from sdlab.silhouettes import (
    ANIMALS,
    SHAPES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    Animal,
    Resolution,
    Shapes,
    Split,
    _check_names,
    _split_range,
    _sprite_bank,
    load_silhouettes,
    make_silhouette_batch,
    silhouette_indices,
)
from sdlab.validation import int_in_range, one_of

__all__ = [
    "ATTRIBUTES", "ANIMALS", "COLOURS", "COLOUR_RGB", "SIZES", "SIZE_FRACTIONS", "POSITIONS", "HELD_OUT",
    "TRAIN_PER_CLASS", "TEST_PER_CLASS", "SHAPES", "SCENES", "SceneSpec", "SceneBatch", "load_silhouettes",
    "make_scenes", "render_scenes", "make_silhouette_batch", "silhouette_indices",
]

Colour = Literal["red", "orange", "yellow", "green", "blue", "purple", "white", "black"]
Size = Literal["small", "large"]
Position = Literal["left", "centre", "right"]
HeldOut = Literal["exclude", "only", "include"]
Shading = Literal["flat", "detail"]

COLOURS: tuple[str, ...] = get_args(Colour)
COLOUR_RGB = MappingProxyType({
    "red": (230, 25, 25), "orange": (245, 130, 20), "yellow": (250, 220, 30), "green": (40, 170, 60),
    "blue": (40, 90, 230), "purple": (150, 50, 190), "white": (245, 245, 245), "black": (15, 15, 15),
})
SIZES: tuple[str, ...] = get_args(Size)
SIZE_FRACTIONS = MappingProxyType({"small": 7 / 16, "large": 11 / 16})  # side of the animal's square / R
POSITIONS: tuple[str, ...] = get_args(Position)
# the five things every scene is labelled with, in this order, and the names each one can take
ATTRIBUTES = MappingProxyType({"animal": ANIMALS, "colour": COLOURS, "background": COLOURS, "size": SIZES,
                               "position": POSITIONS})
# (animal, colour) pairs kept out of training: every animal and every colour still appears.
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("bear", "green"), ("bird", "white"), ("cat", "blue"), ("cow", "orange"), ("dog", "yellow"),
    ("elephant", "red"), ("giraffe", "purple"), ("horse", "black"), ("sheep", "blue"), ("zebra", "orange"),
)
# The scenes of chapters 4-7: 64 × 64, inner detail kept, clear silhouettes (a judge can name them).
SCENES = MappingProxyType({"resolution": 64, "shading": "detail", "shapes": "clear"})
_WHERE = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
_DETAIL_STRENGTH = 0.7  # how far the darkest detail moves the animal's colour (shading="detail")


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneSpec:
    """One scene: which animal, painted in which colour, on which background, how big and where."""

    animal: Animal
    colour: Colour
    background: Colour
    size: Size = "large"
    position: Position = "centre"

    def __post_init__(self) -> None:
        for field, allowed in [("animal", ANIMALS), ("colour", COLOURS), ("background", COLOURS),
                               ("size", SIZES), ("position", POSITIONS)]:
            object.__setattr__(self, field, one_of(getattr(self, field), field, allowed))
        if self.colour == self.background:
            raise ValueError(f"colour and background must differ; both are {self.colour!r}")

    def caption(self, *, style: Literal["full", "short"] = "full") -> str:
        """The caption, e.g. "a small red cat on the left, blue background" ("short": "a red cat")."""
        one_of(style, "style", ("full", "short"))
        if style == "short":
            return f"a {self.colour} {self.animal}"
        return _caption(self.animal, self.colour, self.background, self.size, self.position)

    @classmethod
    def from_caption(cls, caption: str) -> SceneSpec:
        """Parse a full-style caption back into its spec (the inverse of ``caption()``)."""
        m = re.fullmatch(r"a (\w+) (\w+) (\w+) (on the left|in the centre|on the right), (\w+) background",
                         caption.strip())
        if m is None:
            raise ValueError(f"caption {caption!r} does not follow 'a <size> <colour> <animal> <where>, "
                             f"<colour> background' with <where> one of {tuple(_WHERE.values())}")
        where = {v: k for k, v in _WHERE.items()}[m[4]]
        return cls(animal=m[3], colour=m[2], background=m[5], size=m[1], position=where)


@dataclass(frozen=True)
class SceneBatch:
    """A batch of rendered scenes with captions and integer labels (indices into the name tuples).

    Attributes:
        images: (B, 3, R, R) float32 in [-1, 1]. masks: (B, 1, R, R) float32 alpha in [0, 1].
        captions: B strings. animal, colour, background, size, position: (B,) int64 indices
        into ``ANIMALS``, ``COLOURS``, ``COLOURS``, ``SIZES``, ``POSITIONS``.
    """

    images: torch.Tensor
    masks: torch.Tensor
    captions: list[str]
    animal: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    size: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def labels(self) -> dict[str, torch.Tensor]:
        """The five label tensors by name."""
        return {k: getattr(self, k) for k in ATTRIBUTES}

    def specs(self) -> list[SceneSpec]:
        """The scenes as ``SceneSpec`` objects."""
        names = (ANIMALS, COLOURS, COLOURS, SIZES, POSITIONS)
        columns = [t.tolist() for t in self.labels.values()]
        return [SceneSpec(*(n[i] for n, i in zip(names, row))) for row in zip(*columns)]

    @staticmethod
    def cat(batches: Sequence[SceneBatch]) -> SceneBatch:
        """One batch of all the scenes of ``batches``, in order (their images must share a size and device)."""
        if not batches or not all(isinstance(b, SceneBatch) for b in batches):
            raise TypeError(f"batches must be a non-empty sequence of SceneBatch; got {batches!r:.60}")
        labels = {k: torch.cat([b.labels[k] for b in batches]) for k in batches[0].labels}
        return SceneBatch(torch.cat([b.images for b in batches]), torch.cat([b.masks for b in batches]),
                          [c for b in batches for c in b.captions], **labels)

    def to(self, device: torch.device | str) -> SceneBatch:
        """The same batch with every tensor on ``device``."""
        moved = {k: v.to(device) for k, v in self.labels.items()}
        return SceneBatch(self.images.to(device), self.masks.to(device), list(self.captions), **moved)


def make_scenes(
    n: int, *, resolution: Resolution = 32, classes: Sequence[str] | str | None = None,
    colours: Sequence[str] | str | None = None, split: Split = "train", held_out: HeldOut = "exclude",
    shading: Shading = "flat", shapes: Shapes = "all", generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> SceneBatch:
    """Draw ``n`` random captioned scenes.

    Draws, uniformly: an allowed (animal, colour) pair, a background among the other
    allowed colours, a size and a position; then a silhouette of the split and jitter.

    Args:
        n: number of scenes (>= 1).
        resolution: side R of the square images, 32 or 64.
        classes: animals to use (default all); colours: colours for animal and background (default all, >= 2).
        split: whose silhouettes to paint, ``"train"`` or ``"test"``.
        held_out: ``"exclude"`` never draws ``HELD_OUT`` pairs, ``"only"`` draws only them, ``"include"`` both.
        shading: ``"flat"`` paints the animal in one colour (its shape alone); ``"detail"`` keeps the
            silhouette's inner detail (a zebra's stripes) as darker tones of that colour.
        shapes: ``"all"`` silhouettes of the split, or only the ``"clear"`` ones (chapters 4–7), whose
            animal can be told apart reliably (see ``silhouette_indices``).
        generator: makes the batch reproducible (same seed, same images and captions; the
            captions and labels do not depend on ``resolution``).
        device: where the images are rendered (default CPU); random numbers come from the generator's device.

    Returns:
        ``SceneBatch`` with images (n, 3, R, R) in [-1, 1], masks, captions and labels.
    """
    n = int_in_range(n, "n", 1)
    resolution = one_of(resolution, "resolution", Resolution)
    one_of(held_out, "held_out", HeldOut)
    _split_range(split)
    animals, palette = _check_names("classes", classes, ANIMALS), _check_names("colours", colours, COLOURS)
    if len(palette) < 2:
        raise ValueError(f"colours needs at least two colours so the background differs from the animal; "
                         f"got {palette}; allowed: {COLOURS}")
    pairs = [(ANIMALS.index(a), COLOURS.index(c)) for a in animals for c in palette
             if held_out == "include" or ((a, c) in HELD_OUT) == (held_out == "only")]
    if not pairs:
        raise ValueError(f"held_out={held_out!r} with classes={animals} and colours={palette} leaves no "
                         f"(animal, colour) combination; the held-out ones are {HELD_OUT}")
    g_device = generator_device(generator)

    def draw(high: int, count: int) -> torch.Tensor:  # integers in [0, high), on the generator's device
        return randint(0, high, (count,), generator=generator, device=g_device)

    animal, colour = torch.tensor(pairs, device=g_device)[draw(len(pairs), n)].unbind(1)
    allowed = torch.tensor([COLOURS.index(c) for c in palette], device=g_device)
    slot = torch.full((len(COLOURS),), -1, dtype=torch.long, device=g_device)
    slot[allowed] = torch.arange(len(allowed), device=g_device)
    j = draw(len(allowed) - 1, n)  # a background slot among the others: skip the animal colour's slot
    background = allowed[j + (j >= slot[colour]).long()]
    labels = dict(animal=animal, colour=colour, background=background, size=draw(len(SIZES), n),
                  position=draw(len(POSITIONS), n))
    return _render(labels, resolution=resolution, split=split, shading=shading, shapes=shapes, generator=generator,
                   device=device)


def render_scenes(
    specs: Sequence[SceneSpec], *, resolution: Resolution = 32, split: Split = "train", shading: Shading = "flat",
    shapes: Shapes = "all", generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> SceneBatch:
    """Render given scenes (any combination, held-out ones included); silhouette and jitter are random.

    Args:
        specs: B ``SceneSpec`` objects (or one). resolution, split, shading, shapes, generator, device:
            as in ``make_scenes``.

    Returns:
        ``SceneBatch`` whose captions and labels are exactly those of ``specs``.
    """
    specs = [specs] if isinstance(specs, SceneSpec) else list(specs)
    if not specs or not all(isinstance(s, SceneSpec) for s in specs):
        raise TypeError(f"specs must be a non-empty sequence of SceneSpec; got {specs!r:.80}")
    resolution = one_of(resolution, "resolution", Resolution)
    _split_range(split)
    g_device = generator_device(generator)
    names = dict(animal=ANIMALS, colour=COLOURS, background=COLOURS, size=SIZES, position=POSITIONS)
    labels = {k: torch.tensor([v.index(getattr(s, k)) for s in specs], device=g_device) for k, v in names.items()}
    return _render(labels, resolution=resolution, split=split, shading=shading, shapes=shapes, generator=generator,
                   device=device)


def _render(labels: dict[str, torch.Tensor], *, resolution: int, split: str, shading: str, shapes: str,
            generator: torch.Generator | None, device) -> SceneBatch:
    """Paint each scene: alpha-blend the animal colour over the background through the silhouette mask."""
    shading = one_of(shading, "shading", Shading)
    device = torch.device("cpu") if device is None else torch.device(device)
    g_device = labels["animal"].device
    n, R = len(labels["animal"]), resolution
    table = silhouette_indices(split, shapes)  # (animals, K): the silhouettes this split may paint
    pick = randint(0, table.shape[1], (n,), generator=generator, device=g_device)
    silhouette = table[labels["animal"].cpu(), pick.cpu()]
    J = R // 16
    jx, jy = (randint(0, J + 1, (n,), generator=generator, device=g_device) for _ in range(2))
    lab = {k: v.to(device) for k, v in labels.items()}
    jx, jy = jx.to(device), jy.to(device)
    sides = [round(SIZE_FRACTIONS[s] * R) for s in SIZES]
    free = R - torch.tensor(sides, device=device)[lab["size"]]
    x0 = torch.stack([jx, free // 2 + jx - J // 2, free - jx])[lab["position"], torch.arange(n, device=device)]
    x0, y0 = x0.clamp(min=0).minimum(free), (free // 2 + jy - J // 2).clamp(min=0).minimum(free)
    alpha = torch.zeros(n, R, R, device=device)
    grey = torch.ones(n, R, R, device=device)  # 1: the animal's own colour; darker where its detail is dark
    for size_index, side in enumerate(sides):
        chosen = (lab["size"] == size_index).nonzero().squeeze(1)
        if len(chosen) == 0:
            continue
        sprites = _sprite_bank(side)[silhouette[chosen.cpu()]].to(device).float() / 255
        ar = torch.arange(side, device=device)
        rows, cols = (y0[chosen, None] + ar)[:, :, None], (x0[chosen, None] + ar)[:, None, :]
        alpha[chosen[:, None, None], rows, cols] = sprites
        if shading == "detail":
            detail = _sprite_bank(side, "grey")[silhouette[chosen.cpu()]].to(device).float() / 255
            grey[chosen[:, None, None], rows, cols] = (detail / sprites.clamp(min=1 / 255)).clamp(max=1)
    rgb = torch.tensor([COLOUR_RGB[c] for c in COLOURS], dtype=torch.float32, device=device) / 127.5 - 1
    fg, bg = rgb[lab["colour"], :, None, None], rgb[lab["background"], :, None, None]
    if shading == "detail":  # dark detail pulls light colours towards black and black towards grey
        towards = torch.where(fg.mean(1, keepdim=True) > -0.4, -1.0, 0.0)
        fg = fg + _DETAIL_STRENGTH * (1 - grey[:, None]) * (towards - fg)
    images = bg + alpha[:, None] * (fg - bg)  # "over": x = α·animal + (1 − α)·background (Porter & Duff 1984)
    columns = [[names[i] for i in t.tolist()] for names, t in
               zip((ANIMALS, COLOURS, COLOURS, SIZES, POSITIONS), labels.values())]
    captions = [_caption(*names) for names in zip(*columns)]
    return SceneBatch(images, alpha[:, None], captions, **lab)


def _caption(animal: str, colour: str, background: str, size: str, position: str) -> str:
    """The one caption template: "a small red cat on the left, blue background"."""
    return f"a {size} {colour} {animal} {_WHERE[position]}, {background} background"
