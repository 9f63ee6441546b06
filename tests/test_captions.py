"""Varied captions: every scene said many ways, the animal and colour always, the rest sometimes."""

import pytest
import torch

import sdlab as sd
from sdlab.captions import (
    BACKGROUND_PHRASES,
    FAMILIES,
    HELD_OUT_FAMILIES,
    SYNONYMS,
    attribute_prompts,
    paraphrase,
    unknown_words,
    wordings,
)


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
        said = [phrase.format(b=spec.background) for phrases in BACKGROUND_PHRASES.values() for phrase in phrases]
        assert any(phrase.strip(" ,") in caption for phrase in said), caption


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


def test_drop_colour_leaves_the_colour_out_but_never_the_animal():
    batch = scenes(200)
    captions = paraphrase(batch.labels, generator=torch.Generator().manual_seed(0), drop=1.0, drop_colour=1.0)
    for spec, caption in zip(batch.specs(), captions):
        words = caption.replace(",", " ").split()
        assert spec.animal in words and not set(words) & set(sd.data.COLOURS), caption
    some = paraphrase(batch.labels, generator=torch.Generator().manual_seed(0), drop=0.0, drop_colour=0.5)
    without = sum(spec.colour not in c.replace(",", " ").split() for spec, c in zip(batch.specs(), some))
    assert 60 < without < 140


def _index(words, options):
    """Where the first of ``options`` (single words or phrases) starts in ``words``, or None."""
    text = " ".join(words)
    hits = [text[: text.index(o)].count(" ") for o in options if f" {o} " in f" {text} "]
    return min(hits) if hits else None


def test_the_held_out_wordings_are_never_produced_in_training():
    """Each held-out family's construction must be absent from thousands of training captions."""
    batch = sd.data.make_scenes(3000, generator=torch.Generator().manual_seed(3))
    captions = paraphrase(batch.labels, generator=torch.Generator().manual_seed(4), drop=0.0)
    places = [p for phrases in SYNONYMS.values() for p in phrases if p not in SYNONYMS["small"] + SYNONYMS["large"]]
    sizes = SYNONYMS["small"] + SYNONYMS["large"]
    for spec, caption in zip(batch.specs(), captions):
        words = caption.replace(",", " ").split()
        animal, place = words.index(spec.animal), _index(words, places)
        background = max(i for i, w in enumerate(words) if w == spec.background)
        assert not animal < background < place, caption  # "background in the middle"
        assert not place < background < animal, caption  # "place, background, animal"
        assert not any(f"{spec.colour} {s}" in caption for s in sizes), caption  # "colour before size"
        assert "with a " + spec.background + " backdrop" not in caption, caption
    assert set(HELD_OUT_FAMILIES) == {f.name for f in FAMILIES if f.held_out} and len(HELD_OUT_FAMILIES) >= 3


def test_wordings_say_only_what_each_family_states():
    spec = sd.data.SceneSpec("cat", "red", "blue", "small", "left")
    said = wordings(spec)
    assert said["canonical"] == spec.caption()
    assert said["two words"] == "red cat" and said["animal only"] == "a cat"
    assert len(FAMILIES) >= 8 and len(set(said.values())) == len(FAMILIES)
    for family in FAMILIES:
        words = set(said[family.name].replace(",", " ").split())
        assert ("blue" in words) == ("background" in family.says), family
        assert ("red" in words) == ("colour" in family.says), family
        assert ("small" in words) == ("size" in family.says) and ("left" in words) == ("position" in family.says)
        assert not unknown_words(said[family.name]), said[family.name]
    assert wordings(spec, variant=1)["size and place"] == "little cat at the left"


def test_unknown_words_names_what_the_model_never_read():
    assert unknown_words("a crimson kitty on a navy backdrop") == ["crimson", "kitty", "navy"]
    assert unknown_words("Purple GIRAFFE, tiny, to the left") == []
    assert unknown_words("a cat cat kitty kitty") == ["kitty"]
    with pytest.raises(TypeError, match="prompt must be a string"):
        unknown_words(["a cat"])


def test_stated_reads_back_every_wording_and_paraphrase():
    from sdlab.captions import stated

    batch = sd.data.make_scenes(400, generator=torch.Generator().manual_seed(8))
    for i, spec in enumerate(batch.specs()):
        truth = {"animal": spec.animal, "colour": spec.colour, "background": spec.background, "size": spec.size,
                 "position": spec.position}
        for family in FAMILIES:
            assert stated(wordings(spec, (family,), variant=i)[family.name]) == {k: truth[k] for k in family.says}
    captions = paraphrase(batch.labels, generator=torch.Generator().manual_seed(9), drop=0.3, drop_colour=0.2)
    for spec, caption in zip(batch.specs(), captions):
        said = stated(caption)
        assert said["animal"] == spec.animal and said.get("background", spec.background) == spec.background
        assert said.get("colour", spec.colour) == spec.colour, caption
    assert stated("a crimson kitty") == {} and stated("purple giraffe") == {"animal": "giraffe", "colour": "purple"}
