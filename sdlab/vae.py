"""Chapter 5: the autoencoder that moves diffusion from pixels into a small latent space.

The model **is** a ``diffusers.AutoencoderKL`` (so chapter 7's pipeline takes it as its
``vae``), in a configuration small enough to train on a laptop CPU: one resnet per block,
8 groups in its GroupNorms, no attention in the middle. This module adds what the chapter
needs around it:

- ``make_vae(factor)``: the course's configuration for a downsampling factor (4: 64×64×3 →
  16×16×4; 8: → 8×8×4, Stable Diffusion's factor).
- ``encode`` / ``decode``: images in [−1, 1] to **scaled** latents and back. The scaling factor
  lives in the model's config (``vae.config.scaling_factor``), computed from the course's
  data by ``scaling_factor_from_data`` the way Stable Diffusion's 0.18215 was: one over the
  standard deviation of the latents of a batch of training images.
- The pieces of the loss, written out so the chapter can show them: ``reparameterise``,
  ``kl_divergence`` and ``vae_loss``; ``vae_batch`` draws training crops; ``psnr`` measures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

from sdlab.random import randint, randn_tensor
from sdlab.validation import number_in_range, one_of, positive_number

__all__ = ["FACTORS", "make_vae", "downsampling_factor", "encode", "decode", "encode_distribution",
           "reparameterise", "kl_divergence", "vae_loss", "vae_batch", "scaling_factor_from_data",
           "set_scaling_factor", "psnr", "latent_shape", "evaluate_vae", "interpolate", "prior_samples",
           "latent_diffusion_cost", "design_choices"]

FACTORS = (4, 8)
# The course's configurations: narrow full-resolution blocks (they cost the most), wider deeper ones.
_CHANNELS = {4: (16, 32, 64), 8: (16, 32, 64, 64)}
_FIXED = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, act_fn="silu",
              norm_num_groups=8, mid_block_add_attention=False, sample_size=64)


def make_vae(factor: int = 4, *, block_out_channels: tuple[int, ...] | None = None, **config) -> AutoencoderKL:
    """A fresh (untrained) ``AutoencoderKL`` in the course's configuration.

    Args:
        factor: how much smaller each side of the latent is than the image's: 4 or 8 (the number
            of blocks is log2(factor) + 1; each block but the last halves the resolution).
        block_out_channels: the width of each block (default: the course's for ``factor``);
            its length must match ``factor``.
        config: any other ``AutoencoderKL`` argument (``norm_num_groups``, ``mid_block_add_attention`` ...).

    Returns:
        The model, scaling factor 1.0 until ``set_scaling_factor`` is called.
    """
    factor = one_of(factor, "factor", FACTORS)
    channels = tuple(block_out_channels or _CHANNELS[factor])
    if 2 ** (len(channels) - 1) != factor:
        raise ValueError(f"factor {factor} needs {int(math.log2(factor)) + 1} blocks; block_out_channels "
                         f"{channels} has {len(channels)}")
    settings = {**_FIXED, "scaling_factor": 1.0, **config}
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * len(channels),
                         up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
                         **settings)


def downsampling_factor(vae: AutoencoderKL) -> int:
    """How many pixels one latent position stands for, along each side (Stable Diffusion's VAE: 8)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae: AutoencoderKL, image_size: int = 64) -> tuple[int, int, int]:
    """The (channels, height, width) of the latent of one ``image_size`` × ``image_size`` image."""
    side = image_size // downsampling_factor(vae)
    return (vae.config.latent_channels, side, side)


def _check_images(vae: AutoencoderKL, images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, {vae.config.in_channels}, H, W); "
                        f"got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [-1, 1]; got {images.dtype} (uint8 images: "
                        "x.float() / 127.5 - 1)")
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels:
        raise ValueError(f"images must have shape (B, {vae.config.in_channels}, H, W); got {tuple(images.shape)}"
                         + (" (channels last? use x.permute(0, 3, 1, 2))" if images.ndim == 4
                            and images.shape[-1] == vae.config.in_channels else ""))
    factor = downsampling_factor(vae)
    if images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"image height and width must be multiples of the VAE's factor {factor}; "
                         f"got {tuple(images.shape[-2:])}")
    low, high = images.min().item(), images.max().item()
    if low < -1.5 or high > 1.5:
        raise ValueError(f"images must be in [-1, 1]; got values in [{low:.3g}, {high:.3g}] "
                         "(images in [0, 1]: 2 * x - 1; in [0, 255]: x / 127.5 - 1)")


