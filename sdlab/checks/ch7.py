"""Chapter 7's exercise: one step of the guided denoising loop, with a real diffusers scheduler."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from torch import nn

from sdlab.checks.core import Answer, Case, Exercise, generator, observe_call, randint, uniform

__all__ = ["check_guided_step"]


@dataclass
class ToyOutput(BaseOutput):
    """What a diffusers U-Net returns: ``.sample`` (and ``[0]``)."""

    sample: torch.Tensor


class ToyUNet(nn.Module):
    """A stand-in for the U-Net, called like one: ``unet(x, t, encoder_hidden_states=states).sample``.

    Its prediction depends on the latents, the step and the words, and not linearly, so feeding it the
    wrong input (unscaled latents, the states of the other branch) changes the numbers.
    """

    def __init__(self, channels: int, width: int, g: torch.Generator) -> None:
        super().__init__()
        self.mix = nn.Parameter(0.5 * torch.randn(channels, channels, generator=g), requires_grad=False)
        self.read = nn.Parameter(0.5 * torch.randn(width, channels, generator=g), requires_grad=False)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> ToyOutput:
        if sample.shape[0] != encoder_hidden_states.shape[0]:
            raise ValueError(f"the U-Net got {sample.shape[0]} latents but {encoder_hidden_states.shape[0]} "
                             "sets of token states: one set per latent")
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0]
        words = encoder_hidden_states.mean(1) @ self.read.to(encoder_hidden_states.dtype)  # (B, C)
        mixed = torch.einsum("bchw,dc->bdhw", sample, self.mix.to(sample.dtype))
        return ToyOutput(sample=torch.tanh(mixed + words[:, :, None, None]) * (1 + t / 1000))


def _scheduler(kind: str, steps: int):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    options = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                   timestep_spacing="trailing", prediction_type="v_prediction")
    scheduler = DDIMScheduler(**options) if kind == "ddim" else EulerDiscreteScheduler(**options)
    scheduler.set_timesteps(steps)
    return scheduler


def _cases(seed: int) -> list[Case]:
    g = generator(seed, 71)
    # (scheduler, steps, which step, batch, scale): the notebook's DDIM, Euler (whose scale_model_input
    # divides by sqrt(σ² + 1)), guidance scale 1, the first and a middle step
    plan = [("ddim", 20, 0, 2, 3.0), ("euler", 20, 5, 2, 7.5), ("euler", 10, 0, 1, 1.0), ("ddim", 10, 6, 3, 5.0)]
    if seed:
        plan = [(kind, randint(g, 5, 30), None, randint(g, 1, 3), round(uniform(g, 1.5, 10), 2))
                for kind in ("euler", "ddim", "euler")]
    cases = []
    for kind, steps, index, batch, scale in plan:
        index = randint(g, 0, steps - 1) if index is None else index
        scheduler = _scheduler(kind, steps)
        channels, width, tokens = 4, 8, 5
        unet = ToyUNet(channels, width, g)
        t = scheduler.timesteps[index]
        latents = torch.randn(batch, channels, 3, 3, generator=g) * (scheduler.init_noise_sigma if index == 0 else 1)
        cond = torch.randn(batch, tokens, width, generator=g)
        uncond = torch.randn(batch, tokens, width, generator=g)
        name = "DDIM" if kind == "ddim" else "Euler"
        cases.append(Case((unet, scheduler, latents, t, cond, uncond, scale),
                          f"with {name}, step {index + 1} of {steps} (t = {int(t)}), scale {scale}, batch {batch}",
                          ("unet", "scheduler", "latents", "t", "cond_states", "uncond_states", "guidance_scale")))
    return cases


def _fresh(case: Case) -> Case:
    """The case with its own copy of the scheduler (a step advances its state) and of the U-Net."""
    return Case(tuple(copy.deepcopy(a) if isinstance(a, nn.Module) or hasattr(a, "step") else a for a in case.args),
                case.where, case.names)


def _observe(fn: Callable, case: Case) -> dict:
    return observe_call(fn, _fresh(case))


def _step(case: Case, *, scale_input: bool = True, step_from_scaled: bool = False, direction: int = 1,
          guided: bool = True, out: str = "prev_sample") -> torch.Tensor:
    """One guided step computed the right way, or with one slip."""
    from diffusers.utils import logging

    unet, scheduler, latents, t, cond, uncond, scale = _fresh(case).args
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # Euler warns when a step was not scaled: the slip computed here on purpose
    try:
        return _one_step(unet, scheduler, latents, t, cond, uncond, scale, scale_input=scale_input,
                         step_from_scaled=step_from_scaled, direction=direction, guided=guided, out=out)
    finally:
        logging.set_verbosity(verbosity)


def _one_step(unet, scheduler, latents, t, cond, uncond, scale, *, scale_input, step_from_scaled, direction,
              guided, out) -> torch.Tensor:
    with torch.no_grad():
        doubled = torch.cat([latents] * 2)
        model_input = scheduler.scale_model_input(doubled, t) if scale_input else doubled
        u, c = unet(model_input, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        if direction < 0:
            u, c = c, u
        noise = u + scale * (c - u) if guided else c
        if out == "noise":
            return noise
        start = model_input.chunk(2)[0] if step_from_scaled else latents
        return getattr(scheduler.step(noise, t, start), out)


def _answer(case: Case) -> Answer:
    scale = case.args[-1]
    slips = [
        ("the U-Net must see scheduler.scale_model_input(latents, t), not the raw latents (for Euler it "
         "divides them by √(σ² + 1))", _step(case, scale_input=False)),
        ("scheduler.step takes the unscaled latents; only the U-Net's input is scaled",
         _step(case, step_from_scaled=True)),
        ("the guidance points the wrong way: start from the unconditional prediction (the uncond_states "
         "branch) and move towards the conditional one", _step(case, direction=-1)),
        ("you returned the guided noise prediction: hand it to scheduler.step and return .prev_sample",
         _step(case, out="noise")),
        ("you returned .pred_original_sample, the step's guess of the clean latents; the loop goes on "
         "from .prev_sample", _step(case, out="pred_original_sample")),
    ]
    if scale != 1.0:
        slips.append(("the guidance is missing: you stepped with the conditional prediction alone",
                      _step(case, guided=False)))
    return Answer(_step(case), slips, what="the latents one step later")


def _error_hint(message: str) -> str:
    if "sets of token states" in message:
        return (" (run the U-Net on torch.cat([latents] * 2) with torch.cat([uncond_states, cond_states]), "
                "or on each branch with its own states)")
    return ""


GUIDED_STEP = Exercise("one guided denoising step", _cases, _answer, observe=_observe, error_hint=_error_hint)


def check_guided_step(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(unet, scheduler, latents, t, cond_states, uncond_states, guidance_scale) -> latents``.

    One step of the pipeline's loop: scale the model input, predict the noise without and with the
    words, guide, and step the scheduler. Graded with diffusers' DDIM and Euler schedulers (Euler's
    ``scale_model_input`` is not the identity) on a small stand-in U-Net, at several steps and scales.
    """
    return GUIDED_STEP.check(fn, seed=seed)


EXERCISES = {"check_guided_step": GUIDED_STEP}
