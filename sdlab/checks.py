"""Automatic checks for the exercises: run a student's function on fixed inputs.

A check prints one line on success and raises :class:`ExerciseError` (an
AssertionError, so autograders such as nbgrader count it as a failed test)
with a message that says what is wrong and, where a common slip explains the
numbers, which slip it probably is. The checks never print a solution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.schedules import NoiseSchedule

__all__ = ["ExerciseError", "check_alphas_cumprod", "check_add_noise"]


class ExerciseError(AssertionError):
    """The student's answer is not right yet; the message says why."""


def _call(fn: Callable, *args) -> torch.Tensor:
    """Run the student's function; turn its crash or a non-tensor result into a clear message."""
    if not callable(fn):
        raise ExerciseError(f"pass your function itself (not its result); got a {type(fn).__name__}")
    try:
        out = fn(*args)
    except Exception as error:  # the student's own bug: report it, do not crash the check
        raise ExerciseError(f"your function raised {type(error).__name__}: {error}") from error
    if out is None:
        raise ExerciseError("your function returned None: did you forget `return`?")
    try:
        return torch.as_tensor(out).double()
    except Exception as error:
        raise ExerciseError(f"your function should return a tensor; got {type(out).__name__}") from error


def _same(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=0))


def _passed(what: str) -> bool:
    print(f"✅ {what}: all checks passed.")
    return True


def check_alphas_cumprod(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(betas) -> alphas_cumprod``: ᾱ_t = ∏_{s≤t} (1 − β_s), shape (T,)."""
    betas = NoiseSchedule("linear", num_train_timesteps=50, beta_start=0.01, beta_end=0.2).betas.double()
    expected = torch.cumprod(1 - betas, dim=0)
    got = _call(fn, betas.clone())
    if got.shape != expected.shape:
        raise ExerciseError(f"for {len(betas)} betas you should return {len(betas)} values; got shape {tuple(got.shape)}")
    slips = {
        "you multiplied the betas themselves; ᾱ multiplies α_t = 1 − β_t": torch.cumprod(betas, 0),
        "you added instead of multiplying (cumsum instead of cumprod)": torch.cumsum(1 - betas, 0),
        "you returned α_t = 1 − β_t; ᾱ_t is their running product": 1 - betas,
        "your product starts one step late: ᾱ_0 should already include α_0": torch.cat(
            [torch.ones(1, dtype=torch.float64), expected[:-1]]
        ),
        "you returned 1 − ᾱ_t (the noise variance) instead of ᾱ_t": 1 - expected,
    }
    if not _same(got, expected, 1e-5):
        for hint, wrong in slips.items():
            if _same(got, wrong, 1e-5):
                raise ExerciseError(f"not yet: {hint}.")
        worst = int((got - expected).abs().argmax())
        raise ExerciseError(
            f"ᾱ is wrong at t={worst}: expected {expected[worst]:.6f}, got {got[worst]:.6f}. "
            "ᾱ_t should start just below 1 and fall towards 0."
        )
    return _passed("alphas_cumprod")


def check_add_noise(fn: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(x0, noise, t, alphas_cumprod) -> x_t`` = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise."""
    schedule = NoiseSchedule("linear")
    ab = schedule.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1234)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    for t in (0, 150, 600, 999):
        a = ab[t]
        expected = a.sqrt() * x0 + (1 - a).sqrt() * noise
        got = _call(fn, x0.clone(), noise.clone(), t, ab.clone())
        if got.shape != expected.shape:
            raise ExerciseError(f"x_t must have the shape of x0 {tuple(x0.shape)}; got {tuple(got.shape)}")
        if _same(got, expected, 1e-5):
            continue
        _diagnose_add_noise(got, x0, noise, ab, t)
    # The noise part must have variance 1 − ᾱ_t: check it on pure noise at a middle step.
    big = torch.randn(20000, generator=g, dtype=torch.float64)
    var = _call(fn, torch.zeros_like(big), big, 300, ab.clone()).var().item()
    if abs(var - (1 - ab[300]).item()) > 0.05:
        raise ExerciseError(f"on x0 = 0 the result should have variance 1 − ᾱ_300 = {1 - ab[300]:.3f}; got {var:.3f}")
    return _passed("add_noise")


def _diagnose_add_noise(got, x0, noise, ab, t) -> None:
    """Name the slip that explains a wrong x_t at step t, or describe the error."""
    a = ab[t]
    slips = {
        "you forgot the square roots: the coefficients are √ᾱ_t and √(1 − ᾱ_t)": a * x0 + (1 - a) * noise,
        "the square root is missing on the noise coefficient √(1 − ᾱ_t)": a.sqrt() * x0 + (1 - a) * noise,
        "the square root is missing on the signal coefficient √ᾱ_t": a * x0 + (1 - a).sqrt() * noise,
        "the coefficients are swapped: √ᾱ_t multiplies x0, √(1 − ᾱ_t) the noise": (1 - a).sqrt() * x0
        + a.sqrt() * noise,
        "the signal must shrink too: x0 is scaled by √ᾱ_t": x0 + (1 - a).sqrt() * noise,
    }
    for shift in (-1, 1):
        if 0 <= t + shift < len(ab):
            b = ab[t + shift]
            slips[f"off by one: you used ᾱ at t{shift:+d}; index alphas_cumprod[t]"] = b.sqrt() * x0 + (1 - b).sqrt() * noise
    for hint, wrong in slips.items():
        if _same(got, wrong, 1e-5):
            raise ExerciseError(f"at t={t}: {hint}.")
    err = (got - (a.sqrt() * x0 + (1 - a).sqrt() * noise)).abs().max().item()
    raise ExerciseError(f"at t={t} x_t is off by up to {err:.4f}; recheck x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε")
