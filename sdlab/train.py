"""The one training loop of the course: teach a network to predict the noise.

Each step follows the recipe of chapter 2: pick clean images, draw noise and a
random timestep per image, corrupt the images to that step with the closed
form, and regress the network's output onto the noise (the ε-prediction loss
of DDPM, Ho et al. 2020, eq. 14). Around it: AdamW with warm-up, an EMA of the
weights, gradient clipping, bf16 autocast and channels-last on CUDA, data made
on the device, a progress bar, and atomic safetensors checkpoints with resume.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sdlab.checkpoints import load_checkpoint, save_checkpoint
from sdlab.schedules import NoiseSchedule
from sdlab.unet import predict_noise

__all__ = ["TrainConfig", "TrainResult", "DataFn", "diffusion_loss", "train", "per_timestep_loss"]

# data_fn(batch_size, generator) -> clean images (B, C, H, W) on the generator's device,
# or (images, conditioning) where conditioning holds keyword arguments for the model.
DataFn = Callable[[int, torch.Generator], "torch.Tensor | tuple[torch.Tensor, dict]"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. ``precision="auto"`` means bf16 on CUDA, fp32 elsewhere."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int; got {getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be positive; got lr={self.lr}, grad_clip={self.grad_clip}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16'; got {self.precision!r}")


@dataclass
class TrainResult:
    """What a run produced: the trained model, its EMA copy, and measurements."""

    model: nn.Module
    ema: nn.Module
    losses: list[float] = field(default_factory=list)  # one per step
    images_per_second: float = 0.0
    seconds: float = 0.0


def _split(batch: torch.Tensor | tuple[torch.Tensor, dict]) -> tuple[torch.Tensor, dict]:
    return batch if isinstance(batch, tuple) else (batch, {})


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ε-prediction loss ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (DDPM eq. 14), averaged.

    Args:
        x0: (B, C, H, W) clean images.
        t: (B,) timesteps; drawn uniformly from [0, T) when None.

    Returns:
        A scalar float32 loss.
    """
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.add_noise(x0, noise, t)
    prediction = predict_noise(model, x_t, t, **(cond or {}))
    return F.mse_loss(prediction.float(), noise.float())


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.precision == "bf16" and device.type != "cuda":
        raise ValueError(f"precision='bf16' needs a CUDA device; training runs on {device}")
    return config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(
    model: nn.Module,
    schedule: NoiseSchedule,
    data_fn: DataFn,
    *,
    config: TrainConfig = TrainConfig(),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` to predict noise on batches from ``data_fn``; return the model, EMA and losses.

    The run follows the device of ``model``. With ``checkpoint`` set, state is
    saved there (atomically) every ``config.checkpoint_every`` steps and at the
    end; with ``resume=True`` an existing checkpoint is loaded first and the run
    continues exactly where it stopped (same data, same noise, same weights).
    """
    device = next(model.parameters()).device
    bf16 = _use_bf16(config, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    generator = torch.Generator(device).manual_seed(config.seed)
    losses: list[float] = []
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, model=model, ema=ema, optimizer=optimizer, generator=generator)
        start, losses = state["step"], list(state["info"].get("losses", []))
    forward = torch.compile(model) if config.compile else model

    model.train()
    began = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress, desc="training")
    pending: list[torch.Tensor] = []  # losses stay on the device until logged: no sync every step
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        x0, cond = _split(data_fn(config.batch_size, generator))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(forward, schedule, x0, generator=generator, cond=cond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():  # EMA with warm-up: early on it follows the model closely (as diffusers' EMAModel)
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        pending.append(loss.detach())
        last = step + 1 == config.steps
        save_now = checkpoint is not None and (last or (config.checkpoint_every and (step + 1) % config.checkpoint_every == 0))
        if len(pending) == 25 or last or save_now:
            losses.extend(torch.stack(pending).tolist())
            pending.clear()
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4f}")
        if save_now:
            save_checkpoint(checkpoint, model=model, ema=ema, optimizer=optimizer, generator=generator,
                            step=step + 1, info={"config": asdict(config), "losses": losses})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    done = config.steps - start
    model.eval()
    ema.eval()
    return TrainResult(model=model, ema=ema, losses=losses, seconds=seconds,
                       images_per_second=done * config.batch_size / seconds if seconds > 0 else 0.0)


@torch.no_grad()
def per_timestep_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    data_fn: DataFn,
    *,
    bins: int = 10,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss in ``bins`` equal bands of timesteps: which noise levels are hard.

    Returns:
        (centres (bins,), losses (bins,)): the middle timestep and mean loss of each band.
    """
    if not isinstance(bins, int) or not 1 <= bins <= schedule.num_train_timesteps:
        raise ValueError(f"bins must be an int in [1, {schedule.num_train_timesteps}]; got {bins!r}")
    edges = torch.linspace(0, schedule.num_train_timesteps, bins + 1).long()
    device = next(model.parameters()).device
    generator = generator or torch.Generator(device).manual_seed(0)
    results = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        x0, cond = _split(data_fn(batch_size, generator))
        t = torch.randint(lo, hi, (batch_size,), generator=generator, device=device)
        results.append(diffusion_loss(model, schedule, x0, generator=generator, cond=cond, t=t).item())
    return (edges[:-1] + edges[1:]).float() / 2, torch.tensor(results)
