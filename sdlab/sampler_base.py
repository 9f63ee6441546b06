"""The part every sampler shares: x̂0 and ε̂ from a model's output, and diffusers' scheduler protocol.

`sdlab.samplers` builds DDPM and DDIM on :class:`SamplerBase`; chapters reach these names
through `sd.samplers` (``sd.samplers.predict_original_sample``), where they are re-exported.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from diffusers.configuration_utils import FrozenDict

from sdlab.schedules import NoiseSchedule
from sdlab.validation import as_int, int_in_range, is_real_number, one_of

__all__ = ["PredictionType", "TimestepSpacing", "StepOutput", "predict_original_sample", "predict_epsilon",
           "SamplerBase"]

PredictionType = Literal["epsilon", "v_prediction"]
TimestepSpacing = Literal["leading", "trailing"]


class StepOutput(NamedTuple):
    """What one reverse step returns (diffusers' field names)."""

    prev_sample: torch.Tensor  # x_{t−1}: (B, C, H, W)
    pred_original_sample: torch.Tensor  # x̂0 at step t: (B, C, H, W)


def _check_prediction_type(prediction_type: str) -> None:
    one_of(prediction_type, "prediction_type", PredictionType)


def _check_alpha_prod(alpha_prod_t: float | torch.Tensor) -> None:
    """ᾱ_t must lie in (0, 1]: outside it the square roots are complex or the division infinite."""
    if not (isinstance(alpha_prod_t, torch.Tensor) or is_real_number(alpha_prod_t)):
        raise TypeError(f"alpha_prod_t must be a number or a tensor; got {type(alpha_prod_t).__name__}")
    a = torch.as_tensor(alpha_prod_t, dtype=torch.float64)
    if a.numel() == 0 or not bool(((a > 0) & (a <= 1)).all()):
        bad = a.flatten()[~((a > 0) & (a <= 1)).flatten()][:1].tolist() if a.numel() else "an empty tensor"
        raise ValueError(f"alpha_prod_t (ᾱ_t) must lie in (0, 1]; got {bad[0] if isinstance(bad, list) else bad}")


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
    _check_alpha_prod(alpha_prod_t)
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
    _check_alpha_prod(alpha_prod_t)
    if prediction_type == "epsilon":
        return model_output
    return alpha_prod_t**0.5 * model_output + (1 - alpha_prod_t) ** 0.5 * sample


class SamplerBase:
    """What DDPM and DDIM share: the timesteps, the scheduler protocol of diffusers, input checks and x̂0.

    The protocol is what diffusers' pipelines call on a scheduler: ``set_timesteps(n, device=)``,
    ``timesteps``, ``init_noise_sigma``, ``scale_model_input``, ``step(...)``, ``order``, ``add_noise``
    and a ``config`` that rebuilds the sampler (``type(sampler).from_config(sampler.config)``). Its keys
    are diffusers' own, so ``diffusers.DDIMScheduler.from_config(DDIMSampler(...).config)`` works too.
    """

    order = 1  # one model evaluation per step
    init_noise_sigma = 1.0  # x_T ~ N(0, I): the loop's starting noise needs no scaling

    def __init__(self, schedule: NoiseSchedule, *, prediction_type: PredictionType, clip_sample: bool,
                 steps_offset: int = 0, timestep_spacing: TimestepSpacing = "leading") -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdlab NoiseSchedule; got {type(schedule).__name__}")
        _check_prediction_type(prediction_type)
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample must be True or False; got {clip_sample!r}")
        steps_offset = int_in_range(steps_offset, "steps_offset", 0)
        self.schedule = schedule
        self.alphas_cumprod = schedule.alphas_cumprod  # ᾱ_t, (T,) float32 on the CPU
        self.num_train_timesteps = schedule.num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.steps_offset = steps_offset
        self.timestep_spacing = one_of(timestep_spacing, "timestep_spacing", TimestepSpacing)
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.final_alpha_cumprod = 1.0  # ᾱ "before" the first timestep: a clean image

    @property
    def config(self) -> FrozenDict:
        """The settings that rebuild this sampler, under diffusers' names (read-only)."""
        return FrozenDict({**self.schedule.diffusers_config(), "prediction_type": self.prediction_type,
                           "clip_sample": self.clip_sample, "steps_offset": self.steps_offset,
                           "timestep_spacing": self.timestep_spacing, **self._own_config()})

    def _own_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> SamplerBase:
        """Rebuild a sampler from ``sampler.config`` (or a diffusers scheduler's config of the same schedule)."""
        values = {**dict(config), **overrides}
        schedule = NoiseSchedule.from_diffusers_config(values)
        names = set(inspect.signature(cls.__init__).parameters) - {"self", "schedule"}
        return cls(schedule, **{k: v for k, v in values.items() if k in names})

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose n evenly spaced timesteps, as diffusers' DDPM and DDIM schedulers do.

        "leading": t = k · (T // n) + steps_offset for k = n−1, …, 0 (the first step is below T − 1).
        "trailing": t = round(T − k · T / n) − 1 for k = 0, …, n−1, so that sampling starts at the
        last timestep T − 1 (Lin et al. 2024, table 2); ``steps_offset`` does not apply.
        ``timesteps`` becomes an int64 tensor of shape (n,) on ``device`` (default: the CPU).
        """
        T = self.num_train_timesteps
        num_inference_steps = as_int(num_inference_steps, "num_inference_steps")
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must lie in [1, {T}] for this schedule; got {num_inference_steps}")
        if self.timestep_spacing == "trailing":
            timesteps = torch.from_numpy(np.round(np.arange(T, 0, -T / num_inference_steps)).astype(np.int64)) - 1
        else:
            timesteps = torch.arange(num_inference_steps - 1, -1, -1) * (T // num_inference_steps) + self.steps_offset
        if int(timesteps[0]) >= T:
            raise ValueError(f"steps_offset={self.steps_offset} with {num_inference_steps} steps reaches "
                             f"t = {int(timesteps[0])}, past the last timestep {T - 1}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = timesteps.to(device or "cpu")

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """The model's input at step t: x_t itself (DDPM and DDIM need no rescaling, unlike Euler)."""
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: int | torch.Tensor
                  ) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, as :meth:`NoiseSchedule.add_noise` (image-to-image starts here)."""
        return self.schedule.add_noise(original_samples, noise, timesteps)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep after ``timestep`` in the reverse chain; below ``steps_offset`` after the last one."""
        return int(timestep) - self.num_train_timesteps // self.num_inference_steps

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
        ts = self.timesteps.tolist()
        if t not in ts:
            shown = ", ".join(map(str, ts)) if len(ts) <= 6 else ", ".join(map(str, ts[:3])) + f", ..., {ts[-1]}"
            raise ValueError(f"timestep {t} is not one of this sampler's timesteps [{shown}]")
        for name, x in (("model_output", model_output), ("sample", sample)):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} holds NaN or infinite values at timestep {t} "
                                 "(did the model or an earlier step diverge?)")
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

    @staticmethod
    def _output(prev_sample: torch.Tensor, x0: torch.Tensor, return_dict: bool) -> StepOutput | tuple:
        return StepOutput(prev_sample, x0) if return_dict else (prev_sample, x0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, prediction_type={self.prediction_type!r})"


