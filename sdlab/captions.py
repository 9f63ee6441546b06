"""Many ways to say the same scene: varied captions, so a text encoder learns meaning, not one template.

``sd.data.make_scenes`` writes every caption from one template ("a small red cat on the left,
blue background"). A text encoder trained only on that could memorise word positions, and a
reader who types "purple giraffe" or "a red cat on a blue backdrop" would get a random scene.
Here each scene is said in a small grammar of English: the subject four ways ("a small red cat",
"a red cat, small", "a small cat in red", "a cat, red"), with or without its article, the place
and the background before or after it, the background six ways ("blue background", "on blue",
"with a blue backdrop" ...). Size, position and background are sometimes left out, as people
leave them out; so, less often, is the colour. The animal is always said.

``wordings(spec)`` says one scene in every *family* of wordings the course evaluates, some of
them built in ways ``paraphrase`` never produces (``HELD_OUT_FAMILIES``), so that a model can be
measured on phrasings it never saw. ``unknown_words(prompt)`` names the words of a prompt that no
caption ever uses: the course's model never saw them, and cannot paint them.

    >>> captions = sd.captions.paraphrase(batch.labels, generator=g)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sdlab.data import ANIMALS, ATTRIBUTES, COLOURS, POSITIONS, SIZES, SceneSpec
from sdlab.random import rand, randint
from sdlab.validation import number_in_range

__all__ = ["SYNONYMS", "TEMPLATES", "BACKGROUND_PHRASES", "FAMILIES", "HELD_OUT_FAMILIES", "Wording",
           "paraphrase", "wordings", "stated", "vocabulary", "unknown_words", "attribute_prompts"]

SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
    "left": ("on the left", "at the left", "to the left", "on the left side"),
    "centre": ("in the centre", "in the middle", "in the center", "centred"),
    "right": ("on the right", "at the right", "to the right", "on the right side"),
}
# The first caption grammar, kept as five named templates (chapter 4 shows them): {size}, {where} and
# {background} may be empty; the template's own words around them go with them.
TEMPLATES: tuple[str, ...] = (
    "a{size} {colour} {animal}{where}{background}",
    "a {colour} {animal}{size_after}{where_after}{background}",
    "{where_first}a{size} {animal} in {colour}{background}",
    "a {animal}, {colour}{size_after}{where_after}{background}",
    "{background_first}a{size} {colour} {animal}{where}",
)
# How a caption may name the background {b}; "after" follows the rest, "first" opens the caption.
BACKGROUND_PHRASES: Mapping[str, tuple[str, ...]] = {
    "after": (", {b} background", " on a {b} background", " on {b}", " with a {b} background", ", {b} backdrop",
              " on a {b} backdrop"),
    "first": ("{b} background, ", "on a {b} background, "),
}
# The subject with its colour {c}, animal {a} and optional size {s} (empty, or the word with its spacing).
_SUBJECTS = ("{s} {c} {a}", " {c} {a}{s_after}", "{s} {a} in {c}", " {a}, {c}{s_after}")
_SUBJECTS_NO_COLOUR = ("{s} {a}", " {a}{s_after}")


def _english(caption: str) -> str:
    """"a orange cat" → "an orange cat": the article before a vowel; no stray spaces or commas."""
    caption = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", caption)
    return re.sub(r"\s+", " ", caption).strip(" ,")


def _phrases(size: str | None, where: str | None, background: str | None) -> dict[str, str]:
    """The optional pieces of a template, each with its own spacing and punctuation (or empty)."""
    return {
        "size": f" {size}" if size else "", "size_after": f", {size}" if size else "",
        "where": f" {where}" if where else "", "where_first": f"{where}, " if where else "",
        "where_after": f", {where}" if where else "",
        "background": f", {background} background" if background else "",
        "background_first": f"{background} background, " if background else "",
    }


def _labels(labels: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    missing = sorted(set(ATTRIBUTES) - set(labels))
    if missing:
        raise ValueError(f"labels must hold animal, colour, background, size and position; missing {missing}")
    return {k: [int(v) for v in labels[k].tolist()] for k in ATTRIBUTES}


def _say(choice: list[int], *, animal: str, colour: str | None, background: str | None, size: str | None,
         where: str | None) -> str:
    """One caption of the grammar; ``choice`` holds the seeded picks (subject, article, place, background)."""
    subjects = _SUBJECTS if colour else _SUBJECTS_NO_COLOUR
    subject = subjects[choice[0] % len(subjects)].format(
        a=animal, c=colour, s=f" {size}" if size else "", s_after=f", {size}" if size else "")
    subject = ("a" if choice[1] % 6 else "") + subject  # one caption in six has no article: "small red cat"
    where_first = where is not None and choice[2] % 3 == 0
    caption = f"{where}, {subject}" if where_first else subject + (
        "" if where is None else (", " if choice[2] % 2 else " ") + where)
    if background:
        first = choice[3] % 4 == 0 and not where_first  # the subject last after both is kept for evaluation
        phrases = BACKGROUND_PHRASES["first" if first else "after"]
        phrase = phrases[choice[3] // 4 % len(phrases)].format(b=background)
        caption = phrase + caption if first else caption + phrase
    return _english(caption)


def paraphrase(labels: Mapping[str, torch.Tensor], *, generator: torch.Generator | None = None,
               drop: float = 0.25, drop_colour: float = 0.0) -> list[str]:
    """One varied caption per scene: random wording, random synonyms, optional attributes dropped.

    Args:
        labels: the scenes' integer labels, as ``SceneBatch.labels`` (animal, colour, background, size,
            position), each (B,).
        generator: seeds every choice (drawn on its device).
        drop: the probability that each of size, position and background is left out.
        drop_colour: the probability that the animal's colour is left out ("a cat on blue"); the
            animal itself is always said.
    Returns:
        B captions, e.g. "a little red cat to the left, blue background", "red cat on a green backdrop"
        or "a cat in red".
    """
    drop = number_in_range(drop, "drop", 0, 1)
    drop_colour = number_in_range(drop_colour, "drop_colour", 0, 1)
    columns = _labels(labels)
    n = len(columns["animal"])
    picks = randint(0, 720720, (n, 6), generator=generator).tolist()  # subject, article, place, background, words
    keep = (rand((n, 4), generator=generator) >= torch.tensor([drop, drop, drop, drop_colour])).tolist()
    captions = []
    for i in range(n):
        size, position = SIZES[columns["size"][i]], POSITIONS[columns["position"][i]]
        captions.append(_say(
            picks[i], animal=ANIMALS[columns["animal"][i]],
            colour=COLOURS[columns["colour"][i]] if keep[i][3] else None,
            size=SYNONYMS[size][picks[i][4] % len(SYNONYMS[size])] if keep[i][0] else None,
            where=SYNONYMS[position][picks[i][5] % len(SYNONYMS[position])] if keep[i][1] else None,
            background=COLOURS[columns["background"][i]] if keep[i][2] else None))
    return captions


# ----------------------------------------------------------------------------- evaluation wordings

@dataclass(frozen=True)
class Wording:
    """One family of phrasings: how it says a scene, and which attributes it states (the rest are free)."""

    name: str
    says: tuple[str, ...]
    template: str  # str.format with animal, colour, background, size, where (the first synonym of each)
    held_out: bool = False  # True: a construction `paraphrase` never produces


_ALL = tuple(ATTRIBUTES)
FAMILIES: tuple[Wording, ...] = (
    Wording("canonical", _ALL, "a {size} {colour} {animal} {where}, {background} background"),
    Wording("colour after", _ALL, "a {colour} {animal}, {size}, {where}, {background} background"),
    Wording("place first", _ALL, "{where}, a {size} {animal} in {colour}, {background} background"),
    Wording("background first", _ALL, "{background} background, a {size} {colour} {animal} {where}"),
    Wording("on a backdrop", _ALL, "a {size} {colour} {animal} {where} on a {background} backdrop"),
    Wording("on colour", ("animal", "colour", "background"), "{colour} {animal} on {background}"),
    Wording("two words", ("animal", "colour"), "{colour} {animal}"),
    Wording("animal only", ("animal",), "a {animal}"),
    Wording("size and place", ("animal", "size", "position"), "{size} {animal} {where}"),
    # held out: orders and combinations of known words that the training grammar never makes
    Wording("background in the middle", _ALL, "a {size} {colour} {animal} on a {background} background, {where}",
            held_out=True),
    Wording("place, background, animal", _ALL, "{where}, {background} background, a {size} {colour} {animal}",
            held_out=True),
    Wording("colour before size", ("animal", "colour", "size", "background"),
            "a {colour} {size} {animal} with a {background} backdrop", held_out=True),
)
HELD_OUT_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.held_out)


def wordings(spec: SceneSpec, families: tuple[Wording, ...] = FAMILIES, *, variant: int = 0) -> dict[str, str]:
    """The scene said in each family of wordings: ``{family name: prompt}``.

    ``variant`` picks the synonyms of size and place ("small", "little", "tiny"; "on the left", "to the
    left" ...): 0 says the first of each, other numbers cycle through them.
    """
    def synonym(word: str) -> str:
        options = SYNONYMS[word]
        return options[variant % len(options)]

    words = {"animal": spec.animal, "colour": spec.colour, "background": spec.background,
             "size": synonym(spec.size), "where": synonym(spec.position)}
    return {f.name: _english(f.template.format(**words)) for f in families}


def stated(prompt: str) -> dict[str, str]:
    """What a prompt in the course's words says about each attribute; the ones it leaves free are absent.

    A colour followed by "background" or "backdrop", or after "on" ("on blue", "on a blue backdrop"),
    is the background's; another colour is the animal's. Synonyms map to the label ("little" → small,
    "to the left" → left).

    >>> stated("a little red cat on a blue backdrop")
    {'animal': 'cat', 'colour': 'red', 'background': 'blue', 'size': 'small'}
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string; got {type(prompt).__name__}")
    text = " " + re.sub(r"[^a-z ]+", " ", prompt.lower()) + " "
    words = text.split()
    out: dict[str, str] = {}
    for i, word in enumerate(words):
        if word in ANIMALS and "animal" not in out:
            out["animal"] = word
        elif word in COLOURS:
            background = (i + 1 < len(words) and words[i + 1] in ("background", "backdrop")) or (
                "on" in words[max(0, i - 2):i])
            out.setdefault("background" if background else "colour", word)
    for label in (*SIZES, *POSITIONS):
        if any(f" {phrase} " in text for phrase in SYNONYMS[label]):
            out.setdefault("size" if label in SIZES else "position", label)
    return {k: out[k] for k in _ALL if k in out}


@functools.cache
def vocabulary() -> frozenset[str]:
    """Every word a caption of the course can use (lower case): what the course's model was trained to read."""
    words = set(ANIMALS) | set(COLOURS) | {"a", "an", "background", "backdrop", "in", "on", "with"}
    for phrases in SYNONYMS.values():
        words |= {w for phrase in phrases for w in phrase.split()}
    return frozenset(words)


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` that no caption of the course uses, in order, once each ("crimson", "kitty")."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string; got {type(prompt).__name__}")
    seen: list[str] = []
    for word in re.findall(r"[a-z']+", prompt.lower()):
        if word not in vocabulary() and word not in seen:
            seen.append(word)
    return seen


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
