"""The reverse process: DDPM and DDIM samplers, and the loop that runs them.

Vocabulary and defaults follow diffusers (`set_timesteps`, `timesteps`,
`step`, `prev_sample`, `pred_original_sample`), so `DDPMSampler` and
`DDIMSampler` give the same numbers as `diffusers.DDPMScheduler` and
`diffusers.DDIMScheduler` built from `schedule.diffusers_config()`:

- timestep spacing "leading" with steps_offset 0: t = k · (T // n) for k = n−1, …, 0
  ("trailing", which starts at T − 1, for schedules whose last step is pure noise);
- clip_sample=True: x̂0 is clamped to [−1, 1] (images live there; turn it off for latents);
- DDPM: variance "fixed_small" (β̃_t), no noise at the last step (t = 0);
- DDIM: set_alpha_to_one=True (ᾱ before the first step is 1) and ε̂ is the model's own
  prediction, not re-derived from the clipped x̂0 (diffusers' use_clipped_model_output=False).

Coefficients are 0-dim float32 tensors computed in diffusers' order, so given the same ᾱ_t
the two agree bit for bit (float64 samples get float64 coefficients, more precise than
diffusers). sdlab's ᾱ_t comes from float64 and differs from diffusers' float32 cumprod by
< 5e-7; over 1000 steps, β_t = 1 − ᾱ_t / ᾱ_{t−1} magnifies that.

Both samplers speak diffusers' scheduler protocol (`sdlab.sampler_base`), so `sample` is one
loop for them and for every diffusers scheduler, and a diffusers loop runs with them unchanged.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from sdlab.progress import bar
from sdlab.random import Generators, randn_tensor
from sdlab.sampler_base import (
    PredictionType,
    SamplerBase,
    StepOutput,
    TimestepSpacing,
    predict_epsilon,
    predict_original_sample,
)
from sdlab.schedules import NoiseSchedule
from sdlab.validation import is_integer, number_in_range, one_of

__all__ = [
    "PredictionType", "VarianceType", "StepOutput", "Trajectory", "Scheduler", "predict_original_sample",
    "predict_epsilon", "randn_tensor", "DDPMSampler", "DDIMSampler", "sample", "run_diffusers_scheduler",
]

VarianceType = Literal["fixed_small", "fixed_large"]
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """One sampling run, step by step, as CPU tensors.

    ``samples`` holds x_T and then x after each step (n + 1 tensors);
    ``pred_original_samples`` holds x̂0 at each step (n tensors, or none for a
    diffusers scheduler that does not report it); ``timesteps`` the n timesteps.
    """

    timesteps: list[int | float] = field(default_factory=list)
    samples: list[torch.Tensor] = field(default_factory=list)
    pred_original_samples: list[torch.Tensor] = field(default_factory=list)


class DDPMSampler(SamplerBase):
    """Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2), on any subset of the timesteps.

    Example:
        >>> sampler = DDPMSampler(NoiseSchedule("linear"))
        >>> images = sample(model_fn, (4, 3, 32, 32), sampler=sampler, num_inference_steps=1000)
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        prediction_type: PredictionType = "epsilon",
        clip_sample: bool = True,
        variance_type: VarianceType = "fixed_small",
        steps_offset: int = 0,
        timestep_spacing: TimestepSpacing = "leading",
    ) -> None:
        super().__init__(schedule, prediction_type=prediction_type, clip_sample=clip_sample,
                         steps_offset=steps_offset, timestep_spacing=timestep_spacing)
        self.variance_type = one_of(variance_type, "variance_type", VarianceType)

    def _own_config(self) -> dict[str, Any]:
        return {"variance_type": self.variance_type}

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> StepOutput | tuple[torch.Tensor, torch.Tensor]:
        """One reverse step x_t → x_{t−1} ~ N(μ̃_t, σ_t² I).

        The mean is the posterior mean of q(x_{t−1} | x_t, x0) with x̂0 for x0 (Ho et al. 2020, eq. 7):
            μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x̂0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
        which for ε-prediction equals eq. 11: μ = (x_t − β_t / √(1 − ᾱ_t) · ε̂) / √α_t.
        Then x_{t−1} = μ̃_t + σ_t z with z ~ N(0, I), and no noise at the last step (t = 0);
        σ_t² = β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t ("fixed_small") or β_t ("fixed_large").
        Here t−1 is the previous timestep and α_t = ᾱ_t / ᾱ_{t−1} = 1 − β_t: the schedule's α_t when
        all T steps are taken, the product of the α's it skips otherwise.

        Args:
            model_output: ε̂ or v̂ from the model, (B, C, H, W).
            timestep: t, one of ``self.timesteps``.
            sample: x_t, (B, C, H, W).
            generator: for the noise z (a CPU generator works for samples on any device).
            return_dict: False returns the plain tuple (prev_sample, pred_original_sample).
        Returns:
            StepOutput(prev_sample=x_{t−1}, pred_original_sample=x̂0), each (B, C, H, W).
        """
        t = self._check_step(model_output, timestep, sample)
        alpha_prod_t, alpha_prod_t_prev = self._alpha_prods(t, sample)  # ᾱ_t, ᾱ_{t−1}
        alpha_t = alpha_prod_t / alpha_prod_t_prev  # α_t of this (possibly strided) step
        beta_t = 1 - alpha_t

        x0 = self._pred_original_sample(model_output, sample, alpha_prod_t)
        x0_coeff = alpha_prod_t_prev**0.5 * beta_t / (1 - alpha_prod_t)
        xt_coeff = alpha_t**0.5 * (1 - alpha_prod_t_prev) / (1 - alpha_prod_t)
        prev_sample = x0_coeff * x0 + xt_coeff * sample  # μ̃_t, eq. 7

        if t > 0:
            beta_tilde_t = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * beta_t
            variance = beta_tilde_t if self.variance_type == "fixed_small" else beta_t
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample = prev_sample + variance**0.5 * z
        return self._output(prev_sample, x0, return_dict)


