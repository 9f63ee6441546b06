"""The reverse process: DDPM and DDIM samplers, and the loop that runs them.

Vocabulary and defaults follow diffusers (`set_timesteps`, `timesteps`,
`step`, `prev_sample`, `pred_original_sample`), so `DDPMSampler` and
`DDIMSampler` give the same numbers as `diffusers.DDPMScheduler` and
`diffusers.DDIMScheduler` built from `schedule.diffusers_config()`:

- timestep spacing "leading" with steps_offset 0: t = k · (T // n) for k = n−1, …, 0;
- clip_sample=True: x̂0 is clamped to [−1, 1] (images live there; turn it off for latents);
- DDPM: variance "fixed_small" (β̃_t), no noise at the last step (t = 0);
- DDIM: set_alpha_to_one=True (ᾱ before the first step is 1) and ε̂ is the model's own
  prediction, not re-derived from the clipped x̂0 (diffusers' use_clipped_model_output=False).

Coefficients are 0-dim float32 tensors computed in diffusers' order, so given the same ᾱ_t
the two agree bit for bit (float64 samples get float64 coefficients, more precise than diffusers). (sdlab's ᾱ_t comes from float64 and differs from diffusers'
float32 cumprod by < 5e-7; over 1000 steps, β_t = 1 − ᾱ_t / ᾱ_{t−1} magnifies that.)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, NamedTuple, get_args

import torch
from tqdm.auto import tqdm

from sdlab.schedules import NoiseSchedule

__all__ = [
    "PredictionType", "VarianceType", "StepOutput", "Trajectory", "predict_original_sample", "predict_epsilon",
    "randn_tensor", "DDPMSampler", "DDIMSampler", "sample", "run_diffusers_scheduler",
]

PredictionType = Literal["epsilon", "v_prediction"]
VarianceType = Literal["fixed_small", "fixed_large"]
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StepOutput(NamedTuple):
    """What one reverse step returns (diffusers' field names)."""

    prev_sample: torch.Tensor  # x_{t−1}: (B, C, H, W)
    pred_original_sample: torch.Tensor  # x̂0 at step t: (B, C, H, W)


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


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in get_args(PredictionType):
        raise ValueError(f"prediction_type must be one of {get_args(PredictionType)}; got {prediction_type!r}")


def predict_original_sample(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    *,
    prediction_type: PredictionType = "epsilon",
) -> torch.Tensor:
    """Return x̂0, the clean image the model's output implies at a step with ᾱ_t = ``alpha_prod_t``.

    - ``epsilon``: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, solved for x0 (Ho et al. 2020, eq. 15):
      x̂0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t.
    - ``v_prediction``: v = √ᾱ_t ε − √(1 − ᾱ_t) x0 (Salimans & Ho 2022): x̂0 = √ᾱ_t x_t − √(1 − ᾱ_t) v̂.

    Args:
        model_output: ε̂ or v̂, (B, C, H, W).
        sample: x_t, same shape.
        alpha_prod_t: ᾱ_t in (0, 1], a float or a 0-dim tensor.
    Returns:
        x̂0, same shape, device and dtype as ``sample``.
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return (sample - (1 - alpha_prod_t) ** 0.5 * model_output) / alpha_prod_t**0.5
    return alpha_prod_t**0.5 * sample - (1 - alpha_prod_t) ** 0.5 * model_output


def predict_epsilon(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    *,
    prediction_type: PredictionType = "epsilon",
) -> torch.Tensor:
    """Return ε̂, the noise the model's output implies: the output itself, or √ᾱ_t v̂ + √(1 − ᾱ_t) x_t for v."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return model_output
    return alpha_prod_t**0.5 * model_output + (1 - alpha_prod_t) ** 0.5 * sample


def randn_tensor(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw z ~ N(0, I) of ``shape`` as diffusers does: on a CPU generator's device, then moved to ``device``.

    So a CPU generator gives the same numbers whether the images live on the CPU or a GPU.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    draw_on = generator.device if generator is not None and generator.device.type == "cpu" else device
    return torch.randn(shape, generator=generator, device=draw_on, dtype=dtype).to(device)


class _Sampler:
    """What DDPM and DDIM share: the timesteps, input checks and x̂0."""

    def __init__(self, schedule: NoiseSchedule, *, prediction_type: PredictionType, clip_sample: bool) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdlab NoiseSchedule; got {type(schedule).__name__}")
        _check_prediction_type(prediction_type)
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample must be True or False; got {clip_sample!r}")
        self.schedule = schedule
        self.alphas_cumprod = schedule.alphas_cumprod  # ᾱ_t, (T,) float32 on the CPU
        self.num_train_timesteps = schedule.num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.final_alpha_cumprod = 1.0  # ᾱ "before" the first timestep: a clean image

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose n evenly spaced timesteps, t = k · (T // n) for k = n−1, …, 0 (diffusers' "leading")."""
        T = self.num_train_timesteps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise TypeError(f"num_inference_steps must be an int; got {type(num_inference_steps).__name__}")
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must lie in [1, {T}] for this schedule; got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1) * (T // num_inference_steps)

    def previous_timestep(self, timestep: int) -> int:
        """The timestep after ``timestep`` in the reverse chain; −1 after the last one."""
        return timestep - self.num_train_timesteps // self.num_inference_steps

    def _check_step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor) -> int:
        """Validate the arguments of ``step`` and return the timestep as an int."""
        if self.timesteps is None:
            raise RuntimeError(f"call set_timesteps(num_inference_steps) before {type(self).__name__}.step")
        for name, x in (("model_output", model_output), ("sample", sample)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise TypeError(f"{name} must be a floating-point torch.Tensor; got {type(x).__name__}")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output must have the shape of sample {tuple(sample.shape)}; got {tuple(model_output.shape)}"
            )
        if model_output.device != sample.device:
            raise ValueError(f"model_output is on {model_output.device} but sample is on {sample.device}")
        if model_output.dtype != sample.dtype:
            raise ValueError(f"model_output has dtype {model_output.dtype} but sample has dtype {sample.dtype}")
        if isinstance(timestep, torch.Tensor) and timestep.numel() != 1:
            raise ValueError(f"timestep must be one timestep for the whole batch; got shape {tuple(timestep.shape)}")
        t = int(self.schedule.check_timesteps(timestep, name="timestep"))
        if t not in self.timesteps:
            ts = self.timesteps.tolist()
            shown = ", ".join(map(str, ts)) if len(ts) <= 6 else ", ".join(map(str, ts[:3])) + ", ..., 0"
            raise ValueError(f"timestep {t} is not one of this sampler's timesteps [{shown}]")
        return t

    def _alpha_prods(self, t: int, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ᾱ_t and ᾱ_{t−1} (previous timestep) as 0-dim tensors: float32 as diffusers, float64 for float64 samples."""
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        prev_t = self.previous_timestep(t)
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(self.final_alpha_cumprod)
        return self.alphas_cumprod[t].to(dtype), alpha_prod_t_prev.to(dtype)

    def _pred_original_sample(self, model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor):
        """x̂0 from the model output, clamped to [−1, 1] if ``clip_sample``."""
        x0 = predict_original_sample(model_output, sample, alpha_prod_t, prediction_type=self.prediction_type)
        return x0.clamp(-1.0, 1.0) if self.clip_sample else x0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, prediction_type={self.prediction_type!r})"


class DDPMSampler(_Sampler):
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
    ) -> None:
        super().__init__(schedule, prediction_type=prediction_type, clip_sample=clip_sample)
        if variance_type not in get_args(VarianceType):
            raise ValueError(f"variance_type must be one of {get_args(VarianceType)}; got {variance_type!r}")
        self.variance_type = variance_type

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
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
            generator: for the noise z.
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
        return StepOutput(prev_sample, x0)


class DDIMSampler(_Sampler):
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
    ) -> None:
        super().__init__(schedule, prediction_type=prediction_type, clip_sample=clip_sample)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be a number in [0, 1]; got {eta!r}")
        self.eta = float(eta)
        # ᾱ "before" the first timestep: 1 (a clean image) or ᾱ_0 (diffusers' set_alpha_to_one).
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """One DDIM step x_t → x_{t−1} (Song et al. 2021, eq. 12):

            x_{t−1} = √ᾱ_{t−1} · x̂0  +  √(1 − ᾱ_{t−1} − σ_t²) · ε̂  +  σ_t z,   z ~ N(0, I),
            σ_t(η) = η · √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_{t−1})   (eq. 16).

        The first term is the predicted clean image, the second "the direction pointing to x_t".
        Noise is drawn only when η > 0.

        Args:
            model_output: ε̂ or v̂ from the model, (B, C, H, W).
            timestep: t, one of ``self.timesteps``.
            sample: x_t, (B, C, H, W).
            generator: for the noise z.
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
        return StepOutput(prev_sample, x0)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    positive_ints = all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    if not isinstance(shape, (tuple, list, torch.Size)) or not positive_ints:
        raise ValueError(f"shape must be a tuple of positive ints such as (B, C, H, W); got {shape!r}")
    return tuple(shape)


def _record(trajectory: Trajectory, t: torch.Tensor, out: Any) -> None:
    """Keep a CPU copy of x_{t−1} and, if the step reports it, x̂0."""
    trajectory.timesteps.append(t.item() if isinstance(t, torch.Tensor) else t)
    trajectory.samples.append(out.prev_sample.detach().cpu())
    if getattr(out, "pred_original_sample", None) is not None:
        trajectory.pred_original_samples.append(out.pred_original_sample.detach().cpu())


def sample(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    *,
    sampler: DDPMSampler | DDIMSampler,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    progress: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Generate images: start from pure noise x_T ~ N(0, I) and step down to x_0.

    Args:
        model_fn: ``model_fn(x_t, t)`` returns the model output (B, C, H, W); ``t`` is a
            0-dim int64 tensor from ``sampler.timesteps``, as diffusers' pipelines pass it.
        shape: (B, C, H, W) of the images to make.
        sampler: a DDPMSampler or DDIMSampler.
        num_inference_steps: how many reverse steps, 1..T.
        generator: seeds x_T and every step's noise.
        device, dtype: where x_T is created (default: CPU, float32).
        return_trajectory: also return a Trajectory of every x_t and x̂0.
        progress: show a tqdm progress bar.
    Returns:
        x_0, (B, C, H, W); with ``return_trajectory``, the pair (x_0, trajectory).
    """
    sampler.set_timesteps(num_inference_steps)
    x = randn_tensor(_check_shape(shape), generator=generator, device=device, dtype=dtype)  # x_T
    trajectory = Trajectory(samples=[x.cpu()] if return_trajectory else [])
    for t in tqdm(sampler.timesteps, desc=type(sampler).__name__, disable=not progress):
        model_output = model_fn(x, t)  # ε̂ (or v̂) at step t
        out = sampler.step(model_output, t, x, generator=generator)  # x_t → x_{t−1}
        x = out.prev_sample
        if return_trajectory:
            _record(trajectory, t, out)
    return (x, trajectory) if return_trajectory else x


def run_diffusers_scheduler(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    scheduler: Any,
    *,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    step_kwargs: Mapping[str, Any] | None = None,
    return_trajectory: bool = False,
    progress: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """The loop of :func:`sample`, driving any diffusers scheduler (DDIM, DPM-Solver++, Euler, ...).

    Two lines differ from our loop: some schedulers start from N(0, σ_max² I)
    (``init_noise_sigma``) and want the model's input rescaled (``scale_model_input``).
    DDPM and DDIM leave both at 1.

    Args:
        scheduler: a diffusers scheduler, e.g. ``DPMSolverMultistepScheduler(**schedule.diffusers_config())``.
        step_kwargs: extra keyword arguments for ``scheduler.step``, e.g. ``{"eta": 0.5}`` for DDIM.
        The other arguments are those of :func:`sample`.
    Returns:
        x_0, (B, C, H, W); with ``return_trajectory``, the pair (x_0, trajectory).
    """
    if not all(hasattr(scheduler, name) for name in ("set_timesteps", "step", "scale_model_input")):
        raise TypeError(f"scheduler must be a diffusers scheduler; got {type(scheduler).__name__}")
    step_kwargs = dict(step_kwargs or {})
    if generator is not None and "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = generator
    scheduler.set_timesteps(num_inference_steps)
    x = randn_tensor(_check_shape(shape), generator=generator, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma  # x_T
    trajectory = Trajectory(samples=[x.cpu()] if return_trajectory else [])
    for t in tqdm(scheduler.timesteps, desc=type(scheduler).__name__, disable=not progress):
        model_output = model_fn(scheduler.scale_model_input(x, t), t)
        out = scheduler.step(model_output, t, x, **step_kwargs)
        x = out.prev_sample
        if return_trajectory:
            _record(trajectory, t, out)
    return (x, trajectory) if return_trajectory else x
