r"""Time sampling: sdlab's fast sampler against the Hugging Face diffusion course's DDPM loop, in one run.

Baseline: the loop of the Hugging Face diffusion course (unit 1): a diffusers ``UNet2DModel``
(32×32, 3 channels, block_out_channels (64, 128, 128, 256), layers_per_block 2, attention in
the two lowest levels), ``DDPMScheduler`` with 1000 steps, fp32, ``model(x, t).sample`` then
``scheduler.step``. Its weights are random (no hub here): the time of a step does not depend
on them. The issue author measured 15.7 s for 64 images on an H100.

sdlab: the shipped ``catdog32`` U-Net with one of the chapter's samplers (default DPM-Solver++ 2M,
20 steps, x̂0 clipped to [-1, 1], "leading" timesteps as in chapter 3), optionally fp16/bf16 and
``torch.compile`` on CUDA. "Equal quality" is checked the chapter's way with ``--quality-images N``:
N images from sdlab's 1000-step DDPM and N from each sampler, scored by the course's cat-vs-dog
classifier (confidence, ambiguous share, Fréchet distance in its feature space against the 200
held-out test silhouettes); a sampler is at equal quality when its Fréchet distance is at most
1.25 × DDPM-1000's and its confidence at most 0.01 lower. With ``--candidates`` the script checks
several (sampler, steps) first and times the one with the fewest steps at equal quality (every
step is one network call), falling back to DDPM-1000 itself.

    # GPU (Colab, H100, ...): the full comparison
    python scripts/bench_sampling.py --device cuda --dtype fp16 --compile --quality-images 512 \
        --candidates dpmsolver++:20,dpmsolver++:50,ddim-eta1:50,ddim-eta1:100,ddpm:100,ddpm:250
    # CPU (2 cores, about 15 minutes): the same, baseline timed on 100 of its 1000 steps
    python scripts/bench_sampling.py --device cpu --threads 2 --images 64 --baseline-steps 100 \
        --quality-images 128 --candidates dpmsolver++:20,dpmsolver++:50,ddim-eta1:50,ddim-eta1:100,ddpm:100,ddpm:250

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
SAMPLERS = ("dpmsolver++", "ddim", "ddim-eta1", "ddpm")


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
    model, info = sd.pretrained.load_pretrained("catdog32", device=device)
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

        sampler = DPMSolverMultistepScheduler(**schedule.diffusers_config(), algorithm_type="dpmsolver++",
                                              thresholding=True, sample_max_value=1.0, timestep_spacing="leading")
    elif name == "ddpm":
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


EQUAL_QUALITY_RULE = "FD <= 1.25 x DDPM-1000 FD and confidence >= DDPM-1000 confidence - 0.01"


def equal_quality(q: dict, reference: dict) -> bool:
    """The chapter's metric, as a yes/no: is ``q`` as good as sdlab's 1000-step DDPM (``reference``)?"""
    return bool(q["frechet_distance"] <= 1.25 * reference["frechet_distance"]
                and q["confidence"] >= reference["confidence"] - 0.01)


def check_quality(model_fn, schedule, candidates: list[tuple[str, int]], n: int, device: torch.device) -> dict:
    """The chapter's metric on n images for sdlab's 1000-step DDPM and each (sampler, steps) candidate."""
    classifier, _ = sd.evaluate.load_classifier(device=device)
    reference, _ = sd.evaluate.real_images(split="test")
    out = {}
    for sampler, k in [("ddpm", 1000), *candidates]:
        images = torch.cat([run_sampler(model_fn, schedule, sampler, k, len(chunk), device, seed=100 + i)
                            for i, chunk in enumerate(torch.arange(n).split(256))]).clamp(-1, 1)
        out[f"{sampler}:{k}"] = sd.evaluate.sample_quality(classifier, images, reference.to(device)).as_dict()
    for q in out.values():
        q["equal_quality"] = equal_quality(q, out["ddpm:1000"])
    return out


def parse_candidates(text: str) -> list[tuple[str, int]]:
    """"dpmsolver++:20,ddpm:100" -> [("dpmsolver++", 20), ("ddpm", 100)]."""
    out = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in SAMPLERS or not steps.isdigit() or not 1 <= int(steps) <= 1000:
            raise ValueError(f"candidate {item!r} is not SAMPLER:STEPS with SAMPLER in {SAMPLERS}, 1 <= STEPS <= 1000")
        out.append((name, int(steps)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--baseline-steps", type=int, default=1000, help="steps of the baseline actually timed")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpmsolver++")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="sdlab's U-Net only")
    parser.add_argument("--compile", action="store_true", help="torch.compile sdlab's U-Net")
    parser.add_argument("--quality-images", type=int, default=0, help="0: skip the quality check")
    parser.add_argument("--candidates", help="e.g. dpmsolver++:20,ddim-eta1:50,ddpm:100: check each one's quality "
                        "first, then time the one with fewest steps at equal quality (needs --quality-images)")
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
    if args.candidates and not args.quality_images:
        parser.error("--candidates needs --quality-images N")
    try:
        candidates = parse_candidates(args.candidates) if args.candidates else [(args.sampler, args.steps)]
    except ValueError as error:
        parser.error(str(error))
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device.type} ({machine}); torch {torch.__version__}")

    model_fn, schedule, params = make_model_fn(device, DTYPES[args.dtype], args.compile)
    quality = None
    if args.quality_images:
        quality = check_quality(model_fn, schedule, candidates, args.quality_images, device)
        for key, q in quality.items():
            print(f"quality {key:>15}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in q.items()))
        if args.candidates:  # fewest steps (one network call each) among those at equal quality
            passing = [c for c in candidates if quality[f"{c[0]}:{c[1]}"]["equal_quality"]] or [("ddpm", 1000)]
            args.sampler, args.steps = min(passing, key=lambda c: c[1])
            print(f"fastest at equal quality ({EQUAL_QUALITY_RULE}): {args.sampler}, {args.steps} steps")

    baseline = time_baseline(args.images, args.baseline_steps, device)
    ours = time_sdlab(model_fn, schedule, args.sampler, args.steps, args.images, device)
    ours.update(parameters=params, dtype=args.dtype, compiled=args.compile)
    result = {"device": device.type, "machine": machine, "baseline": baseline, "sdlab": ours,
              "speedup": baseline["seconds_1000_steps"] / ours["seconds"]}
    if quality:
        result["quality"], result["equal_quality_rule"] = quality, EQUAL_QUALITY_RULE
        result["sdlab"]["equal_quality"] = quality.get(f"{args.sampler}:{args.steps}", {}).get("equal_quality")

    label = f"EXTRAPOLATED from {args.baseline_steps} timed steps" if baseline["extrapolated"] else "measured"
    print(f"baseline (HF course loop, DDPM 1000 steps, fp32, {baseline['parameters'] / 1e6:.1f} M parameters): "
          f"{baseline['seconds_1000_steps']:.2f} s for {args.images} images ({label}; "
          f"{baseline['seconds_timed']:.2f} s for the {args.baseline_steps} steps timed)")
    print(f"sdlab ({args.sampler}, {args.steps} steps, {args.dtype}{', compiled' if args.compile else ''}, "
          f"{params / 1e6:.1f} M parameters): {ours['seconds']:.3f} s for {args.images} images")
    verdict = {True: "at equal quality", False: "NOT at equal quality", None: "quality not checked"}[
        result["sdlab"].get("equal_quality")]
    print(f"speed-up: {result['speedup']:.1f}x, {verdict}"
          f"{' (baseline extrapolated)' if baseline['extrapolated'] else ''}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
