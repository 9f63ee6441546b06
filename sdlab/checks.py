"""Automatic checks for the exercises: run a student's function on fixed inputs.

A check prints one line on success and raises :class:`ExerciseError` (an
AssertionError, so autograders such as nbgrader count it as a failed test)
with a message that says what is wrong and, where a common slip explains the
numbers, which slip it probably is. The checks never print a solution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

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


PASSED_MARK = "✓"  # U+2713: in the fonts every browser has (an emoji such as ✅ needs an emoji font)


def _passed(what: str) -> bool:
    print(f"{PASSED_MARK} {what}: all checks passed.")
    return True


def check_alphas_cumprod(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(betas) -> alphas_cumprod``: ᾱ_t = ∏_{s≤t} (1 − β_s), shape (T,)."""
    betas = NoiseSchedule("linear", num_train_timesteps=50, beta_start=0.01, beta_end=0.2).betas.double()
    expected = torch.cumprod(1 - betas, dim=0)
    got = _call(fn, betas.clone())
    if got.shape != expected.shape:
        raise ExerciseError(f"for {len(betas)} betas you should return {len(betas)} values; "
                            f"got shape {tuple(got.shape)}")
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
            hint = f"off by one: you used ᾱ at t{shift:+d}; index alphas_cumprod[t]"
            slips[hint] = b.sqrt() * x0 + (1 - b).sqrt() * noise
    for hint, wrong in slips.items():
        if _same(got, wrong, 1e-5):
            raise ExerciseError(f"at t={t}: {hint}.")
    err = (got - (a.sqrt() * x0 + (1 - a).sqrt() * noise)).abs().max().item()
    raise ExerciseError(f"at t={t} x_t is off by up to {err:.4f}; recheck x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε")


# ----------------------------------------------------------------------------- chapter 2: training

__all__ += ["check_diffusion_loss", "check_loss_weight", "check_eps_or_x0"]


class _StandInPredictor(torch.nn.Module):
    """A fixed, differentiable stand-in noise predictor: a seeded 1×1 colour mix of x_t plus a t-dependent shift."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        mix = 0.5 * torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        self.mix = torch.nn.Parameter(mix)
        self.shift = torch.nn.Parameter(0.3 * torch.randn(3, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x: (B, 3, H, W), t: (B,) or one step -> (B, 3, H, W)."""
        t = torch.as_tensor(t, device=x.device).to(x.dtype).reshape(-1, 1, 1, 1)
        return torch.einsum("oc,bchw->bohw", self.mix.to(x.dtype), x) + self.shift.to(x.dtype)[:, None, None] * t / 1000