def _check_latents(vae: AutoencoderKL, latents: torch.Tensor) -> None:
    c = vae.config.latent_channels
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.ndim != 4 \
            or latents.shape[1] != c:
        what = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a floating-point tensor (B, {c}, h, w); got {what}")


def encode_distribution(vae: AutoencoderKL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's Gaussian for each image, unscaled: ``(mean, logvar)``, each (B, 4, H/f, W/f)."""
    _check_images(vae, images)
    moments = vae.quant_conv(vae.encoder(images.to(vae.dtype))) if vae.quant_conv is not None \
        else vae.encoder(images.to(vae.dtype))
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of N(mean, exp(logvar)) written so gradients reach mean and logvar: mean + σ · noise."""
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) of each sample, summed over its latent numbers: (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def encode(vae: AutoencoderKL, images: torch.Tensor, *, sample: bool = True,
           generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """Images in [−1, 1] → scaled latents (what the U-Net of chapter 6 sees): z · scaling_factor.

    Args:
        images: (B, 3, H, W), H and W multiples of the VAE's factor.
        sample: draw from the encoder's Gaussian (as Stable Diffusion's training does);
            ``False`` takes its mean (deterministic).
            (TAESD, an ``AutoencoderTiny``, has no Gaussian: its encoding is always deterministic.)
        generator: makes the draw repeatable.
    """
    if isinstance(vae, AutoencoderTiny):  # TAESD (sd.hub.load_real_vae("taesd")): deterministic, no Gaussian
        _check_images(vae, images)
        return vae.encode(images.to(vae.dtype)).latents * vae.config.scaling_factor
    mean, logvar = encode_distribution(vae, images)
    z = reparameterise(mean, logvar, randn_tensor(mean.shape, generator=generator, device=mean.device,
                                                  dtype=mean.dtype)) if sample else mean
    return z * vae.config.scaling_factor


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → images (B, 3, H, W), roughly in [−1, 1] (clamp before showing them)."""
    _check_latents(vae, latents)
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None, *,
             kl_weight: float = 1e-6) -> torch.Tensor:
    """The training loss of one batch: L1 + MSE reconstruction, per pixel, plus ``kl_weight`` × KL per pixel.

    The latent-diffusion paper weighted the KL term by about 1e-6: enough to keep the latents near
    a unit Gaussian's scale, too little to blur the reconstructions.
    """
    kl_weight = number_in_range(kl_weight, "kl_weight", 0.0, 1.0)
    mean, logvar = encode_distribution(vae, images)
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    recon = vae.decode(reparameterise(mean, logvar, noise)).sample
    pixels = images[0].numel()
    reconstruction = F.l1_loss(recon, images) + F.mse_loss(recon, images)
    return reconstruction + kl_weight * kl_divergence(mean, logvar).mean() / pixels


def vae_batch(batch_size: int, generator: torch.Generator, *, crop: int = 32, **scenes) -> torch.Tensor:
    """Training images: random ``crop`` × ``crop`` squares of fresh 64 × 64 scenes (``sd.data.SCENES``).

    The VAE has no attention, so each output pixel sees only a neighbourhood of the image: training
    on crops teaches it the same edges and colours four times faster than whole scenes (and it is
    then used on whole 64 × 64 scenes, as Stable Diffusion's VAE, trained on 256-pixel crops, is used
    on 512-pixel images). ``crop=64`` trains on whole scenes.
    """
    from sdlab.data import SCENES, make_scenes

    images = make_scenes(batch_size, generator=generator, device=generator.device, **{**SCENES, **scenes}).images
    side = images.shape[-1]
    crop = int(number_in_range(crop, "crop", 8, side))
    if crop == side:
        return images
    x0, y0 = (randint(0, side - crop + 1, (batch_size,), generator=generator, device=generator.device)
              for _ in range(2))
    ar = torch.arange(crop, device=images.device)
    rows, cols = (y0[:, None] + ar)[:, None, :, None], (x0[:, None] + ar)[:, None, None, :]
    return images[torch.arange(batch_size, device=images.device)[:, None, None, None],
                  torch.arange(3, device=images.device)[None, :, None, None], rows, cols]


