"""Quick mode: the one switch that shrinks every notebook for tests and CI.

Set the environment variable ``SDLAB_QUICK=1`` (or ``true``/``yes``) and every
chapter runs in seconds on a 2-core CPU: fewer steps, smaller images, shorter
training. Unset (the default), the chapters run the full lesson.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["QUICK_ENV", "is_quick", "quick_or_full"]

QUICK_ENV = "SDLAB_QUICK"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

T = TypeVar("T")


def is_quick() -> bool:
    """Return True when ``SDLAB_QUICK`` asks for quick mode (read at every call)."""
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{QUICK_ENV}={value!r} is not understood; use 1/true/yes or 0/false/no")


def quick_or_full(*, quick: T, full: T) -> T:
    """Pick a setting by mode, e.g. ``steps = quick_or_full(quick=20, full=1000)``."""
    return quick if is_quick() else full
