"""Noise schedules and the forward process q(x_t | x_0).

Vocabulary follows diffusers (`betas`, `alphas`, `alphas_cumprod`,
`add_noise`), so `diffusers.DDPMScheduler` can stand in for `NoiseSchedule`.
Schedules are computed in float64 and stored as read-only float32 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch

from sdlab.random import randn_tensor
from sdlab.validation import int_in_range, is_integer, one_of

__all__ = [
    "ScheduleName",
    "SCHEDULE_NAMES",
    "make_betas",
    "NoiseSchedule",
]

ScheduleName = Literal["linear", "cosine", "scaled_linear"]
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)

# Defaults: DDPM (Ho et al. 2020) for linear; Stable Diffusion for scaled_linear.
_DEFAULT_BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": (None, None)}
# The name diffusers uses for each schedule.
_DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def make_betas(
    name: ScheduleName,
    *,
    num_train_timesteps: int = 1000,
    beta_start: float | None = None,
    beta_end: float | None = None,
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """Return the per-step noise variances β_1..β_T as a float64 tensor of shape (T,).

    - ``linear``: β evenly spaced from ``beta_start`` to ``beta_end`` (DDPM, Ho et al. 2020).
    - ``scaled_linear``: √β evenly spaced, then squared (Stable Diffusion, Rombach et al. 2022).
    - ``cosine``: ᾱ(t) = cos²(((t/T + s) / (1 + s)) · π/2), β_t = 1 − ᾱ(t)/ᾱ(t−1), capped
      at ``max_beta`` (improved DDPM, Nichol & Dhariwal 2021, eq. 17).
    """
    name = one_of(name, "schedule name", SCHEDULE_NAMES)
    T = int_in_range(num_train_timesteps, "num_train_timesteps", 2)
    if name == "cosine":
        if beta_start is not None or beta_end is not None:
            raise ValueError("the cosine schedule takes no beta_start/beta_end (it is defined by ᾱ)")
        f = lambda t: math.cos((t / T + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=torch.float64)
    default_start, default_end = _DEFAULT_BETAS[name]
    start = default_start if beta_start is None else beta_start
    end = default_end if beta_end is None else beta_end
    if not 0 < start <= end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1; got beta_start={start}, beta_end={end}")
    if name == "linear":
        return torch.linspace(start, end, T, dtype=torch.float64)
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2


class NoiseSchedule:
    """A fixed noise schedule: β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s.

    Timesteps are 0-based as in diffusers: t = 0 is the first noising step and
    t = T − 1 the last. Tensors are float32 on the CPU and read-only; methods
    move what they need to their inputs' device and dtype.

    Example:
        >>> schedule = NoiseSchedule("cosine")
        >>> x_t = schedule.add_noise(x0, torch.randn_like(x0), t=500)
    """

    def __init__(
        self,
        name: ScheduleName = "linear",
        *,
        num_train_timesteps: int = 1000,
        beta_start: float | None = None,
        beta_end: float | None = None,
    ) -> None:
        betas64 = make_betas(name, num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end)
        alphas_cumprod64 = torch.cumprod(1.0 - betas64, dim=0)
        self.name = one_of(name, "schedule name", SCHEDULE_NAMES)  # plain str and int, as make_betas checked them
        self.num_train_timesteps = len(betas64)
        self.beta_start = None if name == "cosine" else float(betas64[0])
        self.beta_end = None if name == "cosine" else float(betas64[-1])
        self._betas = betas64.float()
        self._alphas = (1.0 - betas64).float()
        self._alphas_cumprod = alphas_cumprod64.float()
        # The square roots come from float64 too: 1 − ᾱ_t taken in float32 near t = 0
        # loses digits (ᾱ_0 ≈ 0.9999), and √ magnifies that error (improved-diffusion does the same).
        self._sqrt_alphas_cumprod = alphas_cumprod64.sqrt().float()
        self._sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod64).sqrt().float()

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, num_train_timesteps={self.num_train_timesteps})"

    # Read-only views: callers get copies, so the schedule never changes while in use.
    @property
    def betas(self) -> torch.Tensor:
        """β_t, shape (T,)."""
        return self._betas.clone()

    @property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t, shape (T,)."""
        return self._alphas.clone()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t = ∏_{s≤t} α_s, shape (T,): the fraction of signal variance left at step t."""
        return self._alphas_cumprod.clone()

    @property
    def timesteps(self) -> torch.Tensor:
        """All training timesteps 0..T−1, shape (T,)."""
        return torch.arange(self.num_train_timesteps)

    def diffusers_config(self) -> dict:
        """Keyword arguments that give a diffusers scheduler the same schedule."""
        config = {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": _DIFFUSERS_NAME[self.name]}
        if self.name != "cosine":
            config.update(beta_start=self.beta_start, beta_end=self.beta_end)
        return config

    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """The schedule a diffusers scheduler's config describes (the inverse of :meth:`diffusers_config`)."""
        by_diffusers_name = {v: k for k, v in _DIFFUSERS_NAME.items()}
        beta_schedule = config.get("beta_schedule", "linear")
        if beta_schedule not in by_diffusers_name or config.get("trained_betas") is not None:
            raise ValueError(f"beta_schedule must be one of {tuple(by_diffusers_name)} (no trained_betas); "
                             f"got {beta_schedule!r}")
        name = by_diffusers_name[beta_schedule]
        betas = {} if name == "cosine" else {k: config[k] for k in ("beta_start", "beta_end") if k in config}
        return cls(name, num_train_timesteps=int(config.get("num_train_timesteps", 1000)), **betas)

    def check_timesteps(self, t: int | torch.Tensor, *, batch_size: int | None = None, name: str = "t") -> torch.Tensor:
        """Validate ``t`` and return it as an int64 tensor of shape (B,) or ().

        ``t`` may be an int (numpy integer scalars included) or an integer tensor.

        Raises:
            TypeError: ``t`` is not an int or an integer tensor.
            ValueError: ``t`` is outside [0, T) or its batch size does not match.
        """
        if is_integer(t):
            t = torch.tensor(int(t))
        elif not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be an int or an integer tensor; got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer timesteps; got dtype {t.dtype}")
        if t.dim() > 1:
            raise ValueError(f"{name} must be a scalar or shape (B,); got shape {tuple(t.shape)}")
        if t.dim() == 1 and batch_size is not None and t.shape[0] != batch_size:
            raise ValueError(f"{name} has {t.shape[0]} timesteps but the batch has {batch_size} images")
        T = self.num_train_timesteps
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise ValueError(f"{name} must lie in [0, {T}) for this schedule; got {bad}")
        return t.long()

    def _coefficient(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather values[t] and shape it to broadcast against ``like`` (B, ...)."""
        out = values.to(device=like.device, dtype=like.dtype)[t.to(like.device)]
        return out.reshape(-1, *([1] * (like.dim() - 1))) if out.dim() else out

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Jump straight to step t: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε (DDPM eq. 4).

        Args:
            x0: clean images, (B, C, H, W) or any (B, ...) shape.
            noise: ε ~ N(0, I), same shape as ``x0``.
            t: one timestep for the whole batch, or one per image, shape (B,).

        Returns:
            x_t, same shape, device and dtype as ``x0``.
        """
        _check_pair(x0, noise)
        t = self.check_timesteps(t, batch_size=x0.shape[0] if x0.dim() else None)
        sqrt_ab = self._coefficient(self._sqrt_alphas_cumprod, t, x0)
        sqrt_one_minus_ab = self._coefficient(self._sqrt_one_minus_alphas_cumprod, t, x0)
        return sqrt_ab * x0 + sqrt_one_minus_ab * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t · ε − √(1 − ᾱ_t) · x0 (Salimans & Ho 2022; diffusers' ``get_velocity``)."""
        _check_pair(x0, noise)
        t = self.check_timesteps(t, batch_size=x0.shape[0] if x0.dim() else None)
        sqrt_ab = self._coefficient(self._sqrt_alphas_cumprod, t, x0)
        sqrt_one_minus_ab = self._coefficient(self._sqrt_one_minus_alphas_cumprod, t, x0)
        return sqrt_ab * noise - sqrt_one_minus_ab * x0

    def add_noise_stepwise(
        self, x0: torch.Tensor, t: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reach step t the slow way: x_s = √(1 − β_s) · x_{s−1} + √β_s · ε_s for s = 0..t.

        Each step draws fresh noise (DDPM eq. 2). The result has the same
        distribution as :meth:`add_noise` at step t, which chapter 1 checks.
        """
        _check_pair(x0, x0)
        t = int(self.check_timesteps(t))
        x = x0
        betas = self._betas.to(device=x0.device, dtype=x0.dtype)
        for s in range(t + 1):
            eps = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * eps
        return x

    def snr(self, t: int | torch.Tensor | None = None) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at ``t`` (all steps if None), float32."""
        ab = self._alphas_cumprod.double()
        snr = (ab / (1 - ab)).float()
        return snr if t is None else snr[self.check_timesteps(t)]

    def snr_db(self, t: int | torch.Tensor | None = None) -> torch.Tensor:
        """The signal-to-noise ratio in decibels, 10·log10(SNR)."""
        return 10 * torch.log10(self.snr(t))

    def ideal_observer_accuracy(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """How often a perfect observer tells x_a from x_b after noising, for every t: shape (T,).

        The observer knows both candidates and picks the one whose √ᾱ_t-scaled
        copy is nearer to x_t. With Gaussian noise its accuracy is
        Φ(√ᾱ_t · ‖x_a − x_b‖ / (2 √(1 − ᾱ_t))), falling to 1/2 (a coin toss).
        """
        _check_pair(x_a, x_b)
        distance = (x_a.double() - x_b.double()).norm()
        ab = self._alphas_cumprod.double()
        z = ab.sqrt() * distance / (2 * (1 - ab).sqrt())
        return (0.5 * (1 + torch.erf(z / math.sqrt(2)))).float()


def _check_pair(x0: torch.Tensor, noise: torch.Tensor) -> None:
    """Reject inputs that add_noise cannot combine, naming the argument at fault."""
    for name, x in (("x0", x0), ("noise", noise)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
        if torch.isnan(x).any():
            raise ValueError(f"{name} contains NaN values")
    if x0.shape != noise.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
    if x0.device != noise.device:
        raise ValueError(f"x0 is on {x0.device} but noise is on {noise.device}")
