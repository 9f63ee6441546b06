"""Chapter 5's exercises: the reparameterisation trick and the VAE's KL term."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.checks.core import Answer, Case, Exercise, dtype_name, generator, observe_call, randint

__all__ = ["check_reparameterise", "check_kl_divergence"]


def _encoder_outputs(seed: int, salt: int) -> list[tuple[tuple[torch.Tensor, ...], str]]:
    """Batches of encoder outputs: means, log-variances of both signs (σ from 0.37 to 1.65), and noise."""
    g = generator(seed, salt)
    out = []
    for batch, dtype in ((3, torch.float64), (1, torch.float32), (randint(g, 2, 5), torch.float32)):
        size = (3, 4, 2, 2) if not out and seed == 0 else (batch, randint(g, 1, 4), randint(g, 1, 4), randint(g, 1, 4))
        mean = torch.randn(size, generator=g, dtype=torch.float64)
        logvar = torch.rand(size, generator=g, dtype=torch.float64) * 3 - 2
        noise = torch.randn(size, generator=g, dtype=torch.float64)
        out.append(((mean.to(dtype), logvar.to(dtype), noise.to(dtype)),
                    f"for latents of shape {size} ({dtype_name(dtype)})"))
    return out


# ----------------------------------------------------------------------------- reparameterisation

def _reparameterise_cases(seed: int) -> list[Case]:
    return [Case(args, label, ("mean", "logvar", "noise")) for args, label in _encoder_outputs(seed, 51)]


def _reparameterise_answer(case: Case) -> Answer:
    mean, logvar, noise = (a.double() for a in case.args)
    std = torch.exp(0.5 * logvar)
    slips = [
        ("you used exp(logvar), the variance, as the standard deviation: σ = exp(½ · logvar)",
         mean + torch.exp(logvar) * noise),
        ("you used logvar itself as the standard deviation: it is a log-variance, σ = exp(½ · logvar)",
         mean + logvar * noise),
        ("you multiplied by exp(2 · logvar): the ½ goes the other way, σ = exp(½ · logvar)",
         mean + torch.exp(2 * logvar) * noise),
        ("you added exp(½ · logvar) without the noise: z = mean + σ · noise", mean + std),
        ("the sign is flipped: z = mean + σ · noise (noise is symmetric, but the check fixes it)", mean - std * noise),
        ("you left out the mean: z = mean + σ · noise", std * noise),
        ("you added the noise unscaled: multiply it by σ = exp(½ · logvar) first", mean + noise),
    ]
    return Answer(mean + std * noise, slips, what="z")


def _observe_twice(fn: Callable, case: Case) -> dict:
    seen = observe_call(fn, case)
    seen["again"] = observe_call(fn, case).get("out")
    return seen


def _reparameterise_extra(case: Case, seen: dict) -> str | None:
    again = seen.get("again")
    if not isinstance(again, torch.Tensor) or again.shape != seen["out"].shape or not torch.equal(again, seen["out"]):
        return "you drew your own noise: use the noise you are given (that is what makes z repeatable)"
    return None


REPARAMETERISE = Exercise("reparameterisation trick", _reparameterise_cases, _reparameterise_answer,
                          observe=_observe_twice, extra=_reparameterise_extra)


def check_reparameterise(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                         seed: int = 0) -> bool:
    """Check ``fn(mean, logvar, noise) -> z``: a draw from N(mean, exp(logvar)) as mean + σ · noise.

    σ = exp(½ · logvar): the encoder predicts the logarithm of the variance, so the standard
    deviation is the exponential of half of it.
    """
    return REPARAMETERISE.check(fn, seed=seed)


# ----------------------------------------------------------------------------- KL divergence

def _kl_cases(seed: int) -> list[Case]:
    return [Case(args[:2], label, ("mean", "logvar")) for args, label in _encoder_outputs(seed, 52)]


def _kl_answer(case: Case) -> Answer:
    mean, logvar = (a.double() for a in case.args)
    per_number = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)

    def total(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)

    one = "you returned one number for the batch: return one KL per image, shape (B,)"
    slips = [
        ("the ½ is missing: KL = ½ Σ (μ² + σ² − 1 − log σ²)", total(per_number * 2)),
        ("the sign of the log-variance term is flipped: it is − logvar (− log σ²)",
         total(0.5 * (mean.pow(2) + logvar.exp() - 1 + logvar))),
        ("the whole thing has the wrong sign: a KL divergence is never negative", -total(per_number)),
        ("you treated logvar as the standard deviation: σ² = exp(logvar), log σ² = logvar",
         total(0.5 * (mean.pow(2) + logvar.pow(2) - 1 - torch.log(logvar.pow(2))))),
        ("you used exp(logvar) as σ and squared it: σ² is exp(logvar) itself",
         total(0.5 * (mean.pow(2) + torch.exp(2 * logvar) - 1 - logvar))),
        ("you left out the − 1: KL = ½ Σ (μ² + σ² − 1 − log σ²)", total(0.5 * (mean.pow(2) + logvar.exp() - logvar))),
        ("you averaged over the latent numbers: the KL of an image sums over all of them",
         per_number.flatten(1).mean(1)),
        ("you forgot the μ² term: the distance of the mean from 0 costs too", total(0.5 * (logvar.exp() - 1 - logvar))),
    ]
    if len(mean) > 1:  # with one image the batch's total is that image's KL, which is right
        slips += [(one, per_number.sum()), (one, total(per_number).mean())]
    return Answer(total(per_number), slips, what="the KL divergence")


KL_DIVERGENCE = Exercise("KL divergence", _kl_cases, _kl_answer)


def check_kl_divergence(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(mean, logvar) -> kl (B,)``: KL(N(mean, exp(logvar)) ‖ N(0, I)) of each image.

    kl = ½ Σ (mean² + exp(logvar) − 1 − logvar), the sum over all the latent numbers of one image.
    """
    return KL_DIVERGENCE.check(fn, seed=seed)


EXERCISES = {"check_reparameterise": REPARAMETERISE, "check_kl_divergence": KL_DIVERGENCE}
