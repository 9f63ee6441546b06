"""Benchmark sdlab's trainer against the Hugging Face diffusion course's unit-1 training loop.

Both train in the same run, on the same captioned scenes (32×32, ``sd.data.make_scenes``) and
the same number of images:

- **baseline**: the loop of the Hugging Face diffusion course, unit 1 ("Introduction to
  diffusers"): ``UNet2DModel(sample_size=32, layers_per_block=2, block_out_channels=(64, 128, 128, 256),
  DownBlock2D ×2 + AttnDownBlock2D ×2, ...)``, ``DDPMScheduler(num_train_timesteps=1000,
  beta_schedule="squaredcos_cap_v2")``, ``AdamW(lr=4e-4)``, fp32, batches from a shuffled
  ``DataLoader`` moved to the device, noise drawn on the CPU, ``loss.item()`` every step.
- **sdlab**: ``sd.train.train`` on the same ``UNet2DModel`` (same initial weights) with the same
  cosine schedule and learning rate, plus its own extras (warm-up, EMA, gradient clipping). On CUDA
  it uses bf16 autocast, ``torch.compile``, fused AdamW and channels-last, at each ``--batch-sizes``.
- **sdlab UNet** (unless ``--skip-sdlab-unet``): ``sd.train.train`` on the course's own 1.2 M-weight
  UNet (the shipped ``scenes32`` model's config), for scale.

For each run it prints images/s, the final loss (mean over the last 10 % of steps), peak memory
(CUDA: ``torch.cuda.max_memory_allocated`` of that run; CPU: the process's peak RSS so far, which
only grows) and, for sdlab, the speed ratio sdlab / baseline. It also reports the time to reach a
loss level at which samples are recognisable: the level is read from the shipped ``scenes32`` run's
loss history: its moving average at the end of that 1 000-step run (``RECOGNISABLE_STEP``), where 50-step
DDIM samples of its (non-EMA) weights show animal shapes on flat backgrounds, about half of them clearly,
while samples at step 500 are still coloured blobs; ``--target-loss`` overrides it. Times to the level
assume a constant rate over a run (the untimed warm-up steps absorb compilation).

Run it on a CPU (about 4 minutes on a 2-core Xeon with one thread)::

    .venv/bin/python scripts/bench_train.py --device cpu --images 1024 --threads 1

On a shared machine keep ``--threads 1``: with as many threads as cores, any other busy process
slows PyTorch's CPU kernels several-fold and the numbers mean nothing.

Run it on a GPU (Colab, an H100): install the repository (``pip install -e .``), then::

    python scripts/bench_train.py --device cuda --images 64000 --batch-sizes 64,256,512

(fp32 baseline at batch 64; sdlab in bf16 with torch.compile; add ``--no-compile`` to compare
without compilation, ``--precision fp32`` for sdlab in fp32).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import sdlab as sd

RECOGNISABLE_STEP = 1000  # step of the shipped scenes32 run whose loss level defines "recognisable" (its end)
SMOOTH = 100  # steps in the moving average that defines a run's loss level


@dataclass
class RunResult:
    """One timed training run."""

    name: str
    batch_size: int
    images: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per step
    peak_memory: str = "not measured"

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail)


HF_COURSE_UNET = dict(  # the UNet2DModel of the Hugging Face diffusion course, unit 1, at 32×32
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(64, 128, 128, 256),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
)


def hf_course_unet(**overrides) -> nn.Module:
    """A randomly initialised ``UNet2DModel(**HF_COURSE_UNET)`` (about 18 M weights); ``overrides`` for tests."""
    from diffusers import UNet2DModel

    return UNet2DModel(**{**HF_COURSE_UNET, **overrides})


def scene_pool(n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` training scenes (n, 3, 32, 32) in [-1, 1] on the CPU: the data both trainers see."""
    return sd.data.make_scenes(n, resolution=32, generator=torch.Generator().manual_seed(seed)).images


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (this run)"
    if device.type == "cpu":
        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS so far)"
    return "not measured"


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def baseline_loop(model: nn.Module, pool: torch.Tensor, *, steps: int, batch_size: int, device: torch.device,
                  lr: float = 4e-4, seed: int = 0) -> list[float]:
    """The unit-1 training loop of the Hugging Face diffusion course, as written there; returns the losses."""
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(pool, batch_size=batch_size, shuffle=True, drop_last=True)
    losses: list[float] = []
    while len(losses) < steps:
        for batch in loader:
            clean_images = batch.to(device)
            noise = torch.randn(clean_images.shape).to(clean_images.device)
            bs = clean_images.shape[0]
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,),
                                      device=clean_images.device).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            noise_pred = model(noisy_images, timesteps, return_dict=False)[0]
            loss = F.mse_loss(noise_pred, noise)
            loss.backward(loss)  # sic: the course passes the loss as the gradient (AdamW barely notices)
            losses.append(loss.item())
            optimizer.step()
            optimizer.zero_grad()
            if len(losses) == steps:
                break
    return losses