@torch.no_grad()
def scaling_factor_from_data(vae: AutoencoderKL, images: torch.Tensor, *,
                             generator: torch.Generator | None = None) -> float:
    """One over the standard deviation of the (unscaled, sampled) latents of ``images``.

    Stable Diffusion's 0.18215 was computed this way from a batch of its training images; scaling
    the latents by it gives the diffusion model inputs of unit variance, like the images it was
    designed for.
    """
    mean, logvar = encode_distribution(vae, images)
    z = reparameterise(mean, logvar, randn_tensor(mean.shape, generator=generator, device=mean.device,
                                                  dtype=mean.dtype))
    return 1.0 / z.float().std().item()


def set_scaling_factor(vae: AutoencoderKL, value: float) -> AutoencoderKL:
    """Store the latent scaling factor in the model's config (saved with ``save_pretrained``)."""
    vae.register_to_config(scaling_factor=float(positive_number(value, "scaling factor")))
    return vae


def psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image of a batch, both in [−1, 1] (peak-to-peak 2): (B,).

    10 · log10(2² / mean squared error); 28 dB means a root-mean-square error of about 4 % of the range.
    """
    if reconstruction.shape != original.shape:
        raise ValueError(f"shapes differ: {tuple(reconstruction.shape)} vs {tuple(original.shape)}")
    mse = (reconstruction.clamp(-1, 1).float() - original.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-10))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, *, judge=None, n: int = 500, seed: int = 7) -> dict:
    """Round-trip quality on ``n`` held-out scenes ("test" silhouettes, every combination), deterministic encode.

    Returns:
        {"psnr_db": mean PSNR, "psnr_db_min": the worst image's, and, with a ``judge``
        (`sdlab.judge.AttributeJudge`), "agreement": {attribute: share of scenes the judge reads
        the same before and after}}.
    """
    from sdlab.data import SCENES, make_scenes

    device = next(vae.parameters()).device
    vae.eval()
    scenes = make_scenes(n, held_out="include", split="test", device=device,
                         generator=torch.Generator(device).manual_seed(seed), **SCENES)
    recon = torch.cat([decode(vae, encode(vae, x, sample=False)).clamp(-1, 1) for x in scenes.images.split(100)])
    quality = psnr(recon, scenes.images)
    out = {"psnr_db": round(quality.mean().item(), 2), "psnr_db_min": round(quality.min().item(), 2)}
    if judge is not None:
        from sdlab.judge import agreement

        out["agreement"] = {k: round(v, 4) for k, v in agreement(judge, scenes.images, recon).items()}
    return out


def design_choices() -> dict[str, dict]:
    """What each choice behind the course's configuration cost: name → record of ``scripts/vae_choices.py``.

    Each record holds "parameters", "steps", "batch_size", "crops_per_second", "seconds", "psnr_db"
    and "psnr_db_min" of one factor-4 configuration trained from the same seed for the same steps,
    and the machine and date of the run.
    """
    import json
    from pathlib import Path

    path = Path(__file__).parent / "data_files" / "vae_choices.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; measure it with: python scripts/vae_choices.py")
    return json.loads(path.read_text())


@torch.no_grad()
def interpolate(vae: AutoencoderKL, a: torch.Tensor, b: torch.Tensor, *, steps: int = 7
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend two images in latent space and in pixel space: ``(through_latents, through_pixels)``.

    Both are (steps, 3, H, W), from ``a`` to ``b``. The first decodes (1 − w) z_a + w z_b (the means
    of the encoder's Gaussians); the second cross-fades the pixels, (1 − w) a + w b.
    """
    steps = int(number_in_range(steps, "steps", 2, 1000, what="an integer"))
    for name, image in (("a", a), ("b", b)):
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"{name} must be one image (3, H, W) in [-1, 1]; got {shape}")
    ends = torch.stack([a, b]).to(next(vae.parameters()).device)
    z = encode(vae, ends, sample=False)
    w = torch.linspace(0, 1, steps, device=z.device)[:, None, None, None]
    through_latents = decode(vae, (1 - w) * z[0] + w * z[1]).clamp(-1, 1)
    return through_latents, (1 - w) * ends[0] + w * ends[1]