def _loss_slips(model, x0, noise, t, ab_all) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The right ε-loss, and (hint, loss) for each common slip, for the same inputs."""
    ab = ab_all[t].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    pred = model(x_t, t)

    def eps_loss(x):
        return ((model(x, t) - noise) ** 2).mean()

    sqrt = "a square root is missing when you corrupt x0: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε"
    square = "the errors must be squared before they are averaged"
    slips = [
        ("the target is the noise ε (`noise`), not the clean image x0 (that would be x0-prediction)",
         ((pred - x0) ** 2).mean()),
        ("the target is the noise ε (`noise`), not the noisy image x_t", ((pred - x_t) ** 2).mean()),
        ("the network must be shown the noisy image x_t, not the clean x0", eps_loss(x0)),
        ("you compared the implied x̂0 with x0, which weights each image by (1 − ᾱ_t) / ᾱ_t; compare ε̂ with ε",
         (((x_t - (1 - ab).sqrt() * pred) / ab.sqrt() - x0) ** 2).mean()),
        ("you summed the squared errors; average them over every element (batch, channels, pixels), as "
         "F.mse_loss does, so the loss does not grow with the batch or the image size", ((pred - noise) ** 2).sum()),
        ("you summed over each image's pixels and averaged over the batch; average over every element",
         ((pred - noise) ** 2).flatten(1).sum(1).mean()),
        ("the loss squares the errors; you took their absolute values", (pred - noise).abs().mean()),
        (square, (pred - noise).mean()),
        (square, (noise - pred).mean()),
        (sqrt, eps_loss(ab * x0 + (1 - ab) * noise)),
        (sqrt, eps_loss(ab.sqrt() * x0 + (1 - ab) * noise)),
        (sqrt, eps_loss(ab * x0 + (1 - ab).sqrt() * noise)),
        ("the coefficients are swapped: √ᾱ_t multiplies x0 and √(1 − ᾱ_t) the noise",
         eps_loss((1 - ab).sqrt() * x0 + ab.sqrt() * noise)),
        ("x0 must shrink too: it is scaled by √ᾱ_t", eps_loss(x0 + (1 - ab).sqrt() * noise)),
    ]
    for shift in (-1, 1):
        b = ab_all[t + shift].reshape(-1, 1, 1, 1)
        slips.append((f"off by one: you used ᾱ at t{shift:+d}; index alphas_cumprod[t]",
                      eps_loss(b.sqrt() * x0 + (1 - b).sqrt() * noise)))
    if x0.shape[0] == x0.shape[-1]:  # (B,) coefficients silently broadcast along the width when B == W
        flat = ab_all[t]
        slips.append(("ᾱ_t has shape (B,) and was spread along the image width; reshape it to (B, 1, 1, 1)",
                      eps_loss(flat.sqrt() * x0 + (1 - flat).sqrt() * noise)))
    return ((pred - noise) ** 2).mean(), slips


def _run_loss(fn: Callable, model, x0, noise, t, ab_all) -> torch.Tensor:
    try:
        return _call(fn, model, x0.clone(), noise.clone(), t.clone(), ab_all.clone())
    except ExerciseError as error:
        if "size of tensor" in str(error) or "broadcast" in str(error):
            raise ExerciseError(f"{error}. Hint: ᾱ_t for a batch has shape (B,); reshape it to (B, 1, 1, 1) so it "
                                "multiplies whole images (B, C, H, W)") from error
        raise


def check_diffusion_loss(fn: Callable) -> bool:
    """Check ``fn(model, x0, noise, t, alphas_cumprod) -> loss``: mean of (ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε)².

    The DDPM training objective (Ho et al. 2020, eq. 14), for a batch with one t per image.
    """
    schedule, g = NoiseSchedule("cosine"), torch.Generator().manual_seed(99)
    ab_all = schedule.alphas_cumprod.double()
    for batch, height, width in ((4, 8, 8), (8, 6, 8)):  # the second has B == W: a missing reshape stays silent
        x0 = torch.rand(batch, 3, height, width, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(batch, 3, height, width, generator=g, dtype=torch.float64)
        t = torch.randint(5, 995, (batch,), generator=g)
        model = _StandInPredictor()
        got = _run_loss(fn, model, x0, noise, t, ab_all)
        if got.dim() != 0 and got.numel() != 1:
            raise ExerciseError(f"return one number (a 0-dim tensor) averaged over everything; got shape "
                                f"{tuple(got.shape)}")
        again = _run_loss(fn, _StandInPredictor(), x0, noise, t, ab_all)
        if not _same(got.reshape(()), again.reshape(()), 1e-9):
            raise ExerciseError("your loss changes from one call to the next: use the `noise` and `t` you are "
                                "given instead of drawing new ones")
        if not got.requires_grad:
            raise ExerciseError("your loss carries no gradient back to the model: avoid .item(), .detach(), "
                                "numpy and torch.no_grad() inside the loss")
        got.reshape(()).backward()
        if model.mix.grad is None or not model.mix.grad.abs().sum() > 0:
            raise ExerciseError("the loss does not depend on the model's weights: call model(x_t, t)")
        with torch.no_grad():
            right, slips = _loss_slips(model, x0, noise, t, ab_all)
        got = got.detach().reshape(())
        if _same(got, right, 1e-8):
            continue
        for hint, wrong in slips:
            if _same(got, wrong, 1e-8):
                raise ExerciseError(f"not yet: {hint}.")
        raise ExerciseError(f"for these inputs the loss should be {right:.6f}; got {got:.6f}. Recheck the four "
                            "steps: corrupt x0 to x_t, ask the model, compare with the noise, average the squares")
    return _passed("diffusion_loss")


def check_loss_weight(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(alpha_bar) -> w`` with ‖ε − ε̂‖² = w · ‖x0 − x̂0‖², i.e. w = ᾱ_t / (1 − ᾱ_t) = SNR(t)."""
    ab = NoiseSchedule("cosine").alphas_cumprod.double()[[10, 100, 400, 700, 950]]
    expected = ab / (1 - ab)
    got = _call(fn, ab.clone())
    if got.shape != expected.shape:
        raise ExerciseError(f"return one weight per ᾱ value: shape {tuple(expected.shape)}; got {tuple(got.shape)}")
    if torch.allclose(got, expected, rtol=1e-6, atol=0):
        return _passed("loss_weight")
    slips = {
        "that is the factor the other way round: it turns an ε-loss into an x0-loss": 1 / expected,
        "that factor relates the errors themselves; the loss squares them": expected.sqrt(),
        "that factor relates the errors themselves, and the other way round; the loss squares them":
            1 / expected.sqrt(),
        "close: divide ᾱ_t by the noise's share of the variance, 1 − ᾱ_t": ab,
        "that is the noise's share of the variance alone; compare it with the signal's": 1 - ab,
    }
    for hint, wrong in slips.items():
        if torch.allclose(got, wrong, rtol=1e-6, atol=0):
            raise ExerciseError(f"not yet: {hint}.")
    raise ExerciseError("not yet. Write x0 and x̂0 with the same x_t, one using ε and one using ε̂, subtract, "
                        "and square")


