"""Time sampling: sdlab's fast sampler against the Hugging Face diffusion course's DDPM loop, in one run.

Baseline: the loop of the Hugging Face diffusion course (unit 1): a diffusers ``UNet2DModel``
(32×32, 3 channels, block_out_channels (64, 128, 128, 256), layers_per_block 2, attention in
the two lowest levels), ``DDPMScheduler`` with 1000 steps, fp32, ``model(x, t).sample`` then
``scheduler.step``. Its weights are random (no hub here): the time of a step does not depend
on them. The issue author measured 15.7 s for 64 images on an H100.

sdlab: the shipped ``catdog32`` U-Net with the chapter's fastest sampler at equal quality
(by default DPM-Solver++ 2M, 20 steps, x̂0 clipped to [-1, 1], "leading" timesteps as in
chapter 3; ``--sampler ddim-eta1 --steps 50`` is the stochastic alternative), optionally
fp16/bf16 and ``torch.compile`` on CUDA. With ``--quality-images N`` it also checks "equal quality" the
chapter's way: N images from sdlab's 1000-step DDPM and N from the fast sampler, scored by
the course's cat-vs-dog classifier (confidence, ambiguous share, Fréchet distance in its
feature space against the 200 held-out test silhouettes).

    # GPU (Colab, H100, ...): the full comparison
    python scripts/bench_sampling.py --device cuda --dtype fp16 --compile --quality-images 512
    # CPU, reduced: 8 images, 50 of the baseline's 1000 steps timed and extrapolated
    python scripts/bench_sampling.py --device cpu --images 8 --baseline-steps 50

When ``--baseline-steps`` k < 1000 the baseline runs its first k steps of the 1000-step
schedule and its time is extrapolated linearly (× 1000 / k; every DDPM step costs the same
network call). The output says so. Both sides run in this process, one after the other,
after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import sdlab as sd

HF_COURSE_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(64, 128, 128, 256),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_baseline(n: int, steps: int, device: torch.device) -> dict:
    """The course loop on ``n`` images: time ``steps`` of its 1000 DDPM steps, extrapolate to 1000."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(**HF_COURSE_UNET).to(device).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    scheduler.set_timesteps(1000)
    sample = torch.randn(n, 3, 32, 32).to(device)
    with torch.no_grad():  # warm-up: kernels, allocator
        for t in scheduler.timesteps[:3]:
            model(sample, t)
    _sync(device)
    start = time.perf_counter()
    for t in scheduler.timesteps[:steps]:
        with torch.no_grad():
            residual = model(sample, t).sample
        sample = scheduler.step(residual, t, sample).prev_sample
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images": n, "steps_timed": steps, "seconds_timed": seconds, "seconds_1000_steps": seconds * 1000 / steps,
            "extrapolated": steps < 1000, "parameters": sum(p.numel() for p in model.parameters())}


def make_model_fn(device: torch.device, dtype: torch.dtype, compile_model: bool):
    """The shipped catdog32 U-Net as ``model_fn(x, t)``, in ``dtype`` (fp16/bf16 on CUDA), optionally compiled."""
    model, info = sd.checkpoints.load_pretrained("catdog32", device=device)
    model = model.to(dtype)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model, mode="max-autotune-no-cudagraphs") if compile_model else model

    @torch.inference_mode()
    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return forward(x.to(dtype), t).to(x.dtype)

    return model_fn, sd.NoiseSchedule(info["schedule"]), sd.unet.count_parameters(model)


def run_sampler(model_fn, schedule, name: str, steps: int, n: int, device: torch.device, seed: int) -> torch.Tensor:
    """n images from sdlab's DDPM or DDIM (η = 0 or 1), or diffusers' DPM-Solver++ (x̂0 clipped to [-1, 1] in all)."""
    shape, generator = (n, 1, 32, 32), torch.Generator().manual_seed(seed)
    if name == "dpmsolver++":
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler(**schedule.diffusers_config(), algorithm_type="dpmsolver++",
                                                thresholding=True, sample_max_value=1.0, timestep_spacing="leading")
        return sd.samplers.run_diffusers_scheduler(model_fn, shape, scheduler, num_inference_steps=steps,
                                                   generator=generator, device=device, progress=False)
    if name == "ddpm":
        sampler = sd.samplers.DDPMSampler(schedule)
    else:
        sampler = sd.samplers.DDIMSampler(schedule, eta=1.0 if name == "ddim-eta1" else 0.0)
    return sd.samplers.sample(model_fn, shape, sampler=sampler, num_inference_steps=steps, generator=generator,
                              device=device, progress=False)


