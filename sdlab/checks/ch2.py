"""Chapter 2's exercises: the DDPM training loss, the ε-to-x0 loss weight, and "ε or x0?"."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from sdlab.checks.core import (
    Answer,
    Case,
    Exercise,
    dtype_name,
    generator,
    notebook_alphas_cumprod,
    observe_call,
    plain_number_loss,
    randint,
    random_betas,
    where,
)

__all__ = ["check_diffusion_loss", "check_loss_weight", "check_eps_or_x0"]


class StandInPredictor(torch.nn.Module):
    """A fixed, differentiable stand-in noise predictor: a seeded 1×1 colour mix of x_t plus a t-dependent shift."""

    def __init__(self, seed: int = 2, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        mix = 0.5 * torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        self.mix = torch.nn.Parameter(mix.to(dtype))
        self.shift = torch.nn.Parameter((0.3 * torch.randn(3, generator=g, dtype=torch.float64)).to(dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x: (B, 3, H, W), t: (B,) or one step -> (B, 3, H, W)."""
        t = torch.as_tensor(t, device=x.device).to(x.dtype).reshape(-1, 1, 1, 1)
        return torch.einsum("oc,bchw->bohw", self.mix.to(x.dtype), x) + self.shift.to(x.dtype)[:, None, None] * t / 1000


# ----------------------------------------------------------------------------- the ε-prediction loss

_LOSS_NAMES = ("model", "x0", "noise", "t", "alphas_cumprod")