_EPS_OR_X0 = {
    "a": "x̂0 follows from ε̂ in one line, x̂0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t; the chapter draws it for every t",
    "c": "look at the loss per timestep again: near t = T the noisy image is almost pure noise, so ε is the "
         "easiest thing there is to guess",
    "d": "look at the implied x̂0 at large t: one call gives only a smudge, which is why sampling takes many "
         "steps (chapter 3)",
}


def check_eps_or_x0(fn: Callable[[], str]) -> bool:
    """Check the multiple-choice answer of chapter 2's "ε or x0?" exercise: ``fn()`` returns one letter a–d."""
    if not callable(fn):
        raise ExerciseError(f"pass your function itself (not its result); got a {type(fn).__name__}")
    try:
        answer = fn()
    except Exception as error:
        raise ExerciseError(f"your function raised {type(error).__name__}: {error}") from error
    if not isinstance(answer, str) or answer.strip().lower() not in ("a", "b", "c", "d"):
        raise ExerciseError(f"return one of the letters 'a', 'b', 'c' or 'd' as a string; got {answer!r}")
    letter = answer.strip().lower()
    if letter in _EPS_OR_X0:
        raise ExerciseError(f"not ({letter}): {_EPS_OR_X0[letter]}.")
    return _passed("ε or x0")


# ----------------------------------------------------------------------------- chapter 3: reverse diffusion

__all__ += ["check_pred_original_sample", "check_ddim_step"]


def _ch3_close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal shapes and values up to float32 round-off (x̂0 can be large at high t, hence the relative part)."""
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-5))


def _ch3_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t, ε̂ (2, 1, 8, 8) float64 and the cosine schedule's ᾱ (1000,) float64."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    return x_t, eps, NoiseSchedule("cosine").alphas_cumprod.double()


def _raise_miss(got: torch.Tensor, expected: torch.Tensor, slips: list[tuple[str, torch.Tensor]], *,
                where: str, what: str, advice: str) -> NoReturn:
    """Name the first plausible slip that ``got`` matches, or else say how far off it is and what to recheck."""
    hint = next((hint for hint, wrong in slips if _ch3_close(got, wrong)), None)
    if hint:
        raise ExerciseError(f"at {where}: {hint}.")
    err = (got - expected).abs().max().item()
    raise ExerciseError(f"at {where} {what} is off by up to {err:.4g}; {advice}")


def check_pred_original_sample(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x_t, eps, alpha_prod_t) -> x̂0`` = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t (Ho et al. 2020, eq. 15).

    ``alpha_prod_t`` is ᾱ_t as a 0-dim float64 tensor; x_t and ε̂ are (2, 1, 8, 8).
    """
    x_t, eps, ab = _ch3_inputs(31)
    for t in (100, 500, 900):
        a = ab[t]
        expected = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        got = _call(fn, x_t.clone(), eps.clone(), a.clone())
        if got.shape != expected.shape:
            raise ExerciseError(f"x̂0 must have the shape of x_t {tuple(x_t.shape)}; got {tuple(got.shape)}")
        if _ch3_close(got, expected):
            continue
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
        _raise_miss(got, expected, slips, where=f"ᾱ_t = {a:.4f} (t = {t})", what="x̂0",
                    advice="solve x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε for x0")
    _passed("pred_original_sample")


