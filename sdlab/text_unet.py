"""Chapter 6: the text-conditioned noise predictor, a ``diffusers.UNet2DConditionModel`` on the VAE's latents.

The model is the library class itself (so chapter 7's ``StableDiffusionPipeline`` takes it as its
``unet``, and it loads where ``sdlab`` is not installed), in a configuration small enough to train
on a laptop CPU. Around it this module adds what training needs:

- ``make_text_unet``: the course's configuration; cross-attention as wide as the text tower.
- ``check_text_states``: a clear message when token states and cross-attention do not match
  (diffusers itself only raises a bare ``mat1 and mat2 shapes cannot be multiplied``).
- ``LatentScenes`` / ``encode_scenes``: captioned scenes encoded once by the VAE (encoding costs as
  much as a training step, so it is done before training, not in every step).
- ``text_unet_loss``: the ε-prediction loss on those latents, conditioned on the frozen text tower's
  token states, with **caption dropout**: a share of the captions replaced by the empty prompt
  ``""``, encoded by the same tower, so that one network learns the unconditional noise too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from sdlab.random import rand, randint
from sdlab.schedules import NoiseSchedule
from sdlab.validation import number_in_range, positive_int

__all__ = ["make_text_unet", "load_into", "check_text_states", "LatentScenes", "encode_scenes", "encode_prompts",
           "text_unet_loss", "latent_sampler", "record_sampler"]


def make_text_unet(*, cross_attention_dim: int = 128, block_out_channels: tuple[int, ...] = (32, 64, 64),
                   sample_size: int = 16, latent_channels: int = 4, attention_head_dim: int = 8,
                   attention: tuple[bool, ...] | None = None, pooled_text: bool = False,
                   **config) -> UNet2DConditionModel:
    """A fresh ``UNet2DConditionModel`` in the course's configuration, Stable Diffusion's layout made small.

    A level with attention has a transformer block (self-attention, then cross-attention to the
    text, then a feed-forward layer) after each resnet, as Stable Diffusion 1's levels have; so has
    the middle, always.

    Args:
        cross_attention_dim: the width of the token states it reads (mini-CLIP's text tower: 128).
        block_out_channels: the width of each level; each level but the last halves the resolution.
        sample_size: latent side (chapter 5's factor-4 latents of 64 × 64 scenes: 16).
        attention_head_dim: despite its name, the number of heads of every attention layer (a
            naming slip diffusers keeps for compatibility; Stable Diffusion 1 sets 8). Each head
            is then (level width) / 8 channels wide.
        attention: per level, whether it attends (default: every level but the lowest, Stable
            Diffusion 1's choice; ``(False, True, True)`` spares the costly full-resolution level).
        pooled_text: also add the token states, attention-pooled, to the time embedding (diffusers'
            ``addition_embed_type="text"``, as in Imagen and DeepFloyd IF): every resnet then hears the
            whole prompt, not only the levels that cross-attend. ``StableDiffusionPipeline`` needs
            nothing more: the U-Net pools the ``encoder_hidden_states`` it is given.
        config: any other ``UNet2DConditionModel`` argument (``layers_per_block``, ``norm_num_groups`` ...).
    """
    channels = tuple(positive_int(c, "block_out_channels") for c in block_out_channels)
    n = len(channels)
    attention = tuple(attention) if attention is not None else (True,) * (n - 1) + (False,)
    if len(attention) != n or not all(isinstance(a, bool) for a in attention):
        raise ValueError(f"attention must hold one True/False per level ({n}); got {attention!r}")
    settings = dict(sample_size=positive_int(sample_size, "sample_size"), in_channels=latent_channels,
                    out_channels=latent_channels, layers_per_block=1, norm_num_groups=8,
                    cross_attention_dim=positive_int(cross_attention_dim, "cross_attention_dim"),
                    attention_head_dim=positive_int(attention_head_dim, "attention_head_dim"))
    if pooled_text:
        settings.update(addition_embed_type="text", addition_embed_type_num_heads=attention_head_dim)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DConditionModel(down_block_types=down, up_block_types=up,
                                block_out_channels=channels, **{**settings, **config})


def load_into(unet: UNet2DConditionModel, folder) -> UNet2DConditionModel:
    """Copy a saved U-Net's weights into ``unet``, which may add the pooled-prompt embedding (``pooled_text``).

    A part ``unet`` has and the saved one lacks may only be that embedding; it starts at zero (its last
    LayerNorm's scale and shift are 0), so the model begins by computing exactly what the saved one did.
    """
    saved = UNet2DConditionModel.from_pretrained(folder, low_cpu_mem_usage=False)
    missing, unexpected = unet.load_state_dict(saved.state_dict(), strict=False)
    if unexpected or any(not k.startswith("add_embedding.") for k in missing):
        raise ValueError(f"the U-Net in {folder} does not fit: missing {missing}, unexpected {unexpected}")
    if missing:
        with torch.no_grad():
            unet.add_embedding.norm2.weight.zero_()
            unet.add_embedding.norm2.bias.zero_()
    return unet


def check_text_states(unet: nn.Module, encoder_hidden_states: torch.Tensor) -> None:
    """Raise a ValueError that says what to change when token states do not fit the U-Net's cross-attention."""
    width = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    states = encoder_hidden_states
    if not isinstance(states, torch.Tensor) or states.dim() != 3:
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"encoder_hidden_states must be token states (B, tokens, {width}); got {shape}")
    if width is not None and states.shape[-1] != width:
        raise ValueError(f"the token states are {states.shape[-1]} wide but this U-Net's cross-attention reads "
                         f"{width}-wide states (cross_attention_dim={width}): use the text encoder it was trained "
                         f"with, or build the U-Net with make_text_unet(cross_attention_dim={states.shape[-1]})")


@dataclass(frozen=True)
class LatentScenes:
    """Captioned scenes, encoded once: what the text-conditioned U-Net trains on.

    Attributes:
        latents: (N, 4, h, w) float16, scaled (``sd.vae.encode``: the means of the encoder's Gaussians).
        input_ids: (N, 77) int32, each scene's caption padded to 77 tokens, as the pipeline feeds them.
        labels: {attribute: (N,) int64}, the scenes' labels (``SceneBatch.labels``).
        captions: the N captions.
    """

    latents: torch.Tensor
    input_ids: torch.Tensor
    labels: dict[str, torch.Tensor]
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (with replacement): ``(latents (B, 4, h, w) float32, input_ids (B, 77) int64)``."""
        index = randint(0, len(self), (positive_int(batch_size, "batch_size"),), generator=generator,
                        device=generator.device).to(self.latents.device)
        return self.latents[index].float(), self.input_ids[index].long()


def encode_prompts(text_encoder: nn.Module, prompts: str | list[str] | tuple[str, ...] | torch.Tensor, *,
                   tokenizer=None) -> torch.Tensor:
    """Token states (B, 77, width) of prompts (or of their (B, 77) ids), as diffusers' pipeline computes them.

    Like ``StableDiffusionPipeline.encode_prompt``: padded to 77 tokens, no attention mask, the last hidden state.
    ``tokenizer``: the pipeline's own (default: CLIP's, `sd.tokenizer.load_tokenizer`).
    """
    from sdlab.tokenizer import tokenize

    device = next(text_encoder.parameters()).device
    ids = prompts if isinstance(prompts, torch.Tensor) else tokenize(prompts, tokenizer=tokenizer)["input_ids"]
    with torch.no_grad():
        return text_encoder(input_ids=ids.to(device)).last_hidden_state


@torch.no_grad()
def encode_scenes(vae: nn.Module, n: int, *, generator: torch.Generator, batch_size: int = 250,
                  drop: float = 0.1, drop_colour: float = 0.0, progress: bool = True, **scenes) -> LatentScenes:
    """Render ``n`` training scenes (``sd.data.SCENES``; held-out pairs excluded), caption and encode them.

    Captions are varied paraphrases (``sd.captions.paraphrase``; ``drop``: the chance that each of size,
    place and background is left out; ``drop_colour``: that the animal's colour is), so the U-Net learns
    what the words mean, not one template.
    """
    from sdlab.captions import paraphrase
    from sdlab.data import SCENES, make_scenes
    from sdlab.progress import bar
    from sdlab.tokenizer import tokenize
    from sdlab.vae import encode

    n, batch_size = positive_int(n, "n"), positive_int(batch_size, "batch_size")
    device = next(vae.parameters()).device
    vae.eval()
    latents, ids, captions, labels = [], [], [], []
    for start in bar(range(0, n, batch_size), disable=not progress, desc="encoding scenes"):
        batch = make_scenes(min(batch_size, n - start), generator=generator, device=device, **{**SCENES, **scenes})
        words = paraphrase(batch.labels, generator=generator, drop=drop, drop_colour=drop_colour)
        latents.append(encode(vae, batch.images, sample=False).half().cpu())
        ids.append(tokenize(words)["input_ids"].int())
        captions += words
        labels.append({k: v.cpu() for k, v in batch.labels.items()})
    return LatentScenes(latents=torch.cat(latents), input_ids=torch.cat(ids),
                        labels={k: torch.cat([b[k] for b in labels]) for k in labels[0]}, captions=tuple(captions))


@functools.cache
def _empty_prompt_ids() -> torch.Tensor:
    """The ids of ``""`` padded to 77 (BOS, then EOS), tokenized once rather than in every training step."""
    from sdlab.tokenizer import tokenize

    return tokenize([""])["input_ids"]


def text_unet_loss(unet: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator | None = None,
                   *, schedule: NoiseSchedule, text_encoder: nn.Module, caption_dropout: float = 0.1,
                   prediction_type: str = "epsilon", snr_gamma: float | None = None) -> torch.Tensor:
    """The diffusion loss of one batch of ``LatentScenes.batch``, with caption dropout.

    Each caption is replaced by the empty prompt ``""`` with probability ``caption_dropout``; the
    (frozen) ``text_encoder`` encodes the result, and the U-Net predicts the noise of the noised
    latents from those token states (``sd.train.diffusion_loss``, whose ``prediction_type`` and
    ``snr_gamma`` pass through).
    """
    from sdlab.train import diffusion_loss

    caption_dropout = number_in_range(caption_dropout, "caption_dropout", 0, 1)
    latents, ids = batch
    device = latents.device
    empty = _empty_prompt_ids().to(device)
    dropped = rand((ids.shape[0],), generator=generator, device=device) < caption_dropout
    ids = torch.where(dropped[:, None], empty, ids.to(device))
    states = encode_prompts(text_encoder, ids)
    check_text_states(unet, states)
    return diffusion_loss(unet, schedule, latents, generator=generator, cond={"encoder_hidden_states": states},
                          prediction_type=prediction_type, snr_gamma=snr_gamma)


def latent_sampler(schedule: str = "cosine", prediction_type: str = "v_prediction", **options):
    """DDIM set up for latents as chapter 6's U-Net needs it (the defaults are its training recipe's).

    x̂0 is not clipped (latents do not live in [−1, 1]); timesteps are "trailing", so that sampling
    starts at t = T − 1, where the cosine schedule leaves no signal (ᾱ ≈ 2e-9) and the noise one
    starts from is what the network was trained to see there. ``steps_offset=1`` changes nothing with
    trailing timesteps but is what diffusers' pipelines expect (they warn otherwise). ``options`` go to
    ``DDIMSampler``.
    """
    from sdlab.samplers import DDIMSampler

    return DDIMSampler(NoiseSchedule(schedule), prediction_type=prediction_type,
                       **{"clip_sample": False, "timestep_spacing": "trailing", "steps_offset": 1, **options})


def record_sampler(record: dict, **options):
    """The `latent_sampler` that a training record's U-Net was trained for: its schedule and prediction type.

    Records older than v-prediction name no prediction type; their U-Nets predict ε.
    """
    return latent_sampler(record["schedule"], record.get("prediction_type", "epsilon"), **options)
