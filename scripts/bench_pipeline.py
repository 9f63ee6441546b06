r"""Time chapter 7's readable loop (``sd.pipeline.paint``) against ``StableDiffusionPipeline.__call__``, same run.

Baseline: diffusers' ``StableDiffusionPipeline.__call__`` with ``output_type="pt"``. Both sides run
the same components (tokenizer, text encoder, U-Net, VAE, scheduler), the same prompts, seed,
guidance scale and steps, in this process, in turn (A B A B ...) after a warm-up; each round
checks that the two give the same pictures. The figure is images per second, median over rounds,
and the ratio loop / pipeline (≥ 1: the readable loop is no slower).

    # CPU: the course's pipeline (mini_sd), 64 × 64, 8 pictures a call, 20 DDIM steps, guidance 3
    OMP_NUM_THREADS=1 python scripts/bench_pipeline.py --threads 1
    # GPU (only where one is lent): a Stable-Diffusion-1.5-sized pipeline with random weights
    # (860 M-parameter U-Net, 512 × 512, 50 DDIM steps with guidance, fp16, one picture a call)
    python scripts/bench_pipeline.py --sd15 --device cuda --images 1 --steps 50 --scale 7.5 --rounds 5

The random weights of ``--sd15`` cost the same time as trained ones (no hub here); the issue's
baseline for that setting, measured on an H100: 1.51 s per image, 31.6 U-Net calls of batch 2 a second.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import sdlab as sd

PROMPTS = ["a small red cat on the left, blue background", "a large white dog in the centre, green background"]


def sd15_pipeline(device: torch.device, dtype: torch.dtype):
    """Stable Diffusion 1.5's architecture with random weights: U-Net 860 M, CLIP ViT-L/14 text tower, KL-f8 VAE."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD 1's layout
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu"))
    blocks = ("DownEncoderBlock2D",) * 4
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=blocks,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512, scaling_factor=0.18215)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=sd.tokenizer.load_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd15", action="store_true", help="a Stable-Diffusion-1.5-sized pipeline, random weights")
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=8, help="pictures per call")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else sd.pick_device()
    if args.sd15:
        pipe, size = sd15_pipeline(device, torch.float16 if device.type == "cuda" else torch.float32), 512
    else:
        pipe, size = sd.pipeline.load_pipeline(device=device), 64
    prompts = [PROMPTS[i % 2] for i in range(args.images)]
    settings = dict(guidance_scale=args.scale, num_inference_steps=args.steps)

    def loop() -> torch.Tensor:
        return sd.pipeline.paint(pipe, prompts, generator=torch.Generator().manual_seed(0), height=size, width=size,
                                 **settings) / 2 + 0.5

    def library() -> torch.Tensor:
        with torch.no_grad():
            return pipe(prompts, generator=torch.Generator().manual_seed(0), height=size, width=size,
                        output_type="pt", **settings).images

    sides = {"readable loop": loop, "StableDiffusionPipeline": library}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for run in sides.values():  # warm-up
        run()
    for _ in range(args.rounds):
        pictures = {}
        for name, run in sides.items():
            _sync(device)
            start = time.perf_counter()
            pictures[name] = run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
        difference = (pictures["readable loop"].float() - pictures["StableDiffusionPipeline"].float()).abs().max()
        if difference > (1e-2 if pictures["readable loop"].dtype == torch.float16 else 1e-5):
            raise SystemExit(f"the two sides painted different pictures (max difference {difference:.3g})")
    calls = args.steps * (2 if args.scale > 1 else 1) // 2  # U-Net calls of batch 2 x images
    rows = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows[name] = {"median_seconds": round(median, 4), "images_per_second": round(args.images / median, 3),
                      "seconds_per_image": round(median / args.images, 4),
                      "unet_batch2_calls_per_second": round(calls * args.images / median, 2),
                      "all_seconds": [round(s, 4) for s in seconds]}
    ratios = [b / a for a, b in zip(times["readable loop"], times["StableDiffusionPipeline"])]
    result = {"machine": f"{platform.processor() or platform.machine()}, {device}"
                         + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                            f", {torch.get_num_threads()} thread(s)"),
              "model": "SD 1.5 layout, random weights" if args.sd15 else "mini_sd",
              "size": size, "images_per_call": args.images, **settings, "rounds": args.rounds, "sides": rows,
              "ratio_loop_speed_over_pipeline": round(statistics.median(ratios), 3),
              "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)]}
    for name, row in rows.items():
        print(f"{name:>24}: {row['images_per_second']:8.2f} images/s  (median of {args.rounds}: "
              f"{row['median_seconds']:.3f} s for {args.images})")
    print(f"readable loop / pipeline speed: {result['ratio_loop_speed_over_pipeline']} (median of the rounds' "
          f"ratios; range {result['ratio_min_max']}); pictures equal in every round")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
