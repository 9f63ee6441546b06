"""The one training loop of the course, `fit`, and the diffusion recipe built on it.

`fit(model, loss_fn, data_fn, config=...)` trains any model the course trains: the noise
predictor of chapter 2, the cat-or-dog judge of chapter 3, and the contrastive text/image
model, autoencoder and conditioned U-Net of chapters 4–6. A new model brings a loss
function, not a new loop. Around each step: AdamW with warm-up and cosine decay, an EMA of
the weights, gradient clipping, bf16 autocast and channels-last on CUDA (optionally
``torch.compile``), a progress bar, seeded data and noise, and atomic safetensors
checkpoints from which a run resumes exactly.

`train(model, schedule, data_fn)` is `fit` with the recipe of chapter 2: pick clean images,
draw noise and a random timestep per image, corrupt the images to that step with the closed
form, and regress the network's output onto the noise (DDPM's ε-loss, Ho et al. 2020, eq. 14).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sdlab.checkpoints import load_checkpoint, save_checkpoint
from sdlab.progress import bar as progress_bar
from sdlab.random import randint, randn_tensor, seed_global, seeded_global_rng
from sdlab.schedules import NoiseSchedule
from sdlab.unet import predict_noise
from sdlab.validation import int_in_range, number_in_range, one_of, positive_int, positive_number

__all__ = ["TrainConfig", "TrainResult", "DataFn", "LossFn", "fit", "diffusion_loss", "train", "per_timestep_loss"]

# data_fn(batch_size, generator) -> one batch, made on the generator's device: for `train`, clean
# images (B, C, H, W) or (images, conditioning) where conditioning holds keyword arguments for the model.
DataFn = Callable[[int, torch.Generator], Any]
# loss_fn(model, batch, generator) -> a scalar loss tensor; the generator seeds any noise it draws.
LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]


Precision = Literal["auto", "fp32", "bf16"]


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
    precision: Precision = "auto"
    compile: bool = False
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)

    def __post_init__(self) -> None:
        checked = {
            "steps": positive_int(self.steps, "steps"),
            "batch_size": positive_int(self.batch_size, "batch_size"),
            "lr": positive_number(self.lr, "lr"),
            "warmup_steps": int_in_range(self.warmup_steps, "warmup_steps", 0),
            "weight_decay": number_in_range(self.weight_decay, "weight_decay", 0),
            "ema_decay": number_in_range(self.ema_decay, "ema_decay", 0, 1, high_open=True),
            "grad_clip": positive_number(self.grad_clip, "grad_clip"),
            "seed": int_in_range(self.seed, "seed", 0),
            "precision": one_of(self.precision, "precision", Precision),
            "checkpoint_every": int_in_range(self.checkpoint_every, "checkpoint_every", 0),
        }
        for name, value in checked.items():  # plain Python numbers, so asdict(config) is JSON
            object.__setattr__(self, name, value)


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
    prediction_type: str = "epsilon",
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """The ε-prediction loss ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (DDPM eq. 14), averaged.

    Args:
        x0: (B, C, H, W) clean images.
        generator: seeds t and ε (drawn on its device, then moved to x0's).
        cond: keyword arguments for the model, e.g. ``{"encoder_hidden_states": (B, L, D)}``.
        t: (B,) timesteps; drawn uniformly from [0, T) when None.
        prediction_type: ``"epsilon"`` (the network predicts ε) or ``"v_prediction"`` (it predicts
            v = √ᾱ_t ε − √(1−ᾱ_t) x0, which at high noise is almost −x0: the picture's content
            weighs in the loss where the layout is decided; Stable Diffusion 2 trains this way).
        snr_gamma: Min-SNR-γ weighting (Hang et al. 2023): each image's loss weighted by
            min(SNR_t, γ) / SNR_t (ε) or min(SNR_t, γ) / (SNR_t + 1) (v), so that the nearly clean
            steps stop dominating; None: no weighting (diffusers' ``--snr_gamma``; 5 is usual).

    Returns:
        A scalar float32 loss.
    """
    one_of(prediction_type, "prediction_type", ("epsilon", "v_prediction"))
    if t is None:
        t = randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.add_noise(x0, noise, t)
    prediction = predict_noise(model, x_t, t, **(cond or {}))
    target = noise if prediction_type == "epsilon" else schedule.velocity(x0, noise, t)
    if snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    snr = schedule.snr(t).to(x0.device)
    weight = snr.clamp(max=positive_number(snr_gamma, "snr_gamma"))
    weight = weight / (snr if prediction_type == "epsilon" else snr + 1)
    per_image = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
    return (weight * per_image).mean()


def _diffusion_step_loss(schedule: NoiseSchedule, model: nn.Module, batch: Any, generator: torch.Generator
                         ) -> torch.Tensor:
    x0, cond = _split(batch)
    return diffusion_loss(model, schedule, x0, generator=generator, cond=cond)


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


@dataclass
class _Run:
    """What one call of `fit` works with: the model, its EMA, optimizer, generator and losses so far."""

    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: TrainConfig
    losses: list[float] = field(default_factory=list)
    start: int = 0

    def save(self, path: Path, step: int) -> None:
        save_checkpoint(path, model=self.model, ema=self.ema, optimizer=self.optimizer, generator=self.generator,
                        step=step, info={"config": asdict(self.config), "losses": self.losses})


def _prepare(model: nn.Module, config: TrainConfig, checkpoint: str | Path | None, resume: bool) -> _Run:
    """Build the EMA, optimizer and generator, and load the checkpoint when resuming."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    run = _Run(model, ema, optimizer, torch.Generator(device).manual_seed(config.seed), config)
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, model=model, ema=ema, optimizer=optimizer, generator=run.generator)
        run.start, run.losses = state["step"], list(state["info"].get("losses", []))
    return run


def _update_ema(run: _Run, step: int) -> None:
    """EMA with warm-up: early on it follows the model closely (as diffusers' EMAModel)."""
    decay = min(run.config.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(run.ema.parameters()), list(run.model.parameters()), 1 - decay)


def _step(run: _Run, forward: nn.Module, loss_fn: LossFn, data_fn: DataFn, step: int, bf16: bool) -> torch.Tensor:
    """One optimisation step; the loss stays on the device (no sync)."""
    for group in run.optimizer.param_groups:
        group["lr"] = _learning_rate(run.config, step)
    device = run.generator.device
    # Layers that draw from the global RNG (dropout) get a seed of their own each step: repeatable, resumable.
    seed_global((run.config.seed * 1_000_003 + step) % 2**63, device=device)
    batch = data_fn(run.config.batch_size, run.generator)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn(forward, batch, run.generator)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    _update_ema(run, step)
    return loss.detach()


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data_fn: DataFn,
    *,
    config: TrainConfig = TrainConfig(),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "training",
) -> TrainResult:
    """Train ``model`` on ``loss_fn(model, data_fn(batch_size, generator), generator)``; the course's one loop.

    The run follows the device of ``model`` and is seeded by ``config.seed`` alone: PyTorch's global
    random state is left as it was. With ``checkpoint`` set, state is saved there atomically every
    ``config.checkpoint_every`` steps and at the end; with ``resume=True`` an existing checkpoint is
    loaded first and the run continues exactly where it stopped (same data, same noise, same weights).

    Returns:
        TrainResult with the model (eval mode), its EMA copy, one loss per step and the throughput.
    """
    device = next(model.parameters()).device
    bf16 = _use_bf16(config, device)
    with seeded_global_rng(config.seed, device=device):
        run = _prepare(model, config, checkpoint, resume)
        forward = torch.compile(run.model) if config.compile else run.model
        run.model.train()
        began = time.perf_counter()
        bar = progress_bar(range(run.start, config.steps), initial=run.start, total=config.steps, disable=not progress,
                   desc=desc)
        pending: list[torch.Tensor] = []  # logged every 25 steps: no GPU sync per step
        for step in bar:
            pending.append(_step(run, forward, loss_fn, data_fn, step, bf16))
            last = step + 1 == config.steps
            save_now = checkpoint is not None and (last or (config.checkpoint_every > 0
                                                            and (step + 1) % config.checkpoint_every == 0))
            if len(pending) == 25 or last or save_now:
                run.losses.extend(torch.stack(pending).tolist())
                pending.clear()
                bar.set_postfix(loss=f"{sum(run.losses[-25:]) / len(run.losses[-25:]):.4f}")
            if save_now:
                run.save(Path(checkpoint), step + 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - began
    rate = (config.steps - run.start) * config.batch_size / seconds if seconds > 0 else 0.0
    return TrainResult(model=run.model.eval(), ema=run.ema.eval(), losses=run.losses, seconds=seconds,
                       images_per_second=rate)


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
    """Train ``model`` to predict noise on batches from ``data_fn``: :func:`fit` with :func:`diffusion_loss`.

    ``data_fn(batch_size, generator)`` returns clean images (B, C, H, W), or ``(images, conditioning)``
    where conditioning holds keyword arguments for the model (``encoder_hidden_states``, ``class_labels``).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a sdlab NoiseSchedule; got {type(schedule).__name__}")
    loss_fn = functools.partial(_diffusion_step_loss, schedule)
    return fit(model, loss_fn, data_fn, config=config, checkpoint=checkpoint, resume=resume, progress=progress)


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
    bins = int_in_range(bins, "bins", 1, schedule.num_train_timesteps)
    edges = torch.linspace(0, schedule.num_train_timesteps, bins + 1).long()
    device = next(model.parameters()).device
    generator = generator or torch.Generator(device).manual_seed(0)
    results = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        x0, cond = _split(data_fn(batch_size, generator))
        t = randint(lo, hi, (batch_size,), generator=generator, device=x0.device)
        results.append(diffusion_loss(model, schedule, x0, generator=generator, cond=cond, t=t).item())
    return (edges[:-1] + edges[1:]).float() / 2, torch.tensor(results)
