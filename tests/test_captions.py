"""Varied captions: every scene said many ways, the animal and colour always, the rest sometimes."""

import pytest
import torch

import sdlab as sd
from sdlab.captions import SYNONYMS, attribute_prompts, paraphrase


def scenes(n=64, seed=0):
    return sd.data.make_scenes(n, generator=torch.Generator().manual_seed(seed))


def test_paraphrases_are_seeded_and_varied():
    batch = scenes()
    a = paraphrase(batch.labels, generator=torch.Generator().manual_seed(1))
    b = paraphrase(batch.labels, generator=torch.Generator().manual_seed(1))
    c = paraphrase(batch.labels, generator=torch.Generator().manual_seed(2))
    assert a == b and a != c and len(set(a)) > 48


def test_the_animal_and_its_colour_are_always_said():
    batch = scenes(200)
    for spec, caption in zip(batch.specs(), paraphrase(batch.labels, generator=torch.Generator().manual_seed(0),
                                                       drop=1.0)):
        assert spec.animal in caption.replace(",", " ").split() and spec.colour in caption.replace(",", " ").split()
        words = set(caption.replace(",", " ").split())
        assert spec.background not in words - {spec.colour} and "background" not in words  # dropped
        assert not words & {"left", "right", "centre", "center", "middle", "centred"}


def test_with_nothing_dropped_every_attribute_is_said():
    batch = scenes(100)
    for spec, caption in zip(batch.specs(), paraphrase(batch.labels, generator=torch.Generator().manual_seed(0),
                                                       drop=0.0)):
        assert any(word in caption for word in SYNONYMS[spec.size]), caption
        assert any(place in caption for place in SYNONYMS[spec.position]), caption
        assert f"{spec.background} background" in caption, caption


def test_articles_agree_with_the_next_word():
    labels = {k: torch.tensor([i]) for k, i in
              [("animal", sd.data.ANIMALS.index("elephant")), ("colour", sd.data.COLOURS.index("orange")),
               ("background", 0), ("size", 0), ("position", 0)]}
    for seed in range(20):
        caption = paraphrase(labels, generator=torch.Generator().manual_seed(seed))[0]
        assert " a orange" not in f" {caption}" and " a elephant" not in f" {caption}", caption


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"drop must be a number in \[0, 1\]; got 1.5"):
        paraphrase(scenes(2).labels, drop=1.5)
    with pytest.raises(ValueError, match=r"missing \['position'\]"):
        paraphrase({k: v for k, v in scenes(2).labels.items() if k != "position"})
    with pytest.raises(ValueError, match="attribute must be one of"):
        attribute_prompts("mood")


@pytest.mark.parametrize("attribute, values, per_value", [
    ("animal", sd.data.ANIMALS, len(sd.data.COLOURS)),
    ("colour", sd.data.COLOURS, len(sd.data.ANIMALS)),
    ("size", sd.data.SIZES, len(sd.data.ANIMALS) * len(sd.data.COLOURS)),
    ("position", sd.data.POSITIONS, len(sd.data.ANIMALS) * len(sd.data.COLOURS)),
])
def test_attribute_prompts_name_each_value(attribute, values, per_value):
    prompts = attribute_prompts(attribute)
    assert tuple(prompts) == values and all(len(p) == per_value for p in prompts.values())
    first = values[0]
    words = SYNONYMS.get(first, (first,))[0]
    assert all(words in p for p in prompts[first])
