"""The animal silhouettes every picture of the course is made from.

They are the 10 000 grey 28×28 images of the PyPI package ``animal-mnist`` (0.4):
10 animals, 1 000 each, shipped as pickled numpy arrays that this module reads
with an unpickler that can rebuild numpy arrays and nothing else.

- Split: in every class the first 900 silhouettes are ``"train"``, the last 100
  ``"test"``, so evaluation never sees a training silhouette.
- Mask: a pixel belongs to the animal when its grey value is > 40 (of 255) or it
  lies in a hole enclosed by such pixels; for scenes the mask is cropped to its
  bounding square and resized with area averaging (anti-aliased edges).

``sdlab.data`` paints them into captioned colour scenes; ``make_silhouette_batch``
gives the plain grey silhouettes (chapter 3's cats and dogs).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from sdlab.random import randint
from sdlab.validation import int_in_range, one_of

__all__ = ["ANIMALS", "PER_CLASS", "TRAIN_PER_CLASS", "TEST_PER_CLASS", "SHAPES", "load_silhouettes",
           "make_silhouette_batch", "silhouette_indices"]

Animal = Literal["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
Split = Literal["train", "test"]
Resolution = Literal[32, 64]
Shapes = Literal["all", "clear"]

ANIMALS: tuple[str, ...] = get_args(Animal)  # label i of animal-mnist is ANIMALS[i]
PER_CLASS, TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 900, 100
_PACKAGE = "animal_mnist"
_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_PIP_HINT = "pip install --no-deps animal-mnist==0.4"
_MASK_THRESHOLD = 40  # grey value (of 255) above which a pixel is part of the animal
SHAPES: tuple[str, ...] = get_args(Shapes)
# The "clear" silhouettes (chosen by scripts/curate_silhouettes.py): per animal the 200 "train"
# and 20 "test" ones that a classifier which never saw them names most surely.
CLEAR_FILE = Path(__file__).parent / "data_files" / "clear_silhouettes.json"

# ----------------------------------------------------------------------------- loading


def _data_dir() -> Path:
    """Folder of the animal-mnist data files, found without importing the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the silhouettes come from the PyPI package animal-mnist; install it with: {_PIP_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    missing = [name for name in _FILES if not (folder / name).is_file()]
    if missing:
        raise ImportError(f"animal-mnist is installed without its data files {missing}; reinstall: {_PIP_HINT}")
    return folder


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's ndarray reconstructor, whatever numpy calls it


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain numpy arrays and refuses every other global."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
                ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        return self._ALLOWED[(module, name)]


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    """All 10 000 silhouettes (10000, 28, 28) uint8 and labels (10000,) int64, sorted by class."""
    folder = _data_dir()
    arrays = []
    for name in _FILES:
        # The file comes from the pinned PyPI package animal-mnist==0.4; the restricted
        # unpickler rebuilds only numpy arrays, so unpickling cannot run any other code.
        with gzip.open(folder / name, "rb") as f:
            arrays.append(_ArrayUnpickler(f).load())
    images, labels = arrays
    expected = np.repeat(np.arange(len(ANIMALS)), PER_CLASS)
    if images.shape != (len(expected), 28, 28) or images.dtype != np.uint8 or not np.array_equal(labels, expected):
        raise RuntimeError(f"unexpected animal-mnist data (shape {images.shape}); this code expects {_PIP_HINT}")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def _split_range(split: str) -> tuple[int, int]:
    """(offset, count) of a split's silhouettes inside each class block."""
    one_of(split, "split", Split)
    return (0, TRAIN_PER_CLASS) if split == "train" else (TRAIN_PER_CLASS, TEST_PER_CLASS)


def load_silhouettes(*, classes: Sequence[str] | str | None = None, split: Split = "train"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the raw animal-mnist silhouettes of some classes and one split.

    Args:
        classes: animal names from ``ANIMALS`` (default: all ten).
        split: ``"train"`` (first 900 of each class) or ``"test"`` (last 100).

    Returns:
        images: (N, 28, 28) uint8 grey values; labels: (N,) int64 indices into ``ANIMALS``.
    """
    offset, count = _split_range(split)
    animals = _check_names("classes", classes, ANIMALS)
    images, labels = _raw()
    index = torch.cat([torch.arange(count) + ANIMALS.index(a) * PER_CLASS + offset for a in animals])
    return images[index], labels[index]


@functools.lru_cache(maxsize=4)
def silhouette_indices(split: Split = "train", shapes: Shapes = "all") -> torch.Tensor:
    """Which of animal-mnist's 10 000 silhouettes a split paints: (10, K) int64, row i for ``ANIMALS[i]``.

    ``shapes="all"`` gives every silhouette of the split (K = 900 or 100); ``"clear"`` the curated
    subset of the second half (K = 200 or 20), whose animal a classifier names ≥ 99 % correctly.
    """
    offset, count = _split_range(split)
    one_of(shapes, "shapes", Shapes)
    if shapes == "all":
        return torch.arange(len(ANIMALS))[:, None] * PER_CLASS + offset + torch.arange(count)
    chosen = torch.tensor(json.loads(CLEAR_FILE.read_text())[split])
    rows = chosen.view(len(ANIMALS), -1)
    if not torch.equal(rows // PER_CLASS, torch.arange(len(ANIMALS))[:, None].expand_as(rows)):
        raise RuntimeError(f"{CLEAR_FILE} is damaged: each animal must have the same number of silhouettes")
    return rows


# ----------------------------------------------------------------------------- pre-rendered banks


@functools.lru_cache(maxsize=1)
def _masks() -> torch.Tensor:
    """Silhouette masks (10000, 28, 28) bool: grey > 40, with enclosed holes (dark patches) filled."""
    body = _raw()[0] > _MASK_THRESHOLD
    outside = torch.zeros_like(body)
    outside[:, [0, -1], :] = outside[:, :, [0, -1]] = True
    outside &= ~body
    while True:  # flood the background in from the border, 4-connected
        grown = outside.clone()
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= ~body
        if torch.equal(grown, outside):
            return ~outside
        outside = grown


@functools.lru_cache(maxsize=8)
def _sprite_bank(side: int, kind: Literal["mask", "grey"] = "mask") -> torch.Tensor:
    """Silhouettes cropped to their mask's bounding square, resized to side×side: (10000, side, side) uint8.

    ``kind="mask"`` gives the alpha of each animal; ``"grey"`` its grey values (the inner detail) in the
    same square, zero outside the mask.
    """
    mask = _masks()
    ar = torch.arange(28)
    rows, cols = mask.any(2), mask.any(1)
    y0, y1 = torch.where(rows, ar, 28).amin(1), torch.where(rows, ar, -1).amax(1) + 1
    x0, x1 = torch.where(cols, ar, 28).amin(1), torch.where(cols, ar, -1).amax(1) + 1
    scale = torch.maximum(y1 - y0, x1 - x0).clamp(min=1) / 28
    theta = torch.zeros(len(mask), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale  # output [-1, 1] -> the bounding square, centred on the box
    theta[:, 0, 2], theta[:, 1, 2] = (x0 + x1) / 28 - 1, (y0 + y1) / 28 - 1
    k = max(1, math.ceil(28 / side))  # supersample, then average k×k: at least one sample per source pixel
    out = []
    for chunk in torch.arange(len(mask)).split(2000):
        grid = F.affine_grid(theta[chunk], [len(chunk), 1, k * side, k * side], align_corners=False)
        source = mask[chunk].float() if kind == "mask" else _raw()[0][chunk].float() / 255 * mask[chunk]
        alpha = F.grid_sample(source[:, None], grid, align_corners=False)
        out.append((F.avg_pool2d(alpha, k)[:, 0] * 255).round().to(torch.uint8))
    return torch.cat(out)


@functools.lru_cache(maxsize=4)
def _frame_bank(resolution: int, kind: str) -> torch.Tensor:
    """Whole 28×28 frames resized to R×R: grey values or masks, (10000, R, R) uint8."""
    x = _raw()[0].float() if kind == "grey" else _masks().float() * 255
    x = F.interpolate(x[:, None], size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- plain silhouettes


def make_silhouette_batch(
    n: int, *, classes: Sequence[str] | str | None = None, resolution: Resolution = 32, split: Split = "train",
    kind: Literal["grey", "mask"] = "grey", generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` plain silhouettes (whole 28×28 frame resized to R), classes drawn uniformly.

    Args:
        n: batch size (>= 1). classes, resolution, split, generator, device: as in ``make_scenes``.
        kind: ``"grey"`` keeps the package's grey values; ``"mask"`` is the filled binary silhouette.

    Returns:
        images: (n, 1, R, R) float32 in [-1, 1] (background −1); labels: (n,) int64 indices into ``ANIMALS``.
    """
    n = int_in_range(n, "n", 1)
    resolution = one_of(resolution, "resolution", Resolution)
    one_of(kind, "kind", ("grey", "mask"))
    offset, count = _split_range(split)
    animals = torch.tensor([ANIMALS.index(a) for a in _check_names("classes", classes, ANIMALS)])
    labels = animals[randint(0, len(animals), (n,), generator=generator)]
    index = labels * PER_CLASS + offset + randint(0, count, (n,), generator=generator)
    device = torch.device("cpu") if device is None else torch.device(device)
    images = _frame_bank(resolution, kind)[index].to(device).float()[:, None] / 127.5 - 1
    return images, labels.to(device)


# ----------------------------------------------------------------------------- helpers (shared with sdlab.data)


def _check_names(arg: str, given: Sequence[str] | str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a name subset; returns it deduplicated in the order of ``allowed``."""
    if given is None:
        return allowed
    given = (given,) if isinstance(given, str) else tuple(given)
    unknown = [g for g in given if g not in allowed]
    if unknown or not given:
        raise ValueError(f"{arg} must be a non-empty selection of {allowed}; got {given!r}")
    return tuple(a for a in allowed if a in given)
