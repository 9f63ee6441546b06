"""Chapter 3's exercises: the clean-image estimate x̂0 and one deterministic DDIM step."""

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

__all__ = ["check_pred_original_sample", "check_ddim_step"]


def _random_schedule(g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    betas, name = random_betas(g, dtype)
    return torch.cumprod(1 - betas.double(), 0).to(dtype), name


def _pair(g: torch.Generator, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and ε̂ of one random shape with ``batch`` images."""
    size = (batch, randint(g, 1, 3), randint(g, 2, 8), randint(g, 2, 8))
    return (torch.randn(size, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(size, generator=g, dtype=torch.float64).to(dtype))


# ----------------------------------------------------------------------------- x̂0 from ε̂

_X0_NAMES = ("x_t", "eps", "alpha_prod_t")


def _x0_cases(seed: int) -> list[Case]:
    g = generator(seed, 31)
    ab = notebook_alphas_cumprod("cosine")
    x_t, eps = _pair(g, 2, torch.float64) if seed else (torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64),
                                                        torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64))
    cases = [Case((x_t, eps, ab[t]), f"at ᾱ_t = {ab[t]:.4f} (t = {t}, float64)", _X0_NAMES) for t in (100, 500, 900)]
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (4, torch.float64)):
        ab, name = _random_schedule(g, dtype)
        t = randint(g, 0, len(ab) - 1)
        x_t, eps = _pair(g, batch, dtype)
        cases.append(Case((x_t, eps, ab[t]), where(f"at ᾱ_t = {float(ab[t]):.4f} (t = {t} of {name})",
                                                   f"batch {batch}", dtype_name(dtype)), _X0_NAMES))
    return cases


def _x0_answer(case: Case) -> Answer:
    x_t, eps, a = (arg.double() for arg in case.args)
    slips = [
        ("you returned x_t − ε̂: removing all the predicted noise at once also needs the scales √(1 − ᾱ_t) "
         "and 1 / √ᾱ_t", x_t - eps),
        ("sign error: the noise is subtracted, x_t − √(1 − ᾱ_t) · ε̂", (x_t + (1 - a).sqrt() * eps) / a.sqrt()),
        ("you forgot to divide by √ᾱ_t: x_t holds only √ᾱ_t times the clean image", x_t - (1 - a).sqrt() * eps),
        ("you multiplied by √ᾱ_t; the forward process scaled x0 by √ᾱ_t, so undo it by dividing",
         a.sqrt() * (x_t - (1 - a).sqrt() * eps)),
        ("only ε̂'s term was divided by √ᾱ_t; put (x_t − √(1 − ᾱ_t) · ε̂) in brackets",
         x_t - (1 - a).sqrt() * eps / a.sqrt()),
        ("you forgot the square roots: the coefficients are √(1 − ᾱ_t) and √ᾱ_t", (x_t - (1 - a) * eps) / a),
        ("the square root is missing on √(1 − ᾱ_t)", (x_t - (1 - a) * eps) / a.sqrt()),
        ("the square root is missing on √ᾱ_t", (x_t - (1 - a).sqrt() * eps) / a),
        ("ᾱ_t and 1 − ᾱ_t are swapped", (x_t - a.sqrt() * eps) / (1 - a).sqrt()),
        ("do not clip x̂0 in this exercise: return the formula's value as it is",
         ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)),
    ]
    return Answer((x_t - (1 - a).sqrt() * eps) / a.sqrt(), slips, what="x̂0",
                  advice="solve x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε for x0")


PRED_ORIGINAL_SAMPLE = Exercise("pred_original_sample", _x0_cases, _x0_answer)


def check_pred_original_sample(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                               seed: int = 0) -> bool:
    """Check ``fn(x_t, eps, alpha_prod_t) -> x̂0`` = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t (Ho et al. 2020, eq. 15).

    ``alpha_prod_t`` is ᾱ_t as a 0-dim tensor of the inputs' dtype; graded on several schedules,
    shapes, batch sizes and both float dtypes.
    """
    return PRED_ORIGINAL_SAMPLE.check(fn, seed=seed)


# ----------------------------------------------------------------------------- one DDIM step

_DDIM_NAMES = ("eps", "t", "x_t", "prev_t", "alphas_cumprod")


def _ddim_cases(seed: int) -> list[Case]:
    g = generator(seed, 32)
    ab = notebook_alphas_cumprod("cosine")
    x_t, eps = (torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64),
                torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64))
    cases = [Case((eps, t, x_t, prev_t, ab), f"step t = {t} → prev_t = {prev_t} (stride 20, float64)", _DDIM_NAMES)
             for t, prev_t in ((980, 960), (500, 480), (40, 20), (20, 0), (0, -1))]
    # Other schedules and strides: an answer that hard-codes `t - 20` or reads the notebook's schedule fails.
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (3, torch.float64), (2, torch.float32)):
        ab, name = _random_schedule(g, dtype)
        stride = randint(g, 2, max(3, len(ab) // 8))
        t = randint(g, stride, len(ab) - 1)
        x_t, eps = _pair(g, batch, dtype)
        cases.append(Case((eps, t, x_t, t - stride, ab), where(f"step t = {t} → prev_t = {t - stride} of {name}",
                                                               f"batch {batch}", dtype_name(dtype)), _DDIM_NAMES))
    ab, name = _random_schedule(g, torch.float32)
    x_t, eps = _pair(g, 2, torch.float32)
    stride = randint(g, 2, 50)
    cases.append(Case((eps, stride - 1, x_t, -1, ab), f"the last step t = {stride - 1} → prev_t = -1 of {name}, "
                      "float32", _DDIM_NAMES))
    return cases


def _ddim_answer(case: Case) -> Answer:
    eps, t, x_t, prev_t, ab = (a.double() if isinstance(a, torch.Tensor) else a for a in case.args)
    one = torch.tensor(1.0, dtype=torch.float64)
    a_t, a_prev = ab[t], ab[prev_t] if prev_t >= 0 else one

    def step(a_x0: torch.Tensor, a_new: torch.Tensor, sign: float = 1.0, clip: bool = False) -> torch.Tensor:
        x0 = (x_t - (1 - a_x0).sqrt() * eps) / a_x0.sqrt()
        x0 = x0.clamp(-1, 1) if clip else x0
        return a_new.sqrt() * x0 + sign * (1 - a_new).sqrt() * eps

    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    slips: list[tuple[str, torch.Tensor]] = []
    if prev_t < 0:  # checked first: at t = 0, alphas_cumprod[0] is also ᾱ_t
        slips.append(("at the last step (prev_t = −1) use ᾱ_{t−1} = 1, a clean image: alphas_cumprod[-1] is "
                      "Python's last entry, ᾱ at the final timestep", step(a_t, ab[-1])))
        slips.append(("at the last step (prev_t = −1) use ᾱ_{t−1} = 1 (this course's convention), "
                      "not alphas_cumprod[0]", step(a_t, ab[0])))
    slips += [
        ("your step returned x_t unchanged: x̂0 uses ᾱ_t (alphas_cumprod[t]) and the new sample uses "
         "ᾱ_{t−1} (alphas_cumprod[prev_t]); you used the same ᾱ for both", x_t),
        ("ᾱ_t and ᾱ_{t−1} are swapped: x̂0 comes from ᾱ_t = alphas_cumprod[t], the new sample takes "
         "ᾱ_{t−1} = alphas_cumprod[prev_t]", step(a_prev, a_t)),
        ("you returned x̂0; a DDIM step only goes down to the noise level of prev_t: "
         "√ᾱ_{t−1} · x̂0 + √(1 − ᾱ_{t−1}) · ε̂", x0),
        ("the second term √(1 − ᾱ_{t−1}) · ε̂ is missing: x_{t−1} keeps the noise of its own step", a_prev.sqrt() * x0),
        ("sign error in the second term: it adds + √(1 − ᾱ_{t−1}) · ε̂", step(a_t, a_prev, sign=-1.0)),
        ("sign error in x̂0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t", a_prev.sqrt() * (x_t + (1 - a_t).sqrt() * eps)
         / a_t.sqrt() + (1 - a_prev).sqrt() * eps),
        ("you forgot the square roots on ᾱ_{t−1} and 1 − ᾱ_{t−1}", a_prev * x0 + (1 - a_prev) * eps),
        ("you subtracted the predicted noise from x_t; DDIM rebuilds x_{t−1} from x̂0 and ε̂", x_t - eps),
        ("do not clip x̂0 in this exercise: use the formula's value as it is", step(a_t, a_prev, clip=True)),
    ]
    for stride in (1, 10, 20, 25, 50, 100):  # a stride written into the code instead of prev_t
        if prev_t != t - stride and 0 <= t - stride:
            slips.append((f"you stepped to t − {stride}; the previous timestep is the prev_t you are given "
                          f"(here {prev_t}): samplers skip different numbers of steps", step(a_t, ab[t - stride])))
    for name in ("linear", "cosine"):
        own = notebook_alphas_cumprod(name)
        if (len(own) != len(ab) or not torch.allclose(own, ab)) and t < len(own):
            own_prev = own[prev_t] if prev_t >= 0 else one
            slips.append(("you used the notebook's `schedule` instead of the `alphas_cumprod` you were given",
                          own_prev.sqrt() * (x_t - (1 - own[t]).sqrt() * eps) / own[t].sqrt()
                          + (1 - own_prev).sqrt() * eps))
    return Answer(a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps, slips, what="x_(t−1)",
                  advice="recheck x_(t−1) = √ᾱ_(t−1) · x̂0 + √(1 − ᾱ_(t−1)) · ε̂")


DDIM_STEP = Exercise("DDIM step", _ddim_cases, _ddim_answer)


def check_ddim_step(fn: Callable[[torch.Tensor, int, torch.Tensor, int, torch.Tensor], torch.Tensor], *,
                    seed: int = 0) -> bool:
    """Check ``fn(eps, t, x_t, prev_t, alphas_cumprod) -> x_{t−1}``, one deterministic DDIM step (η = 0).

    x_{t−1} = √ᾱ_{t−1} · x̂0 + √(1 − ᾱ_{t−1}) · ε̂ with x̂0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t and
    ᾱ_{t−1} = alphas_cumprod[prev_t], or 1 when prev_t = −1 (Song et al. 2021, eq. 12 with σ_t = 0).
    Graded on several schedules, strides, batch sizes and both float dtypes.
    """
    return DDIM_STEP.check(fn, seed=seed)


EXERCISES = {"check_pred_original_sample": PRED_ORIGINAL_SAMPLE, "check_ddim_step": DDIM_STEP}
