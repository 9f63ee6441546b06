"""One rule for random numbers, diffusers' rule: draw on the generator's device, then move.

Every random draw in sdlab goes through this module, so a seeded notebook gives
the same pictures every time, and a student's CPU ``torch.Generator`` works for
images on any device (the numbers are made on the CPU and copied to the GPU, as
diffusers' ``randn_tensor`` does). A function that is given a generator never
touches PyTorch's global random state; without one it uses the global state on
the target device, as ``torch.randn`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["Generators", "randn_tensor", "randint", "rand", "randperm", "generator_device", "seed_global",
           "seeded_global_rng"]

# One generator, or one per batch element (diffusers' pipelines accept both).
Generators = torch.Generator | Sequence[torch.Generator] | None


def generator_device(generator: Generators, default: torch.device | str | None = None) -> torch.device:
    """The device a draw with ``generator`` happens on: the generator's, else ``default`` (else the CPU)."""
    if isinstance(generator, torch.Generator):
        return generator.device
    if generator is not None and len(generator) > 0:
        return generator[0].device
    return torch.device("cpu") if default is None else torch.device(default)


def _check_generator(generator: Generators, shape: tuple[int, ...]) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, Sequence) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them, or None; got {type(generator).__name__}")
    if not shape or len(generator) != shape[0]:
        raise ValueError(f"a list of generators needs one per batch element: got {len(generator)} for shape {shape}")


def _devices(generator: torch.Generator | None, device) -> tuple[torch.device, torch.device]:
    """(where to draw, where the result goes): the generator's device, else the target; the target defaults to CPU."""
    target = torch.device("cpu") if device is None else torch.device(device)
    return (generator.device if generator is not None else target), target


def _draw(fn, shape: tuple[int, ...], generator: Generators, device, **kwargs) -> torch.Tensor:
    """Call ``fn(shape, generator=, device=)`` on the generator's device and move the result to ``device``."""
    shape = tuple(int(n) for n in shape)
    _check_generator(generator, shape)
    if isinstance(generator, Sequence):  # one generator per batch element
        target = _devices(None, device)[1]
        parts = [fn((1, *shape[1:]), generator=g, device=g.device, **kwargs).to(target) for g in generator]
        return torch.cat(parts)
    draw_on, target = _devices(generator, device)
    return fn(shape, generator=generator, device=draw_on, **kwargs).to(target)


def randn_tensor(
    shape: Sequence[int],
    *,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise z ~ N(0, I) of ``shape`` on ``device`` (default: the CPU).

    Drawn on the generator's device and moved, so a CPU generator gives the same numbers for
    images on the CPU or a GPU. A list of generators draws one batch element with each.
    """
    return _draw(torch.randn, tuple(shape), generator, device, dtype=dtype)


def rand(
    shape: Sequence[int],
    *,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape``, drawn by the same rule as :func:`randn_tensor`."""
    return _draw(torch.rand, tuple(shape), generator, device, dtype=dtype)


def randint(
    low: int,
    high: int,
    shape: Sequence[int],
    *,
    generator: Generators = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Integers uniform in [low, high) of ``shape`` (int64), drawn by the same rule as :func:`randn_tensor`."""
    if int(high) <= int(low):
        raise ValueError(f"randint needs low < high; got low={low}, high={high}")

    def draw(size, *, generator, device):
        return torch.randint(int(low), int(high), size, generator=generator, device=device)

    return _draw(draw, tuple(shape), generator, device)


def randperm(n: int, *, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """A random permutation of 0..n−1 (int64), drawn by the same rule as :func:`randn_tensor`."""
    if isinstance(generator, Sequence):
        raise TypeError("randperm takes one generator, not a list")
    draw_on, target = _devices(generator, device)
    return torch.randperm(int(n), generator=generator, device=draw_on).to(target)


def seed_global(seed: int, *, device: torch.device | str | None = None) -> None:
    """Seed PyTorch's global random state on the CPU, and on ``device`` too when it is a CUDA device."""
    torch.random.default_generator.manual_seed(int(seed))
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.manual_seed(int(seed))


@contextlib.contextmanager
def seeded_global_rng(seed: int, *, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with PyTorch's global random state seeded by ``seed``, and restore it afterwards.

    For the draws that cannot take a generator (dropout layers, modules' initial weights): inside
    the block they are repeatable, and the caller's global random state is left as it was.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        seed_global(seed, device=device)
        yield
