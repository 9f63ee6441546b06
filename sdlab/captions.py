"""Many ways to say the same scene: varied captions, so a text encoder learns meaning, not one template.

``sd.data.make_scenes`` writes every caption from one template ("a small red cat on the left,
blue background"). A text encoder trained only on that could memorise word positions. Here
each scene is described with varied word order and synonyms ("a little red cat, left side,
on blue"), and the size, position and background are sometimes left out, as people leave
them out. The animal and its colour are always said.

    >>> captions = sd.captions.paraphrase(batch.labels, generator=g)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sdlab.data import ANIMALS, COLOURS, POSITIONS, SIZES
from sdlab.random import rand, randint
from sdlab.validation import number_in_range

__all__ = ["SYNONYMS", "TEMPLATES", "paraphrase", "attribute_prompts"]

SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
    "left": ("on the left", "at the left", "to the left", "on the left side"),
    "centre": ("in the centre", "in the middle", "in the center", "centred"),
    "right": ("on the right", "at the right", "to the right", "on the right side"),
}
# {size}, {where} and {background} may be empty; the template's own words around them go with them.
TEMPLATES: tuple[str, ...] = (
    "a{size} {colour} {animal}{where}{background}",
    "a {colour} {animal}{size_after}{where_after}{background}",
    "{where_first}a{size} {animal} in {colour}{background}",
    "a {animal}, {colour}{size_after}{where_after}{background}",
    "{background_first}a{size} {colour} {animal}{where}",
)


def _english(caption: str) -> str:
    """"a orange cat" → "an orange cat": the article before a vowel."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", caption)


def _phrases(size: str | None, where: str | None, background: str | None) -> dict[str, str]:
    """The optional pieces of a template, each with its own spacing and punctuation (or empty)."""
    return {
        "size": f" {size}" if size else "", "size_after": f", {size}" if size else "",
        "where": f" {where}" if where else "", "where_first": f"{where}, " if where else "",
        "where_after": f", {where}" if where else "",
        "background": f", {background} background" if background else "",
        "background_first": f"{background} background, " if background else "",
    }


def paraphrase(labels: Mapping[str, torch.Tensor], *, generator: torch.Generator | None = None,
               drop: float = 0.25) -> list[str]:
    """One varied caption per scene: a random template, random synonyms, optional attributes dropped.

    Args:
        labels: the scenes' integer labels, as ``SceneBatch.labels`` (animal, colour, background, size,
            position), each (B,).
        generator: seeds every choice (drawn on its device).
        drop: the probability that each of size, position and background is left out.
    Returns:
        B captions, e.g. "a little red cat to the left, blue background" or "a cat in red".
    """
    drop = number_in_range(drop, "drop", 0, 1)
    missing = sorted({"animal", "colour", "background", "size", "position"} - set(labels))
    if missing:
        raise ValueError(f"labels must hold animal, colour, background, size and position; missing {missing}")
    columns = {k: [int(v) for v in labels[k].tolist()] for k in ("animal", "colour", "background", "size", "position")}
    n = len(columns["animal"])
    picks = randint(0, 12, (n, 3), generator=generator).tolist()  # template, size word, place word
    keep = (rand((n, 3), generator=generator) >= drop).tolist()  # size, position, background said?
    captions = []
    for i in range(n):
        size, position = SIZES[columns["size"][i]], POSITIONS[columns["position"][i]]
        size_word = SYNONYMS[size][picks[i][1] % len(SYNONYMS[size])]
        where = SYNONYMS[position][picks[i][2] % len(SYNONYMS[position])]
        pieces = _phrases(size_word if keep[i][0] else None, where if keep[i][1] else None,
                          COLOURS[columns["background"][i]] if keep[i][2] else None)
        template = TEMPLATES[picks[i][0] % len(TEMPLATES)]
        captions.append(_english(template.format(colour=COLOURS[columns["colour"][i]],
                                                 animal=ANIMALS[columns["animal"][i]], **pieces)))
    return captions


def attribute_prompts(attribute: str) -> dict[str, list[str]]:
    """Prompts that name one value of one attribute, for zero-shot classification by prompt ensembles.

    For each value (e.g. each animal), the prompts are canonical captions of every combination of the
    other attributes, so the mean of their embeddings stands for "a scene with that value" (CLIP's
    prompt ensembling, Radford et al. 2021, sec. 3.1.4).

    Returns:
        {value: [prompts]} for the values of ``attribute`` (one of animal, colour, background, size, position).
    """
    values = {"animal": ANIMALS, "colour": COLOURS, "background": COLOURS, "size": SIZES, "position": POSITIONS}
    if attribute not in values:
        raise ValueError(f"attribute must be one of {tuple(values)}; got {attribute!r}")
    out: dict[str, list[str]] = {}
    for value in values[attribute]:
        prompts = []
        for animal in (ANIMALS if attribute != "animal" else (value,)):
            for colour in (COLOURS if attribute != "colour" else (value,)):
                for background in (COLOURS if attribute != "background" else (value,)):
                    if background == colour:
                        continue
                    size = value if attribute == "size" else "small"
                    where = SYNONYMS[value][0] if attribute == "position" else None
                    pieces = _phrases(size if attribute == "size" else None, where,
                                      background if attribute == "background" else None)
                    prompts.append(_english(TEMPLATES[0].format(colour=colour, animal=animal, **pieces)))
        out[value] = sorted(set(prompts))
    return out
