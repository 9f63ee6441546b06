"""Images in and out of the model's range: PIL / numpy pixels <-> float tensors in [-1, 1].

Diffusion models (DDPM, Stable Diffusion) see pixels scaled to [-1, 1]:
x = 2 · (v / 255) − 1 for 8-bit values v, and back v = round((x + 1) · 127.5).
Tensors are (C, H, W) with C = 3 (RGB) or C = 1 (grayscale).

Transparency is composited over a white background everywhere (PIL modes
RGBA, LA, PA and P with transparency, and numpy (H, W, 4) arrays), so a
transparent pixel looks the way an image viewer shows it on a white page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from sdlab.validation import positive_int

__all__ = ["load_cat", "to_tensor", "to_pil", "to_numpy_image", "tile"]

# PIL modes to_tensor accepts, and what each is converted to before scaling.
_PIL_MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "L", "LA": "LA", "1": "L", "CMYK": "RGB", "PA": "RGBA"}
_FLOAT_TOLERANCE = 1e-6  # float arrays may overshoot [0, 1] by rounding error only


def load_cat(*, size: int | None = 64) -> torch.Tensor:
    """Return the scikit-image cat photo "chelsea" (CC0) as a (3, size, size) tensor in [-1, 1].

    The 451 × 300 photo is centre-cropped to a 300 × 300 square, then resized
    with PIL's antialiased Lanczos filter. It ships inside the scikit-image
    wheel, so no network is needed.

    Args:
        size: side of the returned square in pixels; None keeps the 300 × 300 crop.

    Returns:
        x0: (3, size, size) float32 in [-1, 1].
    """
    size = positive_int(size, "size", allow_none=True)
    from skimage import data  # imported here: scikit-image is slow to import

    photo = data.chelsea()  # (300, 451, 3) uint8
    height, width = photo.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = Image.fromarray(photo[top : top + side, left : left + side])
    if size is not None and size != side:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return to_tensor(image)


def to_tensor(image: Any, *, name: str = "image") -> torch.Tensor:
    """Convert a PIL image or a numpy array to a float32 (C, H, W) tensor in [-1, 1].

    Accepted inputs (alpha is composited over white; grayscale gives C = 1):

    - PIL modes RGB, RGBA, L, LA, P, PA, 1 (bilevel) and CMYK (converted to RGB).
    - numpy uint8 arrays (H, W), (H, W, 1), (H, W, 3), (H, W, 4), scaled as x = v / 127.5 − 1.
    - numpy float arrays of the same shapes with values in [0, 1], scaled as x = 2v − 1.
    - numpy bool arrays (H, W): True is white (+1), False is black (−1), like PIL mode "1".

    Args:
        image: the picture to convert.
        name: the argument name used in error messages.

    Returns:
        (C, H, W) float32 tensor in [-1, 1] on the CPU, C in {1, 3}.
    """
    if isinstance(image, torch.Tensor):
        raise TypeError(
            f"{name} is already a torch.Tensor (shape {tuple(image.shape)}); to_tensor converts PIL images and "
            "numpy arrays. A (C, H, W) tensor in [-1, 1] can be used as it is; one in [0, 1] becomes x * 2 - 1"
        )
    if isinstance(image, Image.Image):
        return _from_array(_pil_to_array(image, name), name, channels=(1, 2, 3, 4))
    if isinstance(image, np.ndarray):
        return _from_array(image, name)
    raise TypeError(f"{name} must be a PIL.Image.Image or a numpy array; got {type(image).__name__}")


def _pil_to_array(image: Image.Image, name: str) -> np.ndarray:
    """Return the pixels of a PIL image as a uint8 array (H, W) or (H, W, C), C in {2, 3, 4}."""
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette is not None and image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in _PIL_MODES:
        image = image.convert(_PIL_MODES[mode])
    else:
        allowed = ", ".join(["P", *_PIL_MODES])
        raise ValueError(
            f"{name} has PIL mode {mode!r}, which to_tensor does not convert (allowed: {allowed}). "
            "For 16-bit or float images, scale them yourself to a float numpy array in [0, 1]"
        )
    return np.asarray(image)


def _from_array(array: np.ndarray, name: str, *, channels: tuple[int, ...] = (1, 3, 4)) -> torch.Tensor:
    """Validate a numpy image (H, W[, C]) and scale it to a (C, H, W) float32 tensor in [-1, 1].

    ``channels`` lists the C allowed in (H, W, C); PIL's "LA" mode adds C = 2 (gray + alpha).
    """
    if array.ndim == 3 and array.shape[2] in channels:
        pixels = array
    elif array.ndim == 2:
        pixels = array[:, :, None]
    else:
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {array.shape}"
            + (" (a batch? convert the images one at a time)" if array.ndim == 4 else "")
        )
    if pixels.size == 0:
        raise ValueError(f"{name} has no pixels; got shape {array.shape}")
    values = _unit_values(pixels, name)  # float64 in [0, 1]
    if values.shape[2] in (2, 4):  # composite over white: v = a·v + (1 − a)·1
        alpha = values[:, :, -1:]
        values = values[:, :, :-1] * alpha + (1.0 - alpha)
    x = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)) * 2.0 - 1.0)
    return x.float()


def _unit_values(pixels: np.ndarray, name: str) -> np.ndarray:
    """Return pixels as float64 in [0, 1], rejecting dtypes and ranges that have no clear meaning."""
    dtype = pixels.dtype
    if dtype == np.uint8:
        return pixels.astype(np.float64) / 255.0
    if dtype == np.bool_:
        if pixels.shape[2] != 1:
            raise ValueError(f"{name}: bool arrays must have shape (H, W) or (H, W, 1); got {pixels.shape}")
        return pixels.astype(np.float64)
    if np.issubdtype(dtype, np.floating):
        values = pixels.astype(np.float64)
        if np.isnan(values).any():
            raise ValueError(f"{name} contains NaN values")
        low, high = float(values.min()), float(values.max())
        if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
            raise ValueError(
                f"{name} is a float array with values in [{low:.4g}, {high:.4g}]; float images must lie in [0, 1] "
                "(for an array in [-1, 1] use (a + 1) / 2, for 0..255 floats use a / 255)"
            )
        return values.clip(0.0, 1.0)
    raise TypeError(
        f"{name} has dtype {dtype}; allowed: uint8 (0..255), float in [0, 1], or bool. "
        "Convert integers with a.astype(np.uint8) if they lie in 0..255, else scale them to floats in [0, 1]"
    )


def _check_image_tensor(x: Any, name: str) -> torch.Tensor:
    """Validate a (C, H, W) or (1, C, H, W) float tensor with C in {1, 3}; return (C, H, W) float32 on the CPU."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (C, H, W); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [-1, 1]; got dtype {x.dtype}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    elif x.dim() == 4:
        raise ValueError(f"{name} holds a batch of {x.shape[0]} images; pass one image, e.g. {name}[0]")
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (C, H, W) or (1, C, H, W) with C = 1 or 3; got shape {tuple(x.shape)}"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} has no pixels; got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN values")
    return x.clamp(-1.0, 1.0)


