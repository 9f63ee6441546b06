"""sdlab.judge: the attribute classifiers that score chapters 5-7."""

from __future__ import annotations

import pytest
import torch

import sdlab as sd
from sdlab.random import seeded_global_rng


def test_one_head_per_attribute_and_a_clear_error_for_wrong_images():
    with seeded_global_rng(0):
        judge = sd.judge.AttributeJudge(width=8).eval()
    logits = judge(torch.zeros(2, 3, 64, 64))
    assert {k: v.shape[1] for k, v in logits.items()} == {k: len(v) for k, v in sd.judge.ATTRIBUTES.items()}
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        judge(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        sd.judge.AttributeJudge(resolution=40)


def test_accuracy_counts_each_attribute_and_all_five():
    scenes = sd.data.make_scenes(40, **sd.data.SCENES, generator=torch.Generator().manual_seed(0))

    class Oracle(torch.nn.Module):  # right on animal only on the first half, right elsewhere always
        def forward(self, x):
            out = {k: torch.nn.functional.one_hot(v, len(sd.judge.ATTRIBUTES[k])).float()
                   for k, v in scenes.labels.items()}
            out["animal"][:20] = out["animal"][:20].roll(1, dims=1)
            return out

    oracle = Oracle()
    oracle.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    accuracy = sd.judge.judge_accuracy(oracle, scenes)
    assert accuracy == {"animal": 0.5, "colour": 1.0, "background": 1.0, "size": 1.0, "position": 1.0, "all": 0.5}
    assert sd.judge.agreement(oracle, scenes.images, scenes.images)["animal"] == 1.0
    assert sd.judge.describe(oracle, scenes.images)[25] == scenes.captions[25]


def test_training_lowers_the_loss():
    judge, losses = sd.judge.train_judge(steps=30, batch_size=16, width=8, generator=torch.Generator().manual_seed(0),
                                         progress=False)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_degrade_touches_only_the_chosen_fraction_and_stays_in_range():
    x = sd.data.make_scenes(64, **sd.data.SCENES, generator=torch.Generator().manual_seed(0)).images
    y = sd.judge.degrade(x, torch.Generator().manual_seed(1), fraction=0.5)
    changed = (y - x).abs().flatten(1).amax(1) > 0
    assert 16 < int(changed.sum()) < 48 and y.abs().max() <= 1
    assert torch.equal(sd.judge.degrade(x, torch.Generator().manual_seed(1), fraction=0.0), x)
    assert torch.equal(y, sd.judge.degrade(x, torch.Generator().manual_seed(1), fraction=0.5))
    flat = torch.full((1, 3, 8, 8), 0.3)  # a blur leaves a flat image flat: only the noise changes it
    softened = sd.judge.degrade(flat, torch.Generator().manual_seed(2), fraction=1.0)
    assert (softened - flat).abs().max() < 0.25
    with pytest.raises(ValueError, match="fraction"):
        sd.judge.degrade(x, torch.Generator(), fraction=1.5)


class _Oracle(torch.nn.Module):
    """Reads the scenes' labels back by position: right everywhere but on the animal of the first ``wrong``."""

    def __init__(self, scenes, wrong=0):
        super().__init__()
        self.scenes, self.wrong = scenes, wrong
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = {k: torch.nn.functional.one_hot(v[: len(x)], len(sd.judge.ATTRIBUTES[k])).float()
               for k, v in self.scenes.labels.items()}
        out["animal"][: self.wrong] = out["animal"][: self.wrong].roll(1, dims=1)
        return out


def test_disagreements_compare_only_what_each_prompt_states():
    scenes = sd.data.make_scenes(4, **sd.data.SCENES, generator=torch.Generator().manual_seed(3))
    specs = scenes.specs()
    prompts = [f"{specs[0].colour} {specs[0].animal}", specs[1].caption(), f"a {specs[2].animal}", "a crimson kitty"]
    found = sd.judge.disagreements(_Oracle(scenes, wrong=1), scenes.images, prompts)
    assert list(found[0]) == ["animal"] and found[1:] == [{}, {}, {}]
    with pytest.raises(ValueError, match="one prompt per picture"):
        sd.judge.disagreements(_Oracle(scenes), scenes.images, prompts[:2])


def test_wording_adherence_judges_each_family_on_its_stated_attributes_only(monkeypatch):
    scenes = sd.data.make_scenes(20, **sd.data.SCENES, held_out="only", generator=torch.Generator().manual_seed(4))
    asked = []

    def paint(unet, text_encoder, vae, prompts, *, batch_size, **options):
        asked.append(prompts)
        return scenes.images[: len(prompts)]

    monkeypatch.setattr(sd.guidance, "_generate_in_batches", paint)
    rows = sd.guidance.wording_adherence(None, None, None, _Oracle(scenes, wrong=5), scenes, progress=False)
    assert list(rows) == [f.name for f in sd.captions.FAMILIES]
    for family in sd.captions.FAMILIES:
        assert set(rows[family.name]) == {*family.says, "all"}
        assert rows[family.name]["animal"] == rows[family.name]["all"] == 0.75
        assert all(rows[family.name][k] == 1.0 for k in family.says if k != "animal")
    assert asked[sd.captions.FAMILIES.index(next(f for f in sd.captions.FAMILIES if f.name == "two words"))][0] == (
        f"{scenes.specs()[0].colour} {scenes.specs()[0].animal}")
