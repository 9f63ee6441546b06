"""Argument checks shared by the whole package: one place that says what counts as an int, a number or a choice.

Rules, the same everywhere:

- ``bool`` (and ``numpy.bool_``) is never a number, although Python makes ``True`` an int.
- Integers are ``numbers.Integral`` (``int``, ``numpy.int64``, ``numpy.int32``, ...); real numbers are
  ``numbers.Real`` (integers too, plus ``float``, ``numpy.float32``, ``numpy.float64``, ...).
- 0-dim torch tensors count only where a caller asks for them (``tensors=True``).
- The checks return plain Python ``int`` / ``float``, so a checked value prints, hashes and goes to JSON as usual.

Messages name the argument, what was given and what is allowed, e.g.
``steps must be a positive int; got 0`` or ``prediction_type must be one of ('epsilon', 'v_prediction'); got 'x'``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, TypeVar, get_args, get_origin

import numpy as np
import torch

__all__ = [
    "is_integer",
    "is_real_number",
    "as_int",
    "positive_int",
    "int_in_range",
    "positive_number",
    "number_in_range",
    "one_of",
]

T = TypeVar("T")


def is_integer(value: Any, *, tensors: bool = False) -> bool:
    """True for ints and numpy integer scalars (not bools); with ``tensors``, also 0-dim integer tensors."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return tensors and _is_scalar_tensor(value) and not value.is_floating_point() and not value.is_complex()


def is_real_number(value: Any, *, tensors: bool = False) -> bool:
    """True for ints, floats and numpy integer/float scalars (not bools); with ``tensors``, 0-dim int/float tensors.

    NaN and infinities are real numbers here; the range checks below reject them.
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return tensors and _is_scalar_tensor(value) and not value.is_complex()


def _is_scalar_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool


def as_int(value: Any, name: str, *, tensors: bool = False) -> int:
    """Return ``value`` as a plain int, or raise ``TypeError: {name} must be an int; got {type}``."""
    if not is_integer(value, tensors=tensors):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    return int(value)


def positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """Return ``value`` (>= 1) as a plain int; None passes through when ``allow_none``.

    Raises:
        ValueError: ``{name} must be a positive int[ or None]; got {value!r}``.
    """
    if value is None and allow_none:
        return None
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}; got {value!r}")
    return int(value)


def int_in_range(value: Any, name: str, low: int, high: int | None = None) -> int:
    """Return ``value`` as a plain int after checking low <= value (<= high when given, both inclusive).

    Raises:
        ValueError: ``{name} must be an int >= {low}; got {value!r}``, or ``... an int in [{low}, {high}]; ...``.
    """
    if not is_integer(value) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {allowed}; got {value!r}")
    return int(value)


def positive_number(value: Any, name: str) -> float:
    """Return ``value`` (finite, > 0) as a plain float.

    Raises:
        ValueError: ``{name} must be a positive number; got {value!r}``.
    """
    if not is_real_number(value) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return float(value)


def number_in_range(
    value: Any, name: str, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, high_open: bool = False, what: str = "a number",
) -> float:
    """Return ``value`` as a plain float after checking it is finite and lies between ``low`` and ``high``.

    A bound that is None is not checked; ``low_open`` / ``high_open`` exclude the bound itself.
    ``what`` names the kind of number in the message, e.g. ``"a number of inches"``.

    Raises:
        ValueError: ``{name} must be {what} in [{low}, {high}); got {value!r}`` (brackets follow the open
            ends; with one bound: ``{what} >= {low}``, ``{what} < {high}``, ...). NaN and ±inf always fail.
    """
    ok = is_real_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be {what}{_range_text(low, high, low_open, high_open)}; got {value!r}")
    return float(value)


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """" in (0, 10.0]", " >= 0", " < 1" or "" for the bounds given."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def one_of(value: Any, name: str, choices: Any) -> Any:
    """Return the choice equal to ``value``; ``choices`` is a tuple or a ``typing.Literal``.

    A value matches a choice of its own kind only: ``np.int64(32)`` matches ``32`` (and the plain 32 is
    returned), but ``32.0`` and ``True`` do not; a ``str`` subclass matches the equal ``str``.

    Raises:
        ValueError: ``{name} must be one of {choices}; got {value!r}``.
    """
    allowed = get_args(choices) if get_origin(choices) is Literal else tuple(choices)
    kind = _kind(value)
    for choice in allowed:
        if _kind(choice) == kind and value == choice:
            return choice
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def _kind(value: Any) -> type:
    """The type one_of compares by: bool, int, float or str for those numbers and strings, else the exact type."""
    for kind in (bool, str):
        if isinstance(value, kind):
            return kind
    if isinstance(value, np.bool_):
        return bool
    if is_integer(value):
        return int
    if is_real_number(value):
        return float
    return type(value)