@torch.no_grad()
def prior_samples(vae: AutoencoderKL, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode ``n`` latents drawn from N(0, I), the prior the KL term pulls towards: (n, 3, H, W).

    A VAE trained with a KL weight of 1e-6 is far from a generative model: its latents of real
    images occupy a small, oddly shaped part of latent space, and random draws land elsewhere.
    """
    n = int(number_in_range(n, "n", 1, 10_000, what="an integer"))
    device = next(vae.parameters()).device
    shape = (n, *latent_shape(vae, vae.config.sample_size))
    return decode(vae, randn_tensor(shape, generator=generator, device=device)).clamp(-1, 1)


def _activation_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``step()`` runs (each storage once)."""
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        step()
    return sum(storages.values())


def _seconds(work, repeats: int) -> float:
    """The fastest of ``repeats`` timed runs of ``work()`` (after one untimed warm-up run)."""
    import time

    work()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def latent_diffusion_cost(vaes: dict[str, AutoencoderKL] | None = None, *, image_size: int = 64,
                          batch_size: int = 16, sampling_steps: int = 50, repeats: int = 3,
                          base_channels: int = 32, device: torch.device | str = "cpu") -> list[dict]:
    """What diffusion costs in pixel space and in each VAE's latent space, with one and the same U-Net.

    For pixels (3 × image_size²) and for the latent shape of each VAE in ``vaes`` (name → model), a
    course U-Net (`sdlab.unet.UNet`, ``base_channels`` wide, levels (1, 2, 2), attention at the lowest
    level) is built for that shape and timed on ``batch_size`` inputs: one training step (forward,
    MSE loss, backward, Adam update), one forward pass without gradients, and the memory autograd
    keeps for the backward pass. Sampling time is ``sampling_steps`` forward passes plus, in latent
    space, one decode.

    Returns:
        One dict per space: "space", "shape", "numbers" (per image), "train_step_s",
        "activation_mb", "forward_s", "decode_s", "sampling_s", "parameters".
    """
    batch_size = int(number_in_range(batch_size, "batch_size", 1, 4096, what="an integer"))
    sampling_steps = int(number_in_range(sampling_steps, "sampling_steps", 1, 10_000, what="an integer"))
    repeats = int(number_in_range(repeats, "repeats", 1, 100, what="an integer"))
    device = torch.device(device)
    spaces = [("pixels", (3, image_size, image_size), None)]
    for name, vae in (vaes or {}).items():
        spaces.append((name, latent_shape(vae, image_size), vae))
    generator = torch.Generator(device).manual_seed(0)
    return [_space_cost(name, shape, vae, batch_size=batch_size, sampling_steps=sampling_steps, repeats=repeats,
                        base_channels=base_channels, generator=generator) for name, shape, vae in spaces]


def _space_cost(name: str, shape: tuple[int, int, int], vae: AutoencoderKL | None, *, batch_size: int,
                sampling_steps: int, repeats: int, base_channels: int, generator: torch.Generator) -> dict:
    """One row of `latent_diffusion_cost`: a fresh U-Net for ``shape``, timed on ``generator``'s device."""
    from sdlab.unet import UNet, UNetConfig, count_parameters

    device = generator.device
    config = UNetConfig(in_channels=shape[0], out_channels=shape[0], sample_size=shape[1],
                        base_channels=base_channels, channel_mults=(1, 2, 2), attention_levels=(2,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet(config).to(device)
    optimiser = torch.optim.Adam(unet.parameters(), lr=1e-4)
    x = randn_tensor((batch_size, *shape), generator=generator, device=device)
    t = randint(0, 1000, (batch_size,), generator=generator, device=device)

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.mse_loss(unet(x, t), x).backward()
        optimiser.step()

    @torch.no_grad()
    def forward() -> None:
        unet(x, t)

    activation = _activation_bytes(lambda: unet(x, t).sum())
    row = {"space": name, "shape": shape, "numbers": math.prod(shape), "parameters": count_parameters(unet),
           "train_step_s": _seconds(train_step, repeats), "activation_mb": activation / 2**20,
           "forward_s": _seconds(forward, repeats), "decode_s": 0.0}
    if vae is not None:
        vae = vae.to(device).eval()
        with torch.no_grad():
            row["decode_s"] = _seconds(lambda: decode(vae, x), repeats)
    row["sampling_s"] = sampling_steps * row["forward_s"] + row["decode_s"]
    return row
