"""Progress bars for long work: live in Jupyter and in a terminal, absent from the website.

A bar is for someone watching the work happen. The website shows what a cell left behind
when it finished, and a bar there would be frozen at ``0%| | 0/1000``. ``python3 run.py book``
therefore sets ``SDLAB_NO_PROGRESS=1`` for the kernels that build the book, and every bar in
the course is made here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["NO_PROGRESS_ENV", "bar"]

NO_PROGRESS_ENV = "SDLAB_NO_PROGRESS"


def bar(iterable: Iterable | None = None, *, disable: bool = False, **options: Any) -> tqdm:
    """``tqdm.auto.tqdm(iterable, **options)``: a widget in Jupyter, text in a terminal; none in a book build."""
    return tqdm(iterable, disable=disable or os.environ.get(NO_PROGRESS_ENV) == "1", **options)