def run_baseline(make_model: Callable[[], nn.Module], pool: torch.Tensor, *, images: int, batch_size: int,
                 device: torch.device, lr: float = 4e-4, warmup_steps: int = 1) -> RunResult:
    """Time ``baseline_loop`` on ``images`` images (after ``warmup_steps`` untimed steps on a throwaway model)."""
    steps = max(1, images // batch_size)
    if warmup_steps:
        baseline_loop(make_model().to(device), pool, steps=warmup_steps, batch_size=batch_size, device=device, lr=lr)
    model = make_model().to(device).train()
    _reset_memory(device)
    began = time.perf_counter()
    losses = baseline_loop(model, pool, steps=steps, batch_size=batch_size, device=device, lr=lr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return RunResult("baseline (HF course loop)", batch_size, steps * batch_size, time.perf_counter() - began,
                     losses, _peak_memory(device))


def run_sdlab(make_model: Callable[[], nn.Module], pool: torch.Tensor, *, images: int, batch_size: int,
              device: torch.device, name: str = "sd.train.train", lr: float = 4e-4, compile: bool = False,
              precision: str = "auto", warmup_steps: int = 1) -> RunResult:
    """Time ``sd.train.train`` on ``images`` images drawn from ``pool`` (moved to the device once)."""
    data = pool.to(device)

    def data_fn(n: int, generator: torch.Generator) -> torch.Tensor:
        return data[torch.randint(0, len(data), (n,), generator=generator, device=generator.device)]

    schedule = sd.NoiseSchedule("cosine")
    steps = max(1, images // batch_size)

    def config(n_steps: int) -> sd.train.TrainConfig:
        return sd.train.TrainConfig(steps=n_steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, n_steps // 20),
                                    precision=precision, compile=compile)

    if warmup_steps:
        sd.train.train(make_model().to(device), schedule, data_fn, config=config(warmup_steps), progress=False)
    model = make_model().to(device)
    _reset_memory(device)
    result = sd.train.train(model, schedule, data_fn, config=config(steps), progress=False)
    return RunResult(name, batch_size, steps * batch_size, result.seconds, result.losses, _peak_memory(device))


def target_from_losses(losses: list[float], *, every: int, step: int = RECOGNISABLE_STEP,
                       smooth: int = SMOOTH) -> float:
    """The moving average (over ``smooth`` steps) of a loss history recorded every ``every`` steps, at ``step``."""
    index = step // every
    if not 1 <= index <= len(losses):
        raise ValueError(f"step {step} lies outside the history of {len(losses) * every} steps")
    window = losses[max(0, index - max(1, smooth // every)):index]
    return sum(window) / len(window)


def shipped_target() -> tuple[float, int] | None:
    """(loss level, images the shipped run needed to reach it), or None when the weights are missing."""
    try:
        _, info = sd.pretrained.load_pretrained("scenes32")
    except sd.checkpoints.CheckpointError:
        return None
    every = 10  # scripts/train_weights.py keeps every 10th step's loss
    return target_from_losses(info["losses"], every=every), RECOGNISABLE_STEP * info["batch_size"]


def time_to_target(run: RunResult, target: float, *, smooth: int = SMOOTH) -> tuple[int, float] | None:
    """(images, seconds) until the moving average of the run's loss first falls to ``target``, or None."""
    window = max(1, min(smooth, len(run.losses) // 2))
    for i in range(window, len(run.losses) + 1):
        if sum(run.losses[i - window:i]) / window <= target:
            return i * run.batch_size, run.seconds * i / len(run.losses)
    return None


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} cores), {torch.get_num_threads()} threads, torch {torch.__version__}"


def _report(runs: list[RunResult], baseline: RunResult, target: tuple[float, int] | None) -> None:
    print(f"\n{'run':<34} {'batch':>5} {'images':>7} {'seconds':>8} {'images/s':>9} {'final loss':>10} "
          f"{'× baseline':>10}  peak memory")
    for run in runs:
        same_model = "sdlab UNet" not in run.name  # the ratio compares trainers on the same model only
        ratio = f"{run.images_per_second / baseline.images_per_second:.2f}" if same_model else "-"
        print(f"{run.name:<34} {run.batch_size:>5} {run.images:>7} {run.seconds:>8.1f} {run.images_per_second:>9.1f} "
              f"{run.final_loss:>10.4f} {ratio:>10}  {run.peak_memory}")
    if target is None:
        print("\nno shipped scenes32 weights and no --target-loss: time to a recognisable loss level not reported")
        return
    level, shipped_images = target
    print(f"\ntime to a loss level where samples are recognisable ({SMOOTH}-step moving average <= {level:.4f}):")
    for run in runs:
        reached = time_to_target(run, level)
        if reached:
            print(f"  {run.name:<34} batch {run.batch_size:>4}: {reached[0]:>7} images, {reached[1]:8.1f} s")
        else:
            estimate = shipped_images / run.images_per_second if run.images_per_second else float("inf")
            note = (f"the shipped run needed {shipped_images} images: about {estimate:.0f} s at this speed"
                    if "sdlab UNet" in run.name else "run more --images")
            print(f"  {run.name:<34} batch {run.batch_size:>4}: not reached in {run.images} images ({note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    parser.add_argument("--images", type=int, default=640, help="images each run trains on")
    parser.add_argument("--batch-sizes", default=None, help="sdlab batch sizes, e.g. 64,256 (default: 64; "
                        "on CUDA 64,256)")
    parser.add_argument("--baseline-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps first (default 1; CUDA 5)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--no-compile", action="store_true", help="no torch.compile for sdlab on CUDA")
    parser.add_argument("--skip-sdlab-unet", action="store_true")
    parser.add_argument("--target-loss", type=float, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = sd.pick_device() if args.device == "auto" else torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = [int(s) for s in (args.batch_sizes or ("64,256" if cuda else "64")).split(",")]
    warmup = args.warmup_steps if args.warmup_steps is not None else (5 if cuda else 1)
    print(f"machine: {_machine(device)}; {args.images} images per run, warm-up {warmup} untimed steps")

    pool = scene_pool(max(args.images, max(sizes + [args.baseline_batch_size])))

    def make_hf() -> nn.Module:
        torch.manual_seed(0)
        return hf_course_unet()

    def make_sdlab_unet() -> nn.Module:
        torch.manual_seed(0)
        return sd.UNet(sd.UNetConfig(in_channels=3, out_channels=3, sample_size=32))

    print(f"UNet2DModel: {sd.unet.count_parameters(make_hf()):,} weights; sdlab UNet: "
          f"{sd.unet.count_parameters(make_sdlab_unet()):,} weights")
    baseline = run_baseline(make_hf, pool, images=args.images, batch_size=args.baseline_batch_size, device=device,
                            lr=args.lr, warmup_steps=warmup)
    print(f"baseline: {baseline.images_per_second:.1f} images/s")
    runs = [baseline]
    compile_ = cuda and not args.no_compile
    extras = ", bf16" if cuda and args.precision != "fp32" else ""
    extras += ", compiled" if compile_ else ""
    for size in sizes:
        runs.append(run_sdlab(make_hf, pool, images=args.images, batch_size=size, device=device, lr=args.lr,
                              compile=compile_, precision=args.precision, warmup_steps=warmup,
                              name=f"sd.train.train, UNet2DModel{extras}"))
        print(f"sdlab, batch {size}: {runs[-1].images_per_second:.1f} images/s")
        if not args.skip_sdlab_unet:
            runs.append(run_sdlab(make_sdlab_unet, pool, images=args.images, batch_size=size, device=device,
                                  lr=args.lr, compile=compile_, precision=args.precision, warmup_steps=warmup,
                                  name=f"sd.train.train, sdlab UNet{extras}"))
    target = shipped_target()
    if args.target_loss is not None:
        target = (args.target_loss, target[1] if target else 0)
    _report(runs, baseline, target)


if __name__ == "__main__":
    main()
