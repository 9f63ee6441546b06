"""Chapter 7's exercise check: one guided denoising step, with real diffusers schedulers."""

from __future__ import annotations

import pytest
import torch

from sdlab.checks import ExerciseError, check_guided_step
from sdlab.checks.ch7 import GUIDED_STEP, ToyUNet


def step(unet, scheduler, latents, t, cond, uncond, scale, *, scaled=True, from_scaled=False, out="prev_sample",
         guided=True, doubled=True):
    x = torch.cat([latents] * 2) if doubled else latents
    x = scheduler.scale_model_input(x, t) if scaled else x
    u, c = unet(x, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    noise = u + scale * (c - u) if guided else c
    if out == "noise":
        return noise
    return getattr(scheduler.step(noise, t, x.chunk(2)[0] if from_scaled else latents), out)


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_the_right_step_passes_on_every_scheduler_and_scale(seed, capsys):
    assert check_guided_step(step, seed=seed)
    assert "✓ one guided denoising step" in capsys.readouterr().out


def test_the_cases_cover_both_schedulers_the_first_step_and_scale_one():
    cases = GUIDED_STEP.cases(0)
    kinds = {type(case.args[1]).__name__ for case in cases}
    assert kinds == {"DDIMScheduler", "EulerDiscreteScheduler"}
    assert any(case.args[-1] == 1.0 for case in cases) and any("step 1 of" in case.where for case in cases)


def test_a_step_leaves_the_case_s_scheduler_as_it_was():
    case = GUIDED_STEP.cases(0)[1]  # Euler: its step advances an index
    before = case.args[1].step_index
    check_guided_step(step)
    assert case.args[1].step_index == before
    assert GUIDED_STEP.cases(0)[1].args[1].step_index == before


@pytest.mark.parametrize("options, message", [
    (dict(scaled=False), "scale_model_input"),
    (dict(from_scaled=True), "unscaled latents"),
    (dict(out="noise"), "returned the guided noise prediction"),
    (dict(out="pred_original_sample"), "pred_original_sample"),
    (dict(guided=False), "guidance is missing"),
    (dict(doubled=False), "one set per latent"),
])
def test_each_slip_is_named(options, message):
    with pytest.raises(ExerciseError, match=message):
        check_guided_step(lambda *args: step(*args, **options))


def test_the_wrong_branch_and_an_input_changed_in_place_are_named():
    with pytest.raises(ExerciseError, match="wrong way"):
        check_guided_step(lambda unet, sch, x, t, c, u, s: step(unet, sch, x, t, u, c, s))

    def in_place(unet, sch, x, t, c, u, s):
        out = step(unet, sch, x, t, c, u, s)
        return x.copy_(out)

    with pytest.raises(ExerciseError, match="in place"):
        check_guided_step(in_place)


def test_the_stand_in_unet_is_called_like_diffusers_and_reads_its_inputs():
    unet = ToyUNet(4, 8, torch.Generator().manual_seed(0))
    x, states = torch.randn(2, 4, 3, 3), torch.randn(2, 5, 8)
    out = unet(x, torch.tensor(500), encoder_hidden_states=states)
    assert out.sample.shape == x.shape and torch.equal(out[0], out.sample)
    assert not torch.allclose(out.sample, unet(2 * x, 500, encoder_hidden_states=states).sample)
    assert not torch.allclose(out.sample, unet(x, 10, encoder_hidden_states=states).sample)
    assert not torch.allclose(out.sample, unet(x, 500, encoder_hidden_states=states.flip(0)).sample)
    with pytest.raises(ValueError, match="one set per latent"):
        unet(x, 500, encoder_hidden_states=states[:1])
