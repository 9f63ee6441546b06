"""Classifier-free guidance (Ho & Salimans 2022), as diffusers' Stable Diffusion pipeline applies it.

One network predicts the noise twice per step: with the prompt's token states and with those of
the empty prompt (or of a negative prompt). The guided prediction moves past the conditional one,
away from the unconditional one:

    ε̂ = ε̂_uncond + s · (ε̂_cond − ε̂_uncond)

Conventions, kept identical to ``StableDiffusionPipeline``: both branches run in one batched forward
pass, unconditional half first; a scale of exactly 1 is the conditional prediction alone, and the
pass is then not doubled. Scales below 1 are refused here (diffusers' pipelines silently switch
guidance off for them, which is not what the formula says); for unconditional pictures, prompt ``""``.
"""

from __future__ import annotations

import torch
from torch import nn

from sdlab.text_unet import check_text_states
from sdlab.unet import predict_noise
from sdlab.validation import number_in_range

__all__ = ["MAX_GUIDANCE_SCALE", "check_guidance_scale", "classifier_free_guidance", "guided_noise", "generate",
           "adherence", "wording_adherence", "diversity", "guidance_sweep"]

MAX_GUIDANCE_SCALE = 30.0  # far past any useful value: pictures saturate long before


def check_guidance_scale(scale: float) -> float:
    """The guidance scale as a float in [1, 30], or a ValueError that says what to do instead."""
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 <= scale < 1:
        raise ValueError(f"guidance_scale must be at least 1; got {scale}. Scale 1 is the conditional prediction "
                         "alone (no guidance); diffusers' pipelines treat any scale <= 1 that way. For pictures "
                         "that ignore the prompt (the unconditional model), use the prompt \"\" with scale 1.")
    return number_in_range(scale, "guidance_scale", 1.0, MAX_GUIDANCE_SCALE)