class DDIMSampler(SamplerBase):
    """DDIM (Song et al. 2021): η = 0 is deterministic, η = 1 is DDPM's ancestral sampling.

    Example:
        >>> sampler = DDIMSampler(NoiseSchedule("linear"), eta=0.0)
        >>> images = sample(model_fn, (4, 3, 32, 32), sampler=sampler, num_inference_steps=50)
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        eta: float = 0.0,
        prediction_type: PredictionType = "epsilon",
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        timestep_spacing: TimestepSpacing = "leading",
    ) -> None:
        super().__init__(schedule, prediction_type=prediction_type, clip_sample=clip_sample,
                         steps_offset=steps_offset, timestep_spacing=timestep_spacing)
        self.eta = number_in_range(eta, "eta", 0, 1)
        # ᾱ "before" the first timestep: 1 (a clean image) or ᾱ_0 (diffusers' set_alpha_to_one).
        self.set_alpha_to_one = set_alpha_to_one
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])

    def _own_config(self) -> dict[str, Any]:
        return {"set_alpha_to_one": self.set_alpha_to_one, "eta": self.eta}

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> StepOutput | tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step x_t → x_{t−1} (Song et al. 2021, eq. 12):

            x_{t−1} = √ᾱ_{t−1} · x̂0  +  √(1 − ᾱ_{t−1} − σ_t²) · ε̂  +  σ_t z,   z ~ N(0, I),
            σ_t(η) = η · √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_{t−1})   (eq. 16).

        The first term is the predicted clean image, the second "the direction pointing to x_t".
        Noise is drawn only when η > 0.

        Args:
            model_output: ε̂ or v̂ from the model, (B, C, H, W).
            timestep: t, one of ``self.timesteps``.
            sample: x_t, (B, C, H, W).
            generator: for the noise z (a CPU generator works for samples on any device).
            return_dict: False returns the plain tuple (prev_sample, pred_original_sample).
        Returns:
            StepOutput(prev_sample=x_{t−1}, pred_original_sample=x̂0), each (B, C, H, W).
        """
        t = self._check_step(model_output, timestep, sample)
        alpha_prod_t, alpha_prod_t_prev = self._alpha_prods(t, sample)  # ᾱ_t, ᾱ_{t−1}

        x0 = self._pred_original_sample(model_output, sample, alpha_prod_t)
        eps = predict_epsilon(model_output, sample, alpha_prod_t, prediction_type=self.prediction_type)
        variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        sigma_t = self.eta * variance**0.5  # eq. 16
        direction = (1 - alpha_prod_t_prev - sigma_t**2) ** 0.5 * eps  # points to x_t
        prev_sample = alpha_prod_t_prev**0.5 * x0 + direction

        if self.eta > 0:
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev_sample = prev_sample + sigma_t * z
        return self._output(prev_sample, x0, return_dict)


