"""Chapter 4's exercises: CLIP's similarity matrix and its symmetric contrastive loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.checks.core import Answer, Case, Exercise, dtype_name, generator, plain_number_loss, randint, uniform

__all__ = ["check_similarity_matrix", "check_contrastive_loss"]

F = torch.nn.functional


def _unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True)


# ----------------------------------------------------------------------------- similarity matrix

def _similarity_cases(seed: int) -> list[Case]:
    g = generator(seed, 41)
    names = ("image_embeds", "text_embeds", "logit_scale")
    cases = []
    for images, texts, width, dtype in ((4, 3, 6, torch.float64), (1, randint(g, 2, 5), 8, torch.float32),
                                        (randint(g, 3, 6), 1, randint(g, 3, 9), torch.float32),
                                        (randint(g, 5, 7), randint(g, 2, 4), randint(g, 4, 10), torch.float64)):
        lengths = torch.rand(images, 1, generator=g, dtype=torch.float64) * 3 + 0.3
        image = (torch.randn(images, width, generator=g, dtype=torch.float64) * lengths).to(dtype)
        text = (torch.randn(texts, width, generator=g, dtype=torch.float64) * uniform(g, 0.5, 2.5)).to(dtype)
        scale = torch.tensor(uniform(g, 0.5, 2.5), dtype=dtype)
        cases.append(Case((image, text, scale), f"for {images} images and {texts} captions of width {width} "
                          f"({dtype_name(dtype)})", names))
    return cases


def _similarity_answer(case: Case) -> Answer:
    images, texts, scale = (a.double() for a in case.args)
    cos = _unit(images) @ _unit(texts).T
    slips = [
        ("you forgot to normalise the embeddings to unit length (the cosine needs both divided by their norm)",
         scale.exp() * images @ texts.T),
        ("only one side is normalised: divide both the image and the text embeddings by their norms",
         scale.exp() * _unit(images) @ texts.T),
        ("only one side is normalised: divide both the image and the text embeddings by their norms",
         scale.exp() * images @ _unit(texts).T),
        ("you normalised along the wrong axis: each embedding (each row) should get length 1",
         scale.exp() * _unit(images, 0) @ _unit(texts, 0).T),
        ("the matrix is transposed: rows are images (N), columns are captions (M)", scale.exp() * cos.T),
        ("the temperature is inverted: multiply by exp(logit_scale), do not divide", cos / scale.exp()),
        ("logit_scale is a logarithm: multiply by exp(logit_scale), not by logit_scale itself", scale * cos),
        ("you left out the temperature: multiply the cosines by exp(logit_scale)", cos),
    ]
    return Answer(scale.exp() * cos, slips, what="the similarity matrix")


SIMILARITY_MATRIX = Exercise("similarity matrix", _similarity_cases, _similarity_answer)


def check_similarity_matrix(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                            seed: int = 0) -> bool:
    """Check ``fn(image_embeds (N, D), text_embeds (M, D), logit_scale) -> logits (N, M)``.

    logits[i, j] = exp(logit_scale) · cos(image i, caption j): both sides normalised to unit length
    along the feature axis, then multiplied by the temperature's inverse exp(logit_scale).
    """
    return SIMILARITY_MATRIX.check(fn, seed=seed)


# ----------------------------------------------------------------------------- contrastive loss

def _contrastive_cases(seed: int) -> list[Case]:
    g = generator(seed, 42)
    cases = []
    for size, dtype in ((5, torch.float64), (randint(g, 2, 4), torch.float32), (randint(g, 6, 9), torch.float32),
                        (randint(g, 2, 8), torch.float64)):
        logits = (torch.randn(size, size, generator=g, dtype=torch.float64) * 3
                  + 2 * torch.eye(size, dtype=torch.float64))
        cases.append(Case((logits.to(dtype),), f"for a batch of {size} pairs ({dtype_name(dtype)})",
                          ("logits_per_image",)))
    return cases


def _contrastive_answer(case: Case) -> Answer:
    logits = case.args[0].double()
    targets = torch.arange(len(logits))
    rows, cols = F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)
    zeros = torch.zeros(len(logits), dtype=torch.long)
    one_way = "only one direction: average the image→caption loss (rows) and the caption→image loss (columns)"
    slips = [
        (one_way, rows),
        (one_way, cols),
        ("you added the two directions: CLIP takes their mean, ½ (rows + columns)", rows + cols),
        ("the sign is flipped: cross-entropy is minus the log-probability of the right pair", -(rows + cols) / 2),
        ("the targets are wrong: pair i is the diagonal entry (i, i), so the targets are 0, 1, ..., B−1",
         (F.cross_entropy(logits, zeros) + F.cross_entropy(logits.T, zeros)) / 2),
        ("you returned one loss per pair: average them into one number",
         (F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(logits.T, targets, reduction="none"))
         / 2),
    ]
    return Answer((rows + cols) / 2, slips, what="the loss")


def _contrastive_extra(case: Case, seen: dict) -> str | None:
    if problem := plain_number_loss(seen):
        return problem
    out = seen["out"]
    if out.numel() != 1 and out.shape != case.args[0].shape[:1]:
        return f"the loss should be one number (a 0-dim tensor); got shape {tuple(out.shape)}"
    return None


CONTRASTIVE_LOSS = Exercise("contrastive loss", _contrastive_cases, _contrastive_answer, extra=_contrastive_extra)


def check_contrastive_loss(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(logits_per_image (B, B)) -> loss``, CLIP's symmetric InfoNCE loss.

    loss = ½ [CE(logits, 0..B−1) + CE(logitsᵀ, 0..B−1)]: each image picks its caption among the B
    (rows), and each caption its image (columns); pair i sits on the diagonal.
    """
    return CONTRASTIVE_LOSS.check(fn, seed=seed)


EXERCISES = {"check_similarity_matrix": SIMILARITY_MATRIX, "check_contrastive_loss": CONTRASTIVE_LOSS}