def _loss_cases(seed: int) -> list[Case]:
    g = generator(seed, 21)
    cases = []
    ab_all = notebook_alphas_cumprod("cosine")
    # The second shape has B == W: a missing reshape of ᾱ_t broadcasts silently along the width.
    for batch, height, width in ((4, 8, 8), (8, 6, 8)):
        x0 = torch.rand(batch, 3, height, width, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(batch, 3, height, width, generator=g, dtype=torch.float64)
        t = torch.randint(5, 995, (batch,), generator=g)
        cases.append(Case((StandInPredictor(2 + seed), x0, noise, t, ab_all),
                          f"for a batch of {batch} (cosine schedule, float64)", _LOSS_NAMES))
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (5, torch.float64)):
        betas, name = random_betas(g, dtype)
        ab = torch.cumprod(1 - betas.double(), 0).to(dtype)
        size = (batch, 3, randint(g, 2, 6), randint(g, 2, 6))
        x0 = (torch.rand(size, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
        noise = torch.randn(size, generator=g, dtype=torch.float64).to(dtype)
        t = torch.randint(1, len(ab) - 1, (batch,), generator=g)
        cases.append(Case((StandInPredictor(3 + seed, dtype), x0, noise, t, ab),
                          where(f"for a batch of {batch} on {name}", dtype_name(dtype)), _LOSS_NAMES))
    return cases


def _observe_loss(fn: Callable, case: Case) -> dict:
    """Call twice (the loss must be repeatable), then backpropagate (it must reach the model's weights)."""
    seen = observe_call(fn, case)
    if seen.get("kind") != "tensor":
        return seen
    model = copy.deepcopy(case.args[0])
    again = observe_call(fn, Case((model, *case.args[1:]), case.where, case.names))
    loss = None
    try:
        loss = fn(model, *(a.clone() for a in case.args[1:]))
        if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
            loss.reshape(()).backward()
    except Exception:
        pass
    seen["again"] = again.get("out")
    seen["reaches_model"] = bool(model.mix.grad is not None and model.mix.grad.abs().sum() > 0)
    return seen


def _loss_extra(case: Case, seen: dict) -> str | None:
    if problem := plain_number_loss(seen):
        return problem
    out = seen["out"]
    if out.numel() != 1:
        return f"return one number (a 0-dim tensor) averaged over everything; got shape {tuple(out.shape)}"
    again = seen.get("again")
    if not isinstance(again, torch.Tensor) or again.shape != out.shape or not torch.allclose(again, out):
        return ("your loss changes from one call to the next: use the `noise` and `t` you are given instead of "
                "drawing new ones")
    if not seen.get("requires_grad"):
        return ("your loss carries no gradient back to the model: avoid .item(), .detach(), numpy and "
                "torch.no_grad() inside the loss")
    if not seen.get("reaches_model"):
        return "the loss does not depend on the model's weights: call model(x_t, t)"
    return None


def _loss_answer(case: Case) -> Answer:
    stand_in, x0, noise, t, ab_all = case.args
    model = StandInPredictor()
    model.load_state_dict({k: v.double() for k, v in stand_in.state_dict().items()})
    x0, noise, ab_all = x0.double(), noise.double(), ab_all.double()
    with torch.no_grad():
        ab = ab_all[t].reshape(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        pred = model(x_t, t)

        def eps_loss(x: torch.Tensor) -> torch.Tensor:
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
             "F.mse_loss does, so the loss does not grow with the batch or the image size",
             ((pred - noise) ** 2).sum()),
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
            b = ab_all[(t + shift).clamp(0, len(ab_all) - 1)].reshape(-1, 1, 1, 1)
            slips.append((f"off by one: you used ᾱ at t{shift:+d}; index alphas_cumprod[t]",
                          eps_loss(b.sqrt() * x0 + (1 - b).sqrt() * noise)))
        if x0.shape[0] == x0.shape[-1]:  # (B,) coefficients silently broadcast along the width when B == W
            flat = ab_all[t]
            slips.append(("ᾱ_t has shape (B,) and was spread along the image width; reshape it to (B, 1, 1, 1)",
                          eps_loss(flat.sqrt() * x0 + (1 - flat).sqrt() * noise)))
        own = notebook_alphas_cumprod("cosine")
        if len(own) != len(ab_all) or not torch.allclose(own, ab_all):
            b = own[t].reshape(-1, 1, 1, 1)
            slips.append(("you used the notebook's `schedule` instead of the `alphas_cumprod` you were given",
                          eps_loss(b.sqrt() * x0 + (1 - b).sqrt() * noise)))
        right = ((pred - noise) ** 2).mean()
    return Answer(right, slips, what="the loss",
                  advice="recheck the four steps: corrupt x0 to x_t, ask the model, compare with the noise, "
                         "average the squares")


def _loss_error_hint(message: str) -> str:
    if "size of tensor" in message or "broadcast" in message:
        return (". Hint: ᾱ_t for a batch has shape (B,); reshape it to (B, 1, 1, 1) so it multiplies whole "
                "images (B, C, H, W)")
    return ""


DIFFUSION_LOSS = Exercise("diffusion_loss", _loss_cases, _loss_answer, observe=_observe_loss, extra=_loss_extra,
                          error_hint=_loss_error_hint)


def check_diffusion_loss(fn: Callable, *, seed: int = 0) -> bool:
    """Check ``fn(model, x0, noise, t, alphas_cumprod) -> loss``: mean of (ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε)².

    The DDPM training objective (Ho et al. 2020, eq. 14), for a batch with one t per image; graded
    on several batch sizes, schedules and both float dtypes, with a stand-in model.
    """
    return DIFFUSION_LOSS.check(fn, seed=seed)


# ----------------------------------------------------------------------------- the loss weight

def _weight_cases(seed: int) -> list[Case]:
    g = generator(seed, 22)
    cases = [Case((notebook_alphas_cumprod("cosine")[[10, 100, 400, 700, 950]],), "for five ᾱ of the cosine "
                  "schedule (float64)", ("alpha_bar",))]
    for dtype, shape in ((torch.float32, (7,)), (torch.float64, (2, 3)), (torch.float32, (1,))):
        values = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01).to(dtype)
        cases.append(Case((values,), f"for ᾱ of shape {shape} ({dtype_name(dtype)})", ("alpha_bar",)))
    return cases


def _weight_answer(case: Case) -> Answer:
    ab = case.args[0].double()
    right = ab / (1 - ab)
    slips = [
        ("that is the factor the other way round: it turns an ε-loss into an x0-loss", 1 / right),
        ("that factor relates the errors themselves; the loss squares them", right.sqrt()),
        ("that factor relates the errors themselves, and the other way round; the loss squares them",
         1 / right.sqrt()),
        ("close: divide ᾱ_t by the noise's share of the variance, 1 − ᾱ_t", ab),
        ("that is the noise's share of the variance alone; compare it with the signal's", 1 - ab),
    ]
    return Answer(right, slips, what="the weight",
                  advice="write x0 and x̂0 with the same x_t, one using ε and one using ε̂, subtract, and square")


LOSS_WEIGHT = Exercise("loss_weight", _weight_cases, _weight_answer)


def check_loss_weight(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(alpha_bar) -> w`` with ‖ε − ε̂‖² = w · ‖x0 − x̂0‖², i.e. w = ᾱ_t / (1 − ᾱ_t) = SNR(t)."""
    return LOSS_WEIGHT.check(fn, seed=seed)


# ----------------------------------------------------------------------------- ε or x0? (multiple choice)

_EPS_OR_X0 = {
    "a": "x̂0 follows from ε̂ in one line, x̂0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t; the chapter draws it for every t",
    "c": "look at the loss per timestep again: near t = T the noisy image is almost pure noise, so ε is the "
         "easiest thing there is to guess",
    "d": "look at the implied x̂0 at large t: one call gives only a smudge, which is why sampling takes many "
         "steps (chapter 3)",
}


def _eps_or_x0_verdict(case: Case, seen: dict) -> str | None:
    answer = seen.get("out") if seen.get("kind") == "str" else None
    if answer is None or answer.strip().lower() not in ("a", "b", "c", "d"):
        shown = repr(answer) if answer is not None else seen.get("kind", "nothing").replace("other:", "a ")
        return f"return one of the letters 'a', 'b', 'c' or 'd' as a string; got {shown}"
    letter = answer.strip().lower()
    if letter in _EPS_OR_X0:
        return f"not ({letter}): {_EPS_OR_X0[letter]}."
    return None


EPS_OR_X0 = Exercise("ε or x0", lambda seed: [Case(())], verdict=_eps_or_x0_verdict)


def check_eps_or_x0(fn: Callable[[], str], *, seed: int = 0) -> bool:
    """Check the multiple-choice answer of chapter 2's "ε or x0?" exercise: ``fn()`` returns one letter a–d.

    ``seed`` is accepted for the grader's sake; a multiple-choice answer has no other inputs.
    """
    return EPS_OR_X0.check(fn, seed=seed)


EXERCISES = {"check_diffusion_loss": DIFFUSION_LOSS, "check_loss_weight": LOSS_WEIGHT,
             "check_eps_or_x0": EPS_OR_X0}