def to_pil(x: torch.Tensor, *, name: str = "x") -> Image.Image:
    """Convert a tensor in [-1, 1] to a PIL image: v = round((x + 1) · 127.5), clamped to 0..255.

    Args:
        x: (C, H, W) or (1, C, H, W), C = 1 or 3, any float dtype and device; values are clamped to [-1, 1].
        name: the argument name used in error messages.

    Returns:
        A PIL image of mode "L" (C = 1) or "RGB" (C = 3).
    """
    x = _check_image_tensor(x, name)
    pixels = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)  # uint8 -> "L" or "RGB"


def to_numpy_image(x: Any, *, name: str = "x") -> np.ndarray:
    """Return an image as a float32 numpy array in [0, 1] that matplotlib's ``imshow`` shows as is.

    Args:
        x: a tensor (C, H, W) or (1, C, H, W) in [-1, 1] (clamped; C = 1 or 3; any dtype
            and device), or anything :func:`to_tensor` accepts (PIL image, numpy array).
        name: the argument name used in error messages.

    Returns:
        (H, W, 3) for colour, (H, W) for grayscale; values (x + 1) / 2.
    """
    x = _check_image_tensor(x, name) if isinstance(x, torch.Tensor) else to_tensor(x, name=name)
    image = ((x + 1.0) / 2.0).permute(1, 2, 0).numpy()
    return image[:, :, 0] if image.shape[2] == 1 else image


def tile(images: torch.Tensor, *, ncols: int = 4, fill: float = -1.0) -> torch.Tensor:
    """Lay a batch out as one image grid, row by row: (B, C, H, W) → (C, rows · H, ncols · W).

    Args:
        images: (B, C, H, W), any values (images in [-1, 1] as the course keeps them).
        ncols: images per row; the last row is padded with ``fill`` (default −1: black).
        fill: the value of the padding.
    Returns:
        (C, ⌈B / ncols⌉ · H, ncols · W), on the images' device and in their dtype.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (B, C, H, W) tensor; got {shape}")
    ncols = positive_int(ncols, "ncols")
    b, c, h, w = images.shape
    rows = -(-b // ncols)
    padded = torch.cat([images, images.new_full((rows * ncols - b, c, h, w), float(fill))])
    return padded.reshape(rows, ncols, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, rows * h, ncols * w)