def time_sdlab(model_fn, schedule, name: str, steps: int, n: int, device: torch.device) -> dict:
    run_sampler(model_fn, schedule, name, min(steps, 3), n, device, seed=1)  # warm-up (and compilation)
    _sync(device)
    start = time.perf_counter()
    run_sampler(model_fn, schedule, name, steps, n, device, seed=0)
    _sync(device)
    return {"images": n, "sampler": name, "steps": steps, "seconds": time.perf_counter() - start}


def check_quality(model_fn, schedule, name: str, steps: int, n: int, device: torch.device) -> dict:
    """The chapter's metric for sdlab's 1000-step DDPM and for the fast sampler, on n images each."""
    classifier, _ = sd.evaluate.load_classifier(device=device)
    reference, _ = sd.evaluate.real_images(split="test")
    out = {}
    for label, (sampler, k) in {"ddpm_1000": ("ddpm", 1000), "fast": (name, steps)}.items():
        images = torch.cat([run_sampler(model_fn, schedule, sampler, k, len(chunk), device, seed=100 + i)
                            for i, chunk in enumerate(torch.arange(n).split(256))]).clamp(-1, 1)
        out[label] = sd.evaluate.sample_quality(classifier, images, reference.to(device)).as_dict()
    fast, slow = out["fast"], out["ddpm_1000"]
    out["equal_quality"] = bool(fast["frechet_distance"] <= 1.25 * slow["frechet_distance"]
                                and fast["confidence"] >= slow["confidence"] - 0.01)
    out["rule"] = "fast FD <= 1.25 x DDPM-1000 FD and fast confidence >= DDPM-1000 confidence - 0.01"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--baseline-steps", type=int, default=1000, help="steps of the baseline actually timed")
    parser.add_argument("--sampler", choices=["dpmsolver++", "ddim", "ddim-eta1", "ddpm"], default="dpmsolver++")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="sdlab's U-Net only")
    parser.add_argument("--compile", action="store_true", help="torch.compile sdlab's U-Net")
    parser.add_argument("--quality-images", type=int, default=0, help="0: skip the quality check")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not 1 <= args.baseline_steps <= 1000:
        parser.error(f"--baseline-steps must lie in [1, 1000]; got {args.baseline_steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = sd.pick_device() if args.device == "auto" else torch.device(args.device)
    if args.dtype != "fp32" and device.type != "cuda":
        parser.error(f"--dtype {args.dtype} is for CUDA; on {device.type} use fp32")
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device.type} ({machine}); torch {torch.__version__}")

    baseline = time_baseline(args.images, args.baseline_steps, device)
    model_fn, schedule, params = make_model_fn(device, DTYPES[args.dtype], args.compile)
    ours = time_sdlab(model_fn, schedule, args.sampler, args.steps, args.images, device)
    ours.update(parameters=params, dtype=args.dtype, compiled=args.compile)
    result = {"device": device.type, "machine": machine, "baseline": baseline, "sdlab": ours,
              "speedup": baseline["seconds_1000_steps"] / ours["seconds"]}
    if args.quality_images:
        result["quality"] = check_quality(model_fn, schedule, args.sampler, args.steps, args.quality_images, device)

    label = f"EXTRAPOLATED from {args.baseline_steps} timed steps" if baseline["extrapolated"] else "measured"
    print(f"baseline (HF course loop, DDPM 1000 steps, fp32, {baseline['parameters'] / 1e6:.1f} M parameters): "
          f"{baseline['seconds_1000_steps']:.2f} s for {args.images} images ({label}; "
          f"{baseline['seconds_timed']:.2f} s for the {args.baseline_steps} steps timed)")
    print(f"sdlab ({args.sampler}, {args.steps} steps, {args.dtype}{', compiled' if args.compile else ''}, "
          f"{params / 1e6:.1f} M parameters): {ours['seconds']:.3f} s for {args.images} images")
    print(f"speed-up: {result['speedup']:.1f}x{' (baseline extrapolated)' if baseline['extrapolated'] else ''}")
    if "quality" in result:
        q = result["quality"]
        for key in ("ddpm_1000", "fast"):
            print(f"quality {key:>9}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in q[key].items()))
        print(f"equal quality: {q['equal_quality']} ({q['rule']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
