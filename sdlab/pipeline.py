"""Chapter 7: the course's parts assembled into a genuine ``diffusers.StableDiffusionPipeline``.

Each part already is a library class: chapter 4's ``CLIPTokenizer`` and ``CLIPTextModel``, chapter
5's ``AutoencoderKL`` and chapter 6's ``UNet2DConditionModel``. The scheduler is diffusers' own
``DDIMScheduler``, configured from the course's sampler (``sdlab.text_unet.latent_sampler``), so
that it knows what the U-Net predicts. Saved with ``save_pretrained``, the folder loads with plain
diffusers and transformers where ``sdlab`` is not installed.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["make_scheduler", "assemble", "save_pipeline"]


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
    from sdlab.text_unet import latent_sampler
    from sdlab.tokenizer import load_tokenizer

    unet, record = load_pretrained("text_unet", device=device)
    text_encoder = load_pretrained("miniclip", device=device)[0].text_model.float()
    vae = load_pretrained("vae_f4", device=device)[0]
    scheduler = make_scheduler(latent_sampler(record["schedule"], record["prediction_type"]))
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=load_tokenizer(),
                                   unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Write ``pipe`` with ``save_pretrained`` (safetensors) into ``folder``, whole or not at all."""
    from sdlab.pretrained import replace_folder

    folder = Path(folder)
    replace_folder(folder, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))
    return folder