class Scheduler(Protocol):
    """What the sampling loop needs of a sampler: sdlab's DDPM/DDIM and every diffusers scheduler have it."""

    timesteps: torch.Tensor
    init_noise_sigma: float

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None: ...

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor: ...

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **kwargs: Any) -> Any: ...


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(is_integer(n) and n > 0 for n in shape):
        raise ValueError(f"shape must be a tuple of positive ints such as (B, C, H, W); got {shape!r}")
    return tuple(int(n) for n in shape)


def _check_scheduler(sampler: Any) -> None:
    missing = [name for name in ("set_timesteps", "step", "scale_model_input", "timesteps", "init_noise_sigma")
               if not hasattr(sampler, name)]
    if missing:
        raise TypeError(f"sampler must be a sdlab sampler or a diffusers scheduler; {type(sampler).__name__} "
                        f"lacks {', '.join(missing)}")


def _step_kwargs(sampler: Scheduler, step_kwargs: Mapping[str, Any] | None, **optional: Any) -> dict:
    """Extra arguments for ``sampler.step``: ``step_kwargs``, plus those ``optional`` ones the step takes.

    diffusers' pipelines pass the generator and DDIM's η the same way: only to a step that has them.
    """
    accepts = inspect.signature(sampler.step).parameters
    return {**{k: v for k, v in optional.items() if v is not None and k in accepts}, **(step_kwargs or {})}


def _record(trajectory: Trajectory, t: torch.Tensor, out: Any) -> None:
    """Keep a CPU copy of x_{t−1} and, if the step reports it, x̂0."""
    trajectory.timesteps.append(t.item() if isinstance(t, torch.Tensor) else t)
    trajectory.samples.append(out.prev_sample.detach().cpu())
    if getattr(out, "pred_original_sample", None) is not None:
        trajectory.pred_original_samples.append(out.pred_original_sample.detach().cpu())


