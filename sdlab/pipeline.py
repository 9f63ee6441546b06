"""Chapter 7: the course's parts assembled into a genuine ``diffusers.StableDiffusionPipeline``.

Each part already is a library class: chapter 4's ``CLIPTokenizer`` and ``CLIPTextModel``, chapter
5's ``AutoencoderKL`` and chapter 6's ``UNet2DConditionModel``. The scheduler is diffusers' own
``DDIMScheduler``, configured from the course's sampler (``sdlab.text_unet.latent_sampler``), so
that it knows what the U-Net predicts. Saved with ``save_pretrained``, the folder loads with plain
diffusers and transformers where ``sdlab`` is not installed; the course ships it as ``mini_sd``:

    >>> pipe = sd.pipeline.load_pipeline()                 # a StableDiffusionPipeline
    >>> pipe("a small red cat on the left, blue background", height=64, width=64).images[0]

:func:`paint` is the same generation written out as a readable loop (tokenize, encode, random
latents, guided denoising, decode); for the same seed and settings it gives the pipeline's picture.
It is the library's one generation path: chapter 6's ``sd.guidance.generate`` paints its models,
gathered as `Parts`, through it.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["SCHEDULERS", "make_scheduler", "assemble", "save_pipeline", "load_pipeline", "swap_scheduler",
           "image_to_image", "Parts", "paint", "UnknownWordsWarning", "is_course_model", "unknown_words", "TRACED",
           "trace"]

# The diffusers schedulers the shipped U-Net runs with, without retraining: each is built from the
# DDIM configuration, so it inherits the schedule, the prediction type and the trailing timesteps.
SCHEDULERS = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}


def make_scheduler(sampler=None):
    """diffusers' ``DDIMScheduler`` configured as the course's DDIM ``sampler`` (default `latent_sampler()`).

    ``eta`` stays out of the configuration: diffusers takes it as an argument of ``step`` (the
    pipeline's ``eta=``), not as a setting.
    """
    from diffusers import DDIMScheduler

    from sdlab.text_unet import latent_sampler

    config = dict((sampler or latent_sampler()).config)
    config.pop("eta", None)
    return DDIMScheduler.from_config(config)


def assemble(*, device: torch.device | str | None = None):
    """The course's shipped text encoder, autoencoder and U-Net as one ``StableDiffusionPipeline``.

    No safety checker and no feature extractor (the scenes need neither); the tokenizer is CLIP's
    real one (``sdlab.tokenizer.load_tokenizer``).
    """
    from diffusers import StableDiffusionPipeline

    from sdlab.pretrained import load_pretrained
    from sdlab.text_unet import record_sampler
    from sdlab.tokenizer import load_tokenizer

    unet, record = load_pretrained("text_unet", device=device)
    text_encoder = load_pretrained("miniclip", device=device)[0].text_model.float()
    vae = load_pretrained("vae_f4", device=device)[0]
    scheduler = make_scheduler(record_sampler(record))
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=load_tokenizer(),
                                   unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: str | Path, *, text_encoder_dtype: torch.dtype = torch.float16,
                  info: dict | None = None) -> Path:
    """Write ``pipe`` with ``save_pretrained`` (safetensors) into ``folder``, whole or not at all.

    Args:
        text_encoder_dtype: how the text encoder's weights are stored. Chapter 4 ships them in
            float16 already, so float16 loses nothing and halves the largest file (its 49 408-token
            embedding table); its config still says float32, so loaders give a float32 model.
        info: a training record, written as ``sdlab_record.json`` beside ``model_index.json``.
    """
    from sdlab.clip import save_text_encoder
    from sdlab.pretrained import RECORD_FILE, replace_folder

    def write(tmp: Path) -> None:
        pipe.save_pretrained(tmp, safe_serialization=True)
        save_text_encoder(pipe.text_encoder, tmp / "text_encoder", dtype=text_encoder_dtype)
        # vocab.json and merges.txt beside tokenizer.json: transformers 4's CLIPTokenizer reads only those
        pipe.tokenizer.backend_tokenizer.model.save(str(tmp / "tokenizer"))
        if info is not None:
            (tmp / RECORD_FILE).write_text(json.dumps(info, indent=1) + "\n")

    return replace_folder(Path(folder), write)


def load_pipeline(*, device: torch.device | str | None = None):
    """The shipped ``mini_sd`` pipeline (a ``StableDiffusionPipeline``, float32, progress bar off).

    Loads quietly: no loading bars (they freeze on the website) and no notes about optional
    packages that the course does not use (transformers' image processors want torchvision).
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from sdlab.pretrained import load_pretrained

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
             for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        return load_pretrained("mini_sd", device=device)[0]
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def swap_scheduler(pipe, name: str):
    """A copy of ``pipe`` that samples with another diffusers scheduler (``SCHEDULERS``), built from its config.

    The U-Net is shared, not copied: nothing is retrained, only the rule that turns its
    predictions into steps changes. DPM-Solver++ is second order; Euler starts from noise scaled
    by its largest σ (``init_noise_sigma``), which the loop handles like every other step.
    """
    import diffusers

    from sdlab.validation import one_of

    cls = getattr(diffusers, SCHEDULERS[one_of(name, "scheduler", tuple(SCHEDULERS))])
    options = {"algorithm_type": "dpmsolver++"} if name == "dpm++" else {}
    swapped = copy.copy(pipe)
    swapped.register_modules(scheduler=cls.from_config(pipe.scheduler.config, **options))
    return swapped


def image_to_image(pipe):
    """``pipe``'s components as a ``StableDiffusionImg2ImgPipeline`` (the same modules, nothing copied)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    return img2img


class UnknownWordsWarning(UserWarning):
    """A prompt uses words that the course's model never saw in training, and so cannot paint."""


def is_course_model(pipe) -> bool:
    """True when ``pipe`` was loaded from a folder of the course's (it holds a training record), not real SD."""
    from sdlab.pretrained import RECORD_FILE

    folder = getattr(pipe, "name_or_path", None)
    return folder is not None and (Path(folder) / RECORD_FILE).is_file()


def unknown_words(pipe, prompt: str | list[str]) -> list[str]:
    """The words of ``prompt`` that ``pipe``'s model never saw in training, once each, in order.

    For the course's model, the words no caption of `sd.captions` uses ("crimson", "kitty"); for any
    other pipeline (real Stable Diffusion read the web), none.
    """
    from sdlab.captions import unknown_words as words_never_captioned

    if not is_course_model(pipe):
        return []
    found: list[str] = []
    for text in _prompts(prompt):
        found += [w for w in words_never_captioned(text) if w not in found]
    return found


def _warn_unknown_words(pipe, prompt: str | list[str], *, stacklevel: int = 3) -> None:
    """Warn (`UnknownWordsWarning`) when the course's model is asked for words it never saw."""
    from sdlab.data import ANIMALS, COLOURS

    unknown = unknown_words(pipe, prompt)
    if unknown:
        warnings.warn(f"the course's model never saw {', '.join(repr(w) for w in unknown)} in training and "
                      f"cannot paint {'it' if len(unknown) == 1 else 'them'}; it knows the animals "
                      f"{', '.join(ANIMALS)}, the colours {', '.join(COLOURS)}, sizes and places "
                      "(all its words: sd.captions.vocabulary())", UnknownWordsWarning, stacklevel=stacklevel)


def _prompts(prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a string or a non-empty list of strings; got {prompt!r}")
    return prompts


def _start_image(image: Any, batch: int, multiple: int) -> torch.Tensor:
    """The image-to-image start as (1 or B, 3, H, W) in [−1, 1]: a PIL image, or a tensor in [−1, 1]."""
    from sdlab.images import to_tensor

    x = image if isinstance(image, torch.Tensor) else to_tensor(image.convert("RGB"), name="image")
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"image must be a PIL image or a float (3, H, W) or (B, 3, H, W) tensor in [-1, 1]; "
                         f"got {tuple(x.shape)} {x.dtype}")
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise ValueError(f"image sides must be multiples of {multiple} (the autoencoder's factor); got "
                         f"{tuple(x.shape[-2:])}")
    if x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
        raise ValueError(f"image must hold values in [-1, 1]; got [{x.min():.3g}, {x.max():.3g}] "
                         "(a [0, 1] tensor becomes x * 2 - 1)")
    if x.shape[0] not in (1, batch):
        raise ValueError(f"image holds {x.shape[0]} pictures for {batch} prompts: give one, or one per prompt")
    return x


@dataclass
class Parts:
    """The five parts `paint` composes, gathered once: chapter 6's models before they become a pipeline.

    A ``StableDiffusionPipeline`` holds the same five attributes, so `paint` takes either (labml's
    ``LatentDiffusion`` holds its parts the same way). Left out, ``scheduler`` is the DDIM the shipped
    U-Net was trained for (`sd.text_unet.latent_sampler`) and ``tokenizer`` CLIP's
    (`sd.tokenizer.load_tokenizer`).
    """

    unet: Any
    text_encoder: Any
    vae: Any
    scheduler: Any = None
    tokenizer: Any = None

    def __post_init__(self) -> None:
        from sdlab.text_unet import latent_sampler
        from sdlab.tokenizer import load_tokenizer

        self.scheduler = latent_sampler() if self.scheduler is None else self.scheduler
        self.tokenizer = load_tokenizer() if self.tokenizer is None else self.tokenizer


def paint(pipe, prompt: str | list[str], *, negative_prompt: str = "", guidance_scale: float = 7.5,
          num_inference_steps: int = 20, generator: torch.Generator | None = None, height: int | None = None,
          width: int | None = None, image: Any = None, strength: float = 0.8, eta: float = 0.0,
          return_trajectory: bool = False, progress: bool = False,
          on_step: Callable[[int, torch.Tensor, Any], None] | None = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
    """Stable Diffusion's generation as one readable loop, over any ``StableDiffusionPipeline``'s parts.

    For the same seed, scheduler and settings the picture equals ``pipe(...)``'s (and, with
    ``image``, ``StableDiffusionImg2ImgPipeline``'s); the only difference is the range of the result.
    The loop is chapter 3's `sd.samplers.sample`, its model chapter 6's `sd.guidance.guided_noise`.

    Args:
        pipe: supplies the tokenizer, text encoder, U-Net, VAE and scheduler (the course's
            ``load_pipeline()``, real Stable Diffusion, or chapter 6's models as `Parts`).
        prompt: one prompt or a list (one picture each). negative_prompt: the unconditional branch's prompt.
        guidance_scale: s ≥ 1; at exactly 1 the unconditional branch is skipped.
        num_inference_steps: denoising steps. generator: seeds the latents (and a stochastic step).
        height, width: of the pictures (default: the U-Net's sample size times the VAE's factor).
        image: start from this picture instead of pure noise (image-to-image): a PIL image or a
            tensor in [−1, 1]. strength: how much of the schedule to run from it, in (0, 1]:
            1 repaints from pure noise, small values keep the layout.
        eta: DDIM's noise (0: deterministic), for schedulers whose ``step`` takes it.
        return_trajectory: also return the `sd.samplers.Trajectory` of the latents (x_t and x̂0 of
            every step, on the CPU; decode them with `sd.vae.decode`). progress: show a progress bar.
        on_step: deprecated; ``return_trajectory=True`` returns the same steps.

    Returns:
        (B, 3, H, W) pictures in [−1, 1] (the pipeline's ``output_type="pt"`` gives x / 2 + 0.5); with
        ``return_trajectory``, the pair (pictures, trajectory).

    Warns:
        UnknownWordsWarning: the course's model is asked for words it never saw in training (it
            paints them as noise would: a random scene); real Stable Diffusion is never warned about.
    """
    _warn_unknown_words(pipe, [*_prompts(prompt), *_prompts(negative_prompt)])
    if on_step is not None:
        warnings.warn("paint's on_step is deprecated: paint(..., return_trajectory=True) returns (pictures, "
                      "trajectory), whose pred_original_samples hold x̂0 of every step", DeprecationWarning,
                      stacklevel=2)
    with torch.inference_mode():  # no autograd bookkeeping at all (the pipeline uses no_grad)
        pictures, trajectory = _paint(pipe, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                                      num_inference_steps=num_inference_steps, generator=generator, height=height,
                                      width=width, image=image, strength=strength, eta=eta, progress=progress,
                                      keep_steps=return_trajectory or on_step is not None)
    if on_step is not None:
        _replay(on_step, trajectory, pictures.device)
    pictures = pictures.clone()  # ordinary tensors again, usable outside inference mode
    return (pictures, _outside_inference_mode(trajectory)) if return_trajectory else pictures


def _paint(pipe, prompt, *, negative_prompt, guidance_scale, num_inference_steps, generator, height, width, image,
           strength, eta, progress, keep_steps) -> tuple[torch.Tensor, Any]:
    """`paint`'s four stages; returns the pictures and the trajectory (None unless ``keep_steps``)."""
    from sdlab.guidance import check_guidance_scale, guided_noise
    from sdlab.samplers import sample
    from sdlab.text_unet import encode_prompts
    from sdlab.vae import decode
    from sdlab.validation import int_in_range

    unet, scheduler = pipe.unet, pipe.scheduler
    prompts, scale = _prompts(prompt), check_guidance_scale(guidance_scale)
    steps = int_in_range(num_inference_steps, "num_inference_steps", 1, scheduler.config.num_train_timesteps)

    # 1. The words: token ids (padded to 77), then the text encoder's token states.
    def encode(texts: list[str]) -> torch.Tensor:
        return encode_prompts(pipe.text_encoder, texts, tokenizer=pipe.tokenizer).to(unet.device, unet.dtype)

    cond = encode(prompts)
    uncond = encode([negative_prompt] * len(prompts)) if scale > 1 else None

    # 2. The canvas: the latents' shape, and for image-to-image the picture's latents to noise.
    shape, start = _canvas(pipe, len(prompts), height, width, image, generator)

    # 3. The painting: at each step the U-Net predicts twice (without and with the words), guided.
    def model_fn(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guided_noise(unet, latents, t, cond_states=cond, uncond_states=uncond, guidance_scale=scale)

    done = sample(model_fn, shape, sampler=scheduler, num_inference_steps=steps, generator=generator,
                  device=unet.device, dtype=unet.dtype, image_latents=start, strength=strength, eta=eta,
                  return_trajectory=keep_steps, progress=progress)
    latents, trajectory = done if keep_steps else (done, None)

    # 4. The reveal: decode once (`sd.vae.decode` undoes the latent scaling).
    return decode(pipe.vae, latents).clamp(-1, 1), trajectory


def _canvas(pipe, batch: int, height: int | None, width: int | None, image: Any,
            generator: torch.Generator | None) -> tuple[tuple[int, ...], torch.Tensor | None]:
    """The latents' shape (B, C, h, w), and the start picture's latents for image-to-image (else None)."""
    from sdlab.vae import downsampling_factor, encode

    unet, vae = pipe.unet, pipe.vae
    factor = downsampling_factor(vae)
    if image is not None:  # one picture for every prompt is encoded once
        pixels = _start_image(image, batch, factor).to(unet.device, vae.dtype)
        clean = encode(vae, pixels, generator=generator).expand(batch, -1, -1, -1).to(unet.dtype)
        return tuple(clean.shape), clean
    size = (height or unet.config.sample_size * factor, width or unet.config.sample_size * factor)
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"height and width must be multiples of {factor}; got {size}")
    return (batch, unet.config.in_channels, size[0] // factor, size[1] // factor), None


def _replay(on_step: Callable[[int, torch.Tensor, Any], None], trajectory, device: torch.device) -> None:
    """The deprecated ``on_step(i, t, out)``, called for every step of the finished ``trajectory``."""
    from sdlab.sampler_base import StepOutput

    x0 = trajectory.pred_original_samples
    for i, t in enumerate(trajectory.timesteps):
        on_step(i, torch.tensor(t, device=device), StepOutput(prev_sample=trajectory.samples[i + 1].to(device),
                                                              pred_original_sample=x0[i].to(device) if x0 else None))


def _outside_inference_mode(trajectory):
    """The trajectory with ordinary tensors (those made in inference mode refuse in-place changes)."""
    from sdlab.samplers import Trajectory

    return Trajectory(timesteps=list(trajectory.timesteps), samples=[x.clone() for x in trajectory.samples],
                      pred_original_samples=[x.clone() for x in trajectory.pred_original_samples])


# What `trace` watches, in the order a picture passes through them: the part, and what to call it.
# (The tokenizer is plain Python: its output is the text encoder's input.)
TRACED = (("text_encoder", "text encoder"), ("vae.encoder", "VAE encoder"),
          ("scheduler.add_noise", "forward diffusion (add_noise)"), ("unet", "U-Net"),
          ("scheduler.step", "scheduler step"), ("vae.decoder", "VAE decoder"))


def _shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a tensor, or of the first tensor of a model's or scheduler's output."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    for key in ("sample", "prev_sample", "last_hidden_state"):
        found = getattr(value, key, None)
        if isinstance(found, torch.Tensor):
            return tuple(found.shape)
    if isinstance(value, (tuple, list)) and value:
        return _shape(value[0])
    return None


def trace(pipe, prompt: str | list[str], **options: Any) -> list[dict]:
    """Run `paint` and report every part it used: how often it ran, and the shapes in and out of its last call.

    Args:
        prompt, options: as for `paint` (``image=`` and ``strength=`` for image-to-image).

    Returns:
        One dict per entry of ``TRACED``, in that order: ``{"part", "calls", "input", "output"}``,
        shapes as tuples (``None`` for a part that never ran).
    """
    rows = {path: {"part": label, "calls": 0, "input": None, "output": None} for path, label in TRACED}
    undo = []

    def record(path: str, args: tuple, kwargs: dict, result: Any) -> None:
        """Count the call; its input is the first argument, given by position or by name."""
        row = rows[path]
        row["calls"] += 1
        inputs = (*args, *kwargs.values())
        row["input"], row["output"] = _shape(inputs[0]) if inputs else None, _shape(result)

    for path, _ in TRACED:
        owner_path, _, name = path.rpartition(".")
        owner = pipe
        for attribute in filter(None, owner_path.split(".")):
            owner = getattr(owner, attribute)
        target = getattr(owner, name)
        if isinstance(target, torch.nn.Module):
            handle = target.register_forward_hook(lambda module, args, kwargs, result, path=path: record(
                path, args, kwargs, result), with_kwargs=True)
            undo.append(handle.remove)
        else:  # a method or a callable object: wrap it on the instance for the duration
            def wrapped(*args: Any, target=target, path=path, **kwargs: Any) -> Any:
                result = target(*args, **kwargs)
                record(path, args, kwargs, result)
                return result

            setattr(owner, name, wrapped)
            undo.append(lambda owner=owner, name=name: owner.__dict__.pop(name, None))
    try:
        paint(pipe, prompt, **options)
    finally:
        for step in undo:
            step()
    return list(rows.values())