def _ddim_slips(eps, t, x_t, prev_t, ab) -> list[tuple[str, torch.Tensor]]:
    """(hint, wrong x_{t−1}) for the common slips in one DDIM step."""
    a_t = ab[t]
    a_prev = ab[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=ab.dtype)

    def step(a_x0: torch.Tensor, a_new: torch.Tensor, sign: float = 1.0, clip: bool = False) -> torch.Tensor:
        x0 = (x_t - (1 - a_x0).sqrt() * eps) / a_x0.sqrt()
        x0 = x0.clamp(-1, 1) if clip else x0
        return a_new.sqrt() * x0 + sign * (1 - a_new).sqrt() * eps

    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    slips: list[tuple[str, torch.Tensor]] = []
    if prev_t < 0:  # checked first: at t = 0, alphas_cumprod[0] is also ᾱ_t
        slips.append(("at the last step (prev_t = −1) use ᾱ_{t−1} = 1, a clean image: alphas_cumprod[-1] is "
                      "Python's last entry, ᾱ at t = 999", step(a_t, ab[-1])))
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
    if 0 <= prev_t != t - 1:
        slips.append((f"the previous timestep is prev_t = {prev_t}, not t − 1 = {t - 1}: the sampler skips "
                      f"{t - prev_t} steps at a time", step(a_t, ab[t - 1])))
    return slips