def _start(sampler: Scheduler, noise: torch.Tensor, num_inference_steps: int, image_latents: torch.Tensor | None,
           strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x at the first step and the timesteps still to run, after ``set_timesteps``.

    From pure noise: x_T = noise · ``init_noise_sigma``, every timestep. Image-to-image (diffusers'
    ``StableDiffusionImg2ImgPipeline``): skip the first (1 − strength) of the steps and noise the clean
    start to the first timestep left, ``add_noise(x0, noise, t)``; a small strength keeps the layout.
    """
    if image_latents is None:
        return noise * sampler.init_noise_sigma, sampler.timesteps
    strength = number_in_range(strength, "strength", 0.0, 1.0, low_open=True)
    skipped = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
    if skipped == num_inference_steps:
        raise ValueError(f"strength {strength} runs no step of {num_inference_steps}: raise strength or "
                         "num_inference_steps")
    first = skipped * getattr(sampler, "order", 1)  # a second-order step holds two timesteps
    timesteps = sampler.timesteps[first:]
    if hasattr(sampler, "set_begin_index"):  # multistep schedulers count their steps from here
        sampler.set_begin_index(first)
    return sampler.add_noise(image_latents, noise, timesteps[:1].repeat(noise.shape[0])), timesteps


def _checked_latents(latents: torch.Tensor, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``latents`` itself, or a ValueError when it is not of the images' ``shape``."""
    if tuple(latents.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}; got {tuple(latents.shape)}")
    return latents


def sample(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: Scheduler,
    num_inference_steps: int,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    latents: torch.Tensor | None = None,
    image_latents: torch.Tensor | None = None,
    strength: float = 0.8,
    eta: float | None = None,
    step_kwargs: Mapping[str, Any] | None = None,
    return_trajectory: bool = False,
    progress: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Generate images: start from noise x_T and step down to x_0, with any sampler.

    ``sampler`` is one of the course's (DDPMSampler, DDIMSampler) or any diffusers scheduler
    (DDIM, DPM-Solver++, Euler, ...): the loop is the one diffusers' pipelines run. Two of its
    lines matter only for some diffusers schedulers: x_T is scaled by ``init_noise_sigma``
    (Euler starts from N(0, σ_max² I)), and the model sees ``scale_model_input(x_t, t)``;
    for DDPM and DDIM both leave x_t unchanged. With ``image_latents`` the loop starts part-way
    down instead, from a clean picture noised to that step (image-to-image).

    Args:
        model_fn: ``model_fn(x_t, t)`` returns the model output (B, C, H, W); ``t`` is a
            0-dim tensor from ``sampler.timesteps``, as diffusers' pipelines pass it.
        shape: (B, C, H, W) of the images to make.
        sampler: a sampler or scheduler with diffusers' protocol (:class:`Scheduler`).
        num_inference_steps: how many reverse steps, 1..T.
        generator: seeds x_T and every step's noise (one, or one per image).
        device, dtype: where x_T is created (default: CPU, float32).
        latents: x_T itself, (B, C, H, W), instead of drawing it (still scaled by ``init_noise_sigma``);
            with ``image_latents``, the noise added to them.
        image_latents: clean x0, (B, C, H, W), to start from (image-to-image); ``None``: pure noise.
        strength: with ``image_latents``, the share of the steps to run, in (0, 1]: 1 repaints
            from pure noise, small values keep the start's layout.
        eta: DDIM's η for a scheduler whose ``step`` takes it (diffusers' DDIM); the others ignore it, as
            in diffusers' pipelines (the course's DDIMSampler holds its η itself).
        step_kwargs: extra keyword arguments for ``sampler.step``, e.g. ``{"eta": 0.5}`` for diffusers' DDIM.
        return_trajectory: also return a Trajectory of every x_t and x̂0.
        progress: show a tqdm progress bar.
    Returns:
        x_0, (B, C, H, W); with ``return_trajectory``, the pair (x_0, trajectory).
    """
    _check_scheduler(sampler)
    shape = _check_shape(shape)
    kwargs = _step_kwargs(sampler, step_kwargs, generator=generator, eta=eta)
    if image_latents is not None:
        image_latents = _checked_latents(image_latents, "image_latents", shape)
        device, dtype = image_latents.device, image_latents.dtype
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    latents = _checked_latents(latents, "latents", shape)
    sampler.set_timesteps(num_inference_steps, device=latents.device)
    x, timesteps = _start(sampler, latents, num_inference_steps, image_latents, strength)
    trajectory = Trajectory(samples=[x.cpu()] if return_trajectory else [])
    for t in bar(timesteps, desc=type(sampler).__name__, disable=not progress):
        model_output = model_fn(sampler.scale_model_input(x, t), t)  # ε̂ (or v̂) at step t
        out = sampler.step(model_output, t, x, **kwargs)  # x_t → x_{t−1}
        x = out.prev_sample
        if return_trajectory:
            _record(trajectory, t, out)
    return (x, trajectory) if return_trajectory else x


def run_diffusers_scheduler(model_fn: ModelFn, shape: tuple[int, ...], scheduler: Scheduler, **kwargs: Any
                            ) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Deprecated: :func:`sample` drives diffusers schedulers too; use ``sample(..., sampler=scheduler)``."""
    warnings.warn("sd.samplers.run_diffusers_scheduler is deprecated: sd.samplers.sample(model_fn, shape, "
                  "sampler=scheduler, ...) now drives any diffusers scheduler", DeprecationWarning, stacklevel=2)
    return sample(model_fn, shape, sampler=scheduler, **kwargs)
