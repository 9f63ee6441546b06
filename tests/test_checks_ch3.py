"""Chapter 3's exercise checks accept right answers and name the plausible wrong ones."""

import pytest
import torch

import sdlab as sd
from sdlab.checks import ExerciseError, check_ddim_step, check_pred_original_sample


def right_x0(x_t, eps, a):
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def right_ddim(eps, t, x_t, prev_t, ab):
    a_prev = ab[prev_t] if prev_t >= 0 else torch.tensor(1.0, dtype=ab.dtype)
    return a_prev.sqrt() * right_x0(x_t, eps, ab[t]) + (1 - a_prev).sqrt() * eps


def test_right_answers_pass(capsys):
    check_pred_original_sample(right_x0)
    check_ddim_step(right_ddim)
    assert capsys.readouterr().out.count("✓") == 2


def test_float32_and_numpy_answers_are_accepted(capsys):
    # computed in float32 where the inputs are float32, in float64 where they are float64
    check_pred_original_sample(lambda x, e, a: right_x0(x, e, a.to(x.dtype)))
    check_ddim_step(lambda e, t, x, p, ab: right_ddim(e, t, x, p, ab).numpy())
    assert capsys.readouterr().out.count("✓") == 2


def test_right_ddim_answer_agrees_with_the_library_sampler():
    """The reference formula of the check is sdlab's DDIMSampler (η = 0, no clipping) on 50 steps."""
    sampler = sd.samplers.DDIMSampler(sd.NoiseSchedule("cosine"), eta=0.0, clip_sample=False)
    sampler.set_timesteps(50)
    ab = sampler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, generator=g,
                                                                                     dtype=torch.float64)
    for t in (980, 500, 0):
        ours = right_ddim(eps, t, x, sampler.previous_timestep(t), ab)
        torch.testing.assert_close(ours, sampler.step(eps, t, x).prev_sample)


def sqrt_a(a):
    return a.sqrt()


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, e, a: (x + (1 - a).sqrt() * e) / a.sqrt(), "sign error"),
        (lambda x, e, a: x - e, "you returned x_t − ε̂"),
        (lambda x, e, a: x - (1 - a).sqrt() * e, "forgot to divide by √ᾱ_t"),
        (lambda x, e, a: a.sqrt() * (x - (1 - a).sqrt() * e), "you multiplied by √ᾱ_t"),
        (lambda x, e, a: x - (1 - a).sqrt() * e / a.sqrt(), "only ε̂'s term was divided"),
        (lambda x, e, a: (x - (1 - a) * e) / a, "forgot the square roots"),
        (lambda x, e, a: (x - (1 - a) * e) / a.sqrt(), "missing on √\\(1 − ᾱ_t\\)"),
        (lambda x, e, a: (x - (1 - a).sqrt() * e) / a, "missing on √ᾱ_t"),
        (lambda x, e, a: (x - a.sqrt() * e) / (1 - a).sqrt(), "swapped"),
        (lambda x, e, a: right_x0(x, e, a).clamp(-1, 1), "do not clip"),
        (lambda x, e, a: right_x0(x, e, a) * 1.01, "x̂0 is off by up to"),
        (lambda x, e, a: right_x0(x, e, a)[0], "x̂0 should have shape \\(2, 1, 8, 8\\); got \\(1, 8, 8\\)"),
        (lambda x, e, a: None, "forget `return`"),
        (lambda x, e, a: a.undefined(), "raised AttributeError"),
    ],
)
def test_wrong_pred_original_sample_fails_with_a_hint(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_pred_original_sample(wrong)


def ddim_with(a_x0, a_new, sign=1.0):
    """A DDIM step built from chosen ᾱ's: a_x0(t, prev_t, ab) for x̂0 and a_new(t, prev_t, ab) for the new sample."""

    def fn(eps, t, x_t, prev_t, ab):
        x0 = right_x0(x_t, eps, a_x0(t, prev_t, ab))
        a = a_new(t, prev_t, ab)
        return a.sqrt() * x0 + sign * (1 - a).sqrt() * eps

    return fn


def at_t(t, p, ab):
    return ab[t]


def at_prev(t, p, ab):
    return ab[p] if p >= 0 else torch.tensor(1.0, dtype=ab.dtype)


def ddim_no_direction(eps, t, x_t, prev_t, ab):
    return at_prev(t, prev_t, ab).sqrt() * right_x0(x_t, eps, ab[t])


def ddim_no_sqrt(eps, t, x_t, prev_t, ab):
    a = at_prev(t, prev_t, ab)
    return a * right_x0(x_t, eps, ab[t]) + (1 - a) * eps


def ddim_clipped(eps, t, x_t, prev_t, ab):
    a = at_prev(t, prev_t, ab)
    return a.sqrt() * right_x0(x_t, eps, ab[t]).clamp(-1, 1) + (1 - a).sqrt() * eps


def ddim_x0_sign(eps, t, x_t, prev_t, ab):
    a = at_prev(t, prev_t, ab)
    return a.sqrt() * (x_t + (1 - ab[t]).sqrt() * eps) / ab[t].sqrt() + (1 - a).sqrt() * eps


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ddim_with(at_t, at_t), "returned x_t unchanged"),
        (ddim_with(at_prev, at_prev), "returned x_t unchanged"),
        (ddim_with(at_prev, at_t), "ᾱ_t and ᾱ_\\{t−1\\} are swapped"),
        (ddim_with(at_t, lambda t, p, ab: ab[t - 1]), "step t = 980 → prev_t = 960 .*you stepped to t − 1; "
                                                        "the previous timestep is the prev_t you are given \\(here 960\\)"),
        (ddim_with(at_t, lambda t, p, ab: ab[p]), "prev_t = -1 .*at the last step .* alphas_cumprod\\[-1\\] is"),
        (ddim_with(at_t, lambda t, p, ab: ab[max(p, 0)]), "prev_t = -1 .* not alphas_cumprod\\[0\\]"),
        (ddim_with(at_t, at_prev, sign=-1.0), "sign error in the second term"),
        (ddim_x0_sign, "sign error in x̂0"),
        (lambda e, t, x, p, ab: right_x0(x, e, ab[t]), "you returned x̂0"),
        (ddim_no_direction, "second term .* is missing"),
        (ddim_no_sqrt, "forgot the square roots"),
        (lambda e, t, x, p, ab: x - e, "subtracted the predicted noise"),
        (ddim_clipped, "do not clip"),
        (lambda e, t, x, p, ab: right_ddim(e, t, x, p, ab) + 0.01, "off by up to 0.01"),
        (lambda e, t, x, p, ab: right_ddim(e, t, x, p, ab).flatten(), "got \\(128,\\)"),
        (lambda e, t, x, p, ab: ab[t] + e.missing, "raised AttributeError"),
    ],
)
def test_wrong_ddim_step_fails_with_a_hint(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_ddim_step(wrong)


def test_checks_reject_a_result_instead_of_a_function():
    with pytest.raises(ExerciseError, match="pass your function itself"):
        check_ddim_step(torch.zeros(3))