def check_ddim_step(fn: Callable[[torch.Tensor, int, torch.Tensor, int, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(eps, t, x_t, prev_t, alphas_cumprod) -> x_{t−1}``, one deterministic DDIM step (η = 0).

    x_{t−1} = √ᾱ_{t−1} · x̂0 + √(1 − ᾱ_{t−1}) · ε̂ with x̂0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t and
    ᾱ_{t−1} = alphas_cumprod[prev_t], or 1 when prev_t = −1 (Song et al. 2021, eq. 12 with σ_t = 0).
    """
    x_t, eps, ab = _ch3_inputs(32)
    for t, prev_t in ((980, 960), (500, 480), (40, 20), (20, 0), (0, -1)):
        a_prev = ab[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=ab.dtype)
        x0 = (x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        got = _call(fn, eps.clone(), t, x_t.clone(), prev_t, ab.clone())
        if got.shape != expected.shape:
            raise ExerciseError(f"x_(t−1) must have the shape of x_t {tuple(x_t.shape)}; got {tuple(got.shape)}")
        if _ch3_close(got, expected):
            continue
        _raise_miss(got, expected, _ddim_slips(eps, t, x_t, prev_t, ab), where=f"step t = {t} → prev_t = {prev_t}",
                    what="x_(t−1)", advice="recheck x_(t−1) = √ᾱ_(t−1) · x̂0 + √(1 − ᾱ_(t−1)) · ε̂")
    _passed("DDIM step")


# ----------------------------------------------------------------------------- chapter 4: CLIP

__all__ += ["check_similarity_matrix", "check_contrastive_loss"]


def _ch4_miss(got: torch.Tensor, expected: torch.Tensor, slips: list[tuple[str, torch.Tensor]], what: str, *,
              tol: float = 1e-6) -> None:
    """Raise with the slip ``got`` matches (or how far off it is), unless it is right (within ``tol``)."""
    if _same(got, expected, tol):
        return
    for hint, wrong in slips:
        if _same(got, wrong, tol):
            raise ExerciseError(f"{what}: {hint}")
    if got.shape != expected.shape:
        raise ExerciseError(f"{what} should have shape {tuple(expected.shape)}; got {tuple(got.shape)}")
    raise ExerciseError(f"{what} is off by up to {(got - expected).abs().max().item():.4g}")


def check_similarity_matrix(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                            seed: int = 0) -> bool:
    """Check ``fn(image_embeds (N, D), text_embeds (M, D), logit_scale) -> logits (N, M)``.

    logits[i, j] = exp(logit_scale) · cos(image i, caption j): both sides normalised to unit length
    along the feature axis, then multiplied by the temperature's inverse exp(logit_scale).
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 6, generator=g, dtype=torch.float64) * torch.tensor([[0.5], [2.0], [1.0], [3.0]])
    texts = torch.randn(3, 6, generator=g, dtype=torch.float64) * 1.7
    scale = torch.tensor(1.3, dtype=torch.float64)
    unit = lambda x, dim=-1: x / x.norm(dim=dim, keepdim=True)  # noqa: E731
    cos = unit(images) @ unit(texts).T
    slips = [
        ("you forgot to normalise the embeddings to unit length (the cosine needs both divided by their norm)",
         scale.exp() * images @ texts.T),
        ("only one side is normalised: divide both the image and the text embeddings by their norms",
         scale.exp() * unit(images) @ texts.T),
        ("only one side is normalised: divide both the image and the text embeddings by their norms",
         scale.exp() * images @ unit(texts).T),
        ("you normalised along the wrong axis: each embedding (each row) should get length 1",
         scale.exp() * unit(images, 0) @ unit(texts, 0).T),
        ("the matrix is transposed: rows are images (N), columns are captions (M)", scale.exp() * cos.T),
        ("the temperature is inverted: multiply by exp(logit_scale), do not divide", cos / scale.exp()),
        ("logit_scale is a logarithm: multiply by exp(logit_scale), not by logit_scale itself", scale * cos),
        ("you left out the temperature: multiply the cosines by exp(logit_scale)", cos),
    ]
    got = _call(fn, images.clone(), texts.clone(), scale.clone())
    _ch4_miss(got, scale.exp() * cos, slips, "the similarity matrix")
    return _passed("similarity matrix")


def check_contrastive_loss(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(logits_per_image (B, B)) -> loss``, CLIP's symmetric InfoNCE loss.

    loss = ½ [CE(logits, 0..B−1) + CE(logitsᵀ, 0..B−1)]: each image picks its caption among the B
    (rows), and each caption its image (columns); pair i sits on the diagonal.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 5, generator=g, dtype=torch.float64) * 3 + 2 * torch.eye(5, dtype=torch.float64)
    targets = torch.arange(5)
    rows = torch.nn.functional.cross_entropy(logits, targets)
    cols = torch.nn.functional.cross_entropy(logits.T, targets)
    slips = [
        ("only one direction: average the image→caption loss (rows) and the caption→image loss (columns)", rows),
        ("only one direction: average the image→caption loss (rows) and the caption→image loss (columns)", cols),
        ("you added the two directions: CLIP takes their mean, ½ (rows + columns)", rows + cols),
        ("the sign is flipped: cross-entropy is minus the log-probability of the right pair", -(rows + cols) / 2),
        ("the targets are wrong: pair i is the diagonal entry (i, i), so the targets are 0, 1, ..., B−1",
         (torch.nn.functional.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
          + torch.nn.functional.cross_entropy(logits.T, torch.zeros(5, dtype=torch.long))) / 2),
    ]
    got = _call(fn, logits.clone())
    if got.numel() != 1:
        raise ExerciseError(f"the loss should be one number (a 0-dim tensor); got shape {tuple(got.shape)}")
    _ch4_miss(got.reshape(()), (rows + cols) / 2, slips, "the loss")
    return _passed("contrastive loss")


__all__ += ["check_reparameterise", "check_kl_divergence"]


def _ch5_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of 3 encoder outputs (3, 4, 2, 2): means, log-variances of both signs, and noise."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    logvar = torch.rand(3, 4, 2, 2, generator=g, dtype=torch.float64) * 3 - 2  # in [-2, 1]: σ from 0.37 to 1.65
    noise = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    return mean, logvar, noise


def check_reparameterise(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                         seed: int = 0) -> bool:
    """Check ``fn(mean, logvar, noise) -> z``: a draw from N(mean, exp(logvar)) as mean + σ · noise.

    σ = exp(½ · logvar): the encoder predicts the logarithm of the variance, so the standard
    deviation is the exponential of half of it.
    """
    mean, logvar, noise = _ch5_inputs(seed)
    std = torch.exp(0.5 * logvar)
    slips = [
        ("you used exp(logvar), the variance, as the standard deviation: σ = exp(½ · logvar)",
         mean + torch.exp(logvar) * noise),
        ("you used logvar itself as the standard deviation: it is a log-variance, σ = exp(½ · logvar)",
         mean + logvar * noise),
        ("you multiplied by exp(2 · logvar): the ½ goes the other way, σ = exp(½ · logvar)",
         mean + torch.exp(2 * logvar) * noise),
        ("you added exp(½ · logvar) without the noise: z = mean + σ · noise", mean + std),
        ("the sign is flipped: z = mean + σ · noise (noise is symmetric, but the check fixes it)",
         mean - std * noise),
        ("you left out the mean: z = mean + σ · noise", std * noise),
        ("you added the noise unscaled: multiply it by σ = exp(½ · logvar) first", mean + noise),
        ("you drew your own noise: use the noise you are given (that is what makes z repeatable)", None),
    ]
    got = _call(fn, mean.clone(), logvar.clone(), noise.clone())
    expected = mean + std * noise
    if not _same(got, expected, 1e-6) and got.shape == expected.shape:
        again = _call(fn, mean.clone(), logvar.clone(), noise.clone())
        if not _same(got, again, 1e-12):
            raise ExerciseError(slips[-1][0])
    _ch4_miss(got, expected, slips[:-1], "z")
    return _passed("reparameterisation trick")


def check_kl_divergence(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(mean, logvar) -> kl (B,)``: KL(N(mean, exp(logvar)) ‖ N(0, I)) of each image.

    kl = ½ Σ (mean² + exp(logvar) − 1 − logvar), the sum over all the latent numbers of one image.
    """
    mean, logvar, _ = _ch5_inputs(seed)
    per_number = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)
    total = lambda x: x.flatten(1).sum(1)  # noqa: E731
    slips = [
        ("the ½ is missing: KL = ½ Σ (μ² + σ² − 1 − log σ²)", total(per_number * 2)),
        ("the sign of the log-variance term is flipped: it is − logvar (− log σ²)",
         total(0.5 * (mean.pow(2) + logvar.exp() - 1 + logvar))),
        ("the whole thing has the wrong sign: a KL divergence is never negative", -total(per_number)),
        ("you treated logvar as the standard deviation: σ² = exp(logvar), log σ² = logvar",
         total(0.5 * (mean.pow(2) + logvar.pow(2) - 1 - torch.log(logvar.pow(2))))),
        ("you used exp(logvar) as σ and squared it: σ² is exp(logvar) itself",
         total(0.5 * (mean.pow(2) + torch.exp(2 * logvar) - 1 - logvar))),
        ("you left out the − 1: KL = ½ Σ (μ² + σ² − 1 − log σ²)",
         total(0.5 * (mean.pow(2) + logvar.exp() - logvar))),
        ("you averaged over the latent numbers: the KL of an image sums over all of them",
         per_number.flatten(1).mean(1)),
        ("you returned one number for the batch: return one KL per image, shape (B,)", per_number.sum()),
        ("you returned one number for the batch: return one KL per image, shape (B,)", total(per_number).mean()),
        ("you forgot the μ² term: the distance of the mean from 0 costs too",
         total(0.5 * (logvar.exp() - 1 - logvar))),
    ]
    got = _call(fn, mean.clone(), logvar.clone())
    _ch4_miss(got, total(per_number), slips, "the KL divergence")
    return _passed("KL divergence")


# ----------------------------------------------------------------------------- chapter 6: guidance, attention

__all__ += ["check_classifier_free_guidance", "check_cross_attention_head"]

FLOAT32_TOL = 1e-4  # the graded inputs are float32: a right float32 answer is off by ~1e-6 times the scale


def check_classifier_free_guidance(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *,
                                   seed: int = 0) -> bool:
    """Check ``fn(noise_uncond, noise_cond, scale) -> guided``: ε̂_uncond + s · (ε̂_cond − ε̂_uncond).

    Graded on float32 batches of two shapes and on several scales; the inputs must come back unchanged.
    """
    g = torch.Generator().manual_seed(seed)
    for shape, scale in (((2, 4, 3, 3), 7.5), ((3, 4, 2, 5), 3.0), ((1, 4, 4, 4), 1.0), ((2, 4, 2, 2), 12.5)):
        uncond = torch.randn(shape, generator=g)
        cond = uncond + 0.5 * torch.randn(shape, generator=g)
        kept = uncond.clone(), cond.clone()
        got = _call(fn, uncond, cond, scale)
        if not (torch.equal(uncond, kept[0]) and torch.equal(cond, kept[1])):
            raise ExerciseError("your function changed its inputs in place; compute a new tensor instead")
        u, c = kept[0].double(), kept[1].double()
        expected = u + scale * (c - u)
        slips = [
            ("the guidance points the wrong way: start from the unconditional prediction and move towards "
             "the conditional one", u - scale * (c - u)),
            ("the guidance points the wrong way: it starts from the conditional prediction and moves towards "
             "the unconditional one (the weights 1 − s and s are swapped)", c + scale * (u - c)),
            ("the scale multiplies the unconditional prediction; it should multiply the difference "
             "(conditional − unconditional)", scale * u + (c - u)),
            ("the scale multiplies the conditional prediction alone; it multiplies the difference "
             "(conditional − unconditional), added to the unconditional one", u + scale * c),
            ("you returned s · ε̂_cond: the unconditional prediction is the starting point", scale * c),
            ("the scale is ignored: you returned the conditional prediction", c),
            ("the scale is ignored: you returned the unconditional prediction", u),
            ("you averaged the two predictions: guidance extrapolates past the conditional one",
             scale * (u + c) / 2),
        ]
        if scale == 1.0:
            slips = [(hint, wrong) for hint, wrong in slips if "ignored: you returned the conditional" not in hint]
        _ch4_miss(got, expected, slips, f"at scale {scale}, the guided prediction", tol=FLOAT32_TOL)
    return _passed("classifier-free guidance")


def check_cross_attention_head(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(x, states, w_q, w_k, w_v) -> out (B, N, d)``: softmax(Q Kᵀ / √d) V for one head.

    The reference is diffusers' own ``Attention`` (one head, the output projection the identity)
    on the same weights; graded on two shapes, float32.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor

    g = torch.Generator().manual_seed(seed)
    for batch, positions, tokens, width, token_width in ((2, 6, 5, 8, 12), (3, 4, 7, 8, 10)):
        attn = Attention(query_dim=width, cross_attention_dim=token_width, heads=1, dim_head=width)
        attn.set_processor(AttnProcessor())
        with torch.no_grad():
            for layer in (attn.to_q, attn.to_k, attn.to_v):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.6)
            attn.to_out[0].weight.copy_(torch.eye(width))
            attn.to_out[0].bias.zero_()
        x = torch.randn(batch, positions, width, generator=g)
        states = torch.randn(batch, tokens, token_width, generator=g)
        w_q, w_k, w_v = (layer.weight.T.clone() for layer in (attn.to_q, attn.to_k, attn.to_v))
        with torch.no_grad():
            expected = attn.eval()(x, encoder_hidden_states=states).double()
        got = _call(fn, x.clone(), states.clone(), w_q, w_k, w_v)
        q, k, v = (t.double() for t in (x @ w_q, states @ w_k, states @ w_v))
        scores = q @ k.transpose(1, 2)
        slips = [
            ("the softmax runs over the wrong axis: each position's weights must sum to 1 over the tokens "
             "(the last axis of Q Kᵀ)", torch.softmax(scores / width**0.5, dim=1) @ v),
            ("the 1/√d scaling is missing: divide Q Kᵀ by the square root of the head width",
             torch.softmax(scores, dim=-1) @ v),
            ("you divided by d; the scaling is 1/√d", torch.softmax(scores / width, dim=-1) @ v),
            ("you scaled by the token states' width; d is the head width (the queries' last axis)",
             torch.softmax(scores / token_width**0.5, dim=-1) @ v),
            ("the softmax is missing: the weights must be positive and sum to 1", scores / width**0.5 @ v),
            ("keys and values are swapped: keys are compared with the queries, values are mixed",
             torch.softmax(q @ v.transpose(1, 2) / width**0.5, dim=-1) @ k),
            ("you returned the attention weights; multiply them by the values",
             torch.softmax(scores / width**0.5, dim=-1)),
        ]
        _ch4_miss(got, expected, slips, f"for {positions} positions reading {tokens} tokens, the head's output",
                  tol=FLOAT32_TOL)
    return _passed("cross-attention head")
