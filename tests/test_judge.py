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
