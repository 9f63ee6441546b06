"""Chapter 1's exercises: the cumulative product ᾱ and the one-jump forward process."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.checks.core import (
    Answer,
    Case,
    Exercise,
    dtype_name,
    generator,
    notebook_alphas_cumprod,
    randint,
    random_betas,
    where,
)
from sdlab.schedules import make_betas

__all__ = ["check_alphas_cumprod", "check_add_noise"]


# ----------------------------------------------------------------------------- ᾱ from the betas

def _alphas_cumprod_cases(seed: int) -> list[Case]:
    g = generator(seed, 11)
    first = make_betas("linear", num_train_timesteps=50, beta_start=0.01, beta_end=0.2)
    if seed:
        first, _ = random_betas(g, torch.float64)
    cases = [Case((first,), f"for {len(first)} betas (float64)", ("betas",))]
    for dtype in (torch.float32, torch.float64):
        betas, name = random_betas(g, dtype)
        cases.append(Case((betas,), f"for {name} ({dtype_name(dtype)})", ("betas",)))
    return cases


def _alphas_cumprod_answer(case: Case) -> Answer:
    betas = case.args[0].double()
    right = torch.cumprod(1 - betas, 0)
    slips = [
        ("you multiplied the betas themselves; ᾱ multiplies α_t = 1 − β_t", torch.cumprod(betas, 0)),
        ("you added instead of multiplying (cumsum instead of cumprod)", torch.cumsum(1 - betas, 0)),
        ("you returned α_t = 1 − β_t; ᾱ_t is their running product", 1 - betas),
        ("your product starts one step late: ᾱ_0 should already include α_0",
         torch.cat([torch.ones(1, dtype=right.dtype), right[:-1]])),
        ("you returned 1 − ᾱ_t (the noise variance) instead of ᾱ_t", 1 - right),
        ("you returned ᾱ of the notebook's `schedule`, not of the `betas` you were given",
         notebook_alphas_cumprod("linear")),
    ]
    return Answer(right, slips, what="ᾱ", advice="ᾱ_t should start just below 1 and fall towards 0")


ALPHAS_CUMPROD = Exercise("alphas_cumprod", _alphas_cumprod_cases, _alphas_cumprod_answer)


def check_alphas_cumprod(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(betas) -> alphas_cumprod``: ᾱ_t = ∏_{s≤t} (1 − β_s), shape (T,).

    Graded on several schedules (lengths, shapes, float32 and float64); ``seed`` draws others.
    """
    return ALPHAS_CUMPROD.check(fn, seed=seed)


# ----------------------------------------------------------------------------- x_t in one jump

_ADD_NOISE_NAMES = ("x0", "noise", "t", "alphas_cumprod")


def _add_noise_cases(seed: int) -> list[Case]:
    g = generator(seed, 12)
    cases = []
    ab = notebook_alphas_cumprod("linear")
    shape = (2, 3, 8, 8)
    for step in (0, 150, 600, 999) if seed == 0 else (randint(g, 0, 999),):
        x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        cases.append(Case((x0, noise, step, ab), f"at t={step} (linear schedule, float64)", _ADD_NOISE_NAMES))
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (3, torch.float64)):
        betas, name = random_betas(g, dtype)
        ab = torch.cumprod(1 - betas.double(), 0).to(dtype)
        step = randint(g, 0, len(ab) - 1)
        size = (batch, randint(g, 1, 3), randint(g, 2, 6), randint(g, 2, 6))
        x0 = (torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
        noise = torch.randn(size, generator=g, dtype=torch.float64).to(dtype)
        cases.append(Case((x0, noise, step, ab), where(f"at t={step} of {name}", f"batch {batch}",
                                                       dtype_name(dtype)), _ADD_NOISE_NAMES))
    # On pure noise the result's variance must be 1 − ᾱ_t (an answer that rescales the noise fails).
    big = torch.randn(4096, generator=g, dtype=torch.float64)
    cases.append(Case((torch.zeros_like(big), big, 300, notebook_alphas_cumprod("linear")),
                      "at t=300 on x0 = 0", _ADD_NOISE_NAMES))
    return cases


def _add_noise_answer(case: Case) -> Answer:
    x0, noise, t, ab = (a.double() if isinstance(a, torch.Tensor) else a for a in case.args)
    a = ab[t]

    def mix(signal: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return signal * x0 + scale * noise

    slips = [
        ("you forgot the square roots: the coefficients are √ᾱ_t and √(1 − ᾱ_t)", mix(a, 1 - a)),
        ("the square root is missing on the noise coefficient √(1 − ᾱ_t)", mix(a.sqrt(), 1 - a)),
        ("the square root is missing on the signal coefficient √ᾱ_t", mix(a, (1 - a).sqrt())),
        ("the coefficients are swapped: √ᾱ_t multiplies x0, √(1 − ᾱ_t) the noise", mix((1 - a).sqrt(), a.sqrt())),
        ("the signal must shrink too: x0 is scaled by √ᾱ_t", mix(torch.ones_like(a), (1 - a).sqrt())),
    ]
    for shift in (-1, 1):
        if 0 <= t + shift < len(ab):
            b = ab[t + shift]
            slips.append((f"off by one: you used ᾱ at t{shift:+d}; index alphas_cumprod[t]",
                          mix(b.sqrt(), (1 - b).sqrt())))
    for name in ("linear", "cosine"):
        own = notebook_alphas_cumprod(name)
        if len(own) != len(ab) or not torch.allclose(own, ab):
            b = own[t]
            slips.append(("you used the notebook's `schedule` instead of the `alphas_cumprod` you were given",
                          mix(b.sqrt(), (1 - b).sqrt())))
    return Answer(mix(a.sqrt(), (1 - a).sqrt()), slips, what="x_t",
                  advice="recheck x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε")


ADD_NOISE = Exercise("add_noise", _add_noise_cases, _add_noise_answer)


def check_add_noise(fn: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor], *,
                    seed: int = 0) -> bool:
    """Check ``fn(x0, noise, t, alphas_cumprod) -> x_t`` = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise.

    Graded on several schedules, steps, batch sizes and both float dtypes; ``seed`` draws others.
    """
    return ADD_NOISE.check(fn, seed=seed)


EXERCISES = {"check_alphas_cumprod": ALPHAS_CUMPROD, "check_add_noise": ADD_NOISE}