def classifier_free_guidance(noise_uncond: torch.Tensor, noise_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂_uncond + s · (ε̂_cond − ε̂_uncond): both predictions (B, C, H, W), the guided one of the same shape."""
    if noise_uncond.shape != noise_cond.shape:
        raise ValueError(f"the two predictions differ in shape: {tuple(noise_uncond.shape)} (unconditional) vs "
                         f"{tuple(noise_cond.shape)} (conditional)")
    return noise_uncond + check_guidance_scale(scale) * (noise_cond - noise_uncond)


def guided_noise(unet: nn.Module, latents: torch.Tensor, t: torch.Tensor | int, *, cond_states: torch.Tensor,
                 uncond_states: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """The guided noise prediction of one step, both branches in one batched pass (as diffusers' pipeline).

    Args:
        latents: (B, C, h, w) noisy latents x_t. t: the timestep (an int or (B,)).
        cond_states: (B, L, D) token states of the prompts. uncond_states: (B, L, D) of the empty or
            negative prompts (a (1, L, D) row is repeated for the batch; None at scale 1).
        guidance_scale: s ≥ 1; at exactly 1 only the conditional branch runs.

    Returns:
        ε̂: (B, C, h, w).
    """
    scale = check_guidance_scale(guidance_scale)
    check_text_states(unet, cond_states)
    if scale == 1.0:
        return predict_noise(unet, latents, t, encoder_hidden_states=cond_states)
    check_text_states(unet, uncond_states)
    uncond_states = uncond_states.expand(latents.shape[0], *uncond_states.shape[1:]) \
        if uncond_states.shape[0] == 1 else uncond_states
    if uncond_states.shape != cond_states.shape:
        raise ValueError(f"uncond_states {tuple(uncond_states.shape)} must match cond_states "
                         f"{tuple(cond_states.shape)} (or be one (1, L, D) row)")
    t = torch.as_tensor(t, device=latents.device)
    t = t.expand(latents.shape[0]) if t.dim() == 0 else t
    both = predict_noise(unet, torch.cat([latents, latents]), torch.cat([t, t]),
                         encoder_hidden_states=torch.cat([uncond_states, cond_states]))
    noise_uncond, noise_cond = both.chunk(2)
    return classifier_free_guidance(noise_uncond, noise_cond, scale)


def generate(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, prompts: str | list[str], *,
             guidance_scale: float = 7.5, negative_prompt: str = "", num_inference_steps: int = 20,
             sampler=None, generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Pictures from prompts, the way Stable Diffusion makes them: random latents, guided denoising, one decode.

    Kept for chapter 6, whose models are not yet a pipeline: `sd.pipeline.paint`, the library's one
    generation path, over these three gathered as `sd.pipeline.Parts`.

    Args:
        unet: a text-conditioned noise predictor (`sdlab.text_unet.make_text_unet`).
        text_encoder: the ``CLIPTextModel`` it was trained with. vae: the autoencoder of its latents.
        prompts: one prompt per picture.
        guidance_scale: s ≥ 1 (1: no guidance). negative_prompt: replaces the empty prompt of the
            unconditional branch.
        num_inference_steps: denoising steps. sampler: a sampler with diffusers' protocol (default:
            `sdlab.text_unet.latent_sampler`, DDIM as the shipped U-Net was trained for).
        generator: seeds the starting latents (and a stochastic sampler's steps).

    Returns:
        (B, 3, H, W) pictures in [−1, 1].
    """
    from sdlab.pipeline import Parts, paint

    parts = Parts(unet=unet, text_encoder=text_encoder, vae=vae, scheduler=sampler)
    return paint(parts, prompts, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                 num_inference_steps=num_inference_steps, generator=generator, progress=progress)


def adherence(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, judge: nn.Module, scenes, *,
              guidance_scale: float, batch_size: int = 100, **options) -> dict[str, float]:
    """How often pictures made from ``scenes``' captions show what the captions say, per attribute (the judge's view).

    Args:
        scenes: a ``SceneBatch``; its (canonical) captions are the prompts, its labels the truth.
        guidance_scale: as in `generate`; use prompts of ``""`` for the unconditional model instead.
        options: passed to `generate` (``num_inference_steps``, ``generator``, ``negative_prompt`` ...).

    Returns:
        {attribute: share of pictures the judge reads as the caption says, ..., "all": all five right}.
    """
    from sdlab.judge import judge_accuracy

    images = _generate_in_batches(unet, text_encoder, vae, list(scenes.captions), batch_size=batch_size,
                                  guidance_scale=guidance_scale, **options)
    return judge_accuracy(judge, scenes, images)


def _generate_in_batches(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, prompts: list[str], *,
                         batch_size: int, **options) -> torch.Tensor:
    """`generate` over ``prompts`` ``batch_size`` at a time (one generator carries on across batches)."""
    return torch.cat([generate(unet, text_encoder, vae, prompts[i : i + batch_size], **options)
                      for i in range(0, len(prompts), batch_size)])


def diversity(features: torch.Tensor, per_prompt: int) -> float:
    """How different the pictures of one prompt are: the mean distance between their feature vectors.

    Args:
        features: (n · per_prompt, D), the pictures of each prompt next to each other
            (``sd.judge.features`` of ``generate([p0, p0, p1, p1, ...])``).
        per_prompt: pictures per prompt (≥ 2).

    Returns:
        The mean Euclidean distance over all pairs of pictures of the same prompt, averaged over prompts.
    """
    from sdlab.validation import int_in_range

    per_prompt = int_in_range(per_prompt, "per_prompt", 2)
    if features.dim() != 2 or features.shape[0] % per_prompt:
        raise ValueError(f"features must be (n · {per_prompt}, D); got {tuple(features.shape)}")
    groups = features.double().reshape(-1, per_prompt, features.shape[1])
    distances = torch.cdist(groups, groups)  # (n, k, k), zero on the diagonal
    return (distances.sum((1, 2)) / (per_prompt * (per_prompt - 1))).mean().item()


def guidance_sweep(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, judge: nn.Module, scenes, *,
                   scales, reference, per_prompt: int = 2, seed: int = 0, progress: bool = True,
                   **options) -> list[dict]:
    """Adherence, diversity and quality of the pictures of ``scenes``' captions at each guidance scale.

    Args:
        scenes: a ``SceneBatch``; each caption is a prompt, ``per_prompt`` times; its labels are the truth.
        scales: guidance scales ≥ 1, and ``"uncond"`` for the unconditional model (prompt ``""``,
            judged against the same captions: the chance level).
        reference: real scenes (a ``SceneBatch``, as many as pictures) for the Fréchet distance.
        seed: the same starting noise at every scale, so that the rows differ by the scale alone.
        options: for `generate` (``num_inference_steps``, ``sampler``, ``batch_size`` of `adherence`...).

    Returns:
        One dict per scale: ``{"scale", <attribute>: adherence, "all", "diversity", "frechet"}``;
        diversity is `diversity` of the judge's features, frechet the Fréchet distance of those
        features to the reference's (``sd.evaluate.frechet_distance``).
    """
    from dataclasses import replace

    from sdlab.evaluate import frechet_distance
    from sdlab.judge import features, judge_accuracy
    from sdlab.progress import bar

    repeat = torch.arange(len(scenes.captions)).repeat_interleave(per_prompt)
    prompts = [scenes.captions[i] for i in repeat.tolist()]
    truth = replace(scenes, images=scenes.images[repeat], masks=scenes.masks[repeat], captions=prompts,
                    **{k: v[repeat] for k, v in scenes.labels.items()})
    batch_size = options.pop("batch_size", 100)
    real = features(judge, reference.images)
    rows = []
    for scale in bar(list(scales), desc="guidance scales", disable=not progress):
        unconditional = scale == "uncond"
        chosen = [""] * len(prompts) if unconditional else prompts
        images = _generate_in_batches(unet, text_encoder, vae, chosen, batch_size=batch_size,
                                      generator=torch.Generator().manual_seed(seed),
                                      guidance_scale=1.0 if unconditional else scale, **options)
        seen = features(judge, images)
        rows.append({"scale": scale, **judge_accuracy(judge, truth, images),
                     "diversity": diversity(seen, per_prompt), "frechet": frechet_distance(seen, real)})
    return rows


def wording_adherence(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, judge: nn.Module, scenes, *,
                      families=None, guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 100,
                      progress: bool = True, **options) -> dict[str, dict[str, float]]:
    """How often the pictures show what the prompt says, for each family of wordings (`sd.captions.FAMILIES`).

    Every scene is said once per family ("a small red cat on the left, blue background", "red cat on
    blue", "a cat" ...), with its size and place synonyms cycling from scene to scene; every family's
    pictures start from the same noise, so the rows differ by the wording alone. Only the attributes a
    family states are judged: "red cat" may be on any background.

    Args:
        scenes: a ``SceneBatch`` (its labels are the truth; its own captions are not used).
        families: the `sd.captions.Wording` families to say the scenes in (default: all of them).
        guidance_scale, options: as in `generate` (``num_inference_steps``, ``sampler`` ...).

    Returns:
        ``{family: {stated attribute: share right, ..., "all": every stated attribute right}}``.
    """
    from sdlab.captions import FAMILIES, wordings
    from sdlab.judge import predict
    from sdlab.progress import bar

    families = FAMILIES if families is None else tuple(families)
    specs = scenes.specs()
    truth = {name: value.cpu() for name, value in scenes.labels.items()}
    out = {}
    for family in bar(families, desc="wordings", disable=not progress):
        prompts = [wordings(spec, (family,), variant=i)[family.name] for i, spec in enumerate(specs)]
        images = _generate_in_batches(unet, text_encoder, vae, prompts, batch_size=batch_size,
                                      guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                                      **options)
        guess = predict(judge, images)
        right = {name: guess[name] == truth[name] for name in family.says}
        row = {name: r.double().mean().item() for name, r in right.items()}
        row["all"] = torch.stack(list(right.values())).all(0).double().mean().item()
        out[family.name] = row
    return out
