"""The exercise checks accept right answers and name the plausible wrong ones."""

import pytest
import torch

from sdlab.checks import ExerciseError, check_add_noise, check_alphas_cumprod


def right_alphas_cumprod(betas):
    return torch.cumprod(1 - betas, dim=0)


def right_add_noise(x0, noise, t, alphas_cumprod):
    a = alphas_cumprod[t]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def test_right_answers_pass(capsys):
    check_alphas_cumprod(right_alphas_cumprod)
    check_add_noise(right_add_noise)
    assert capsys.readouterr().out.count("✓") == 2


def test_numpy_answer_is_accepted():
    check_alphas_cumprod(lambda b: (1 - b).numpy().cumprod())


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b: torch.cumprod(b, 0), "multiplied the betas themselves"),
        (lambda b: torch.cumsum(1 - b, 0), "cumsum instead of cumprod"),
        (lambda b: 1 - b, "returned α_t = 1 − β_t"),
        (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumprod(1 - b, 0)[:-1]]), "one step late"),
        (lambda b: 1 - torch.cumprod(1 - b, 0), "returned 1 − ᾱ_t"),
        (lambda b: torch.cumprod(1 - b, 0)[:-1], "ᾱ should have shape \\(50,\\); got \\(49,\\)"),
        (lambda b: torch.cumprod(1 - b, 0) * 0.9, "ᾱ is off by up to"),
        (lambda b: None, "forget `return`"),
        (lambda b: b.undefined_method(), "your function raised AttributeError"),
    ],
)
def test_wrong_alphas_cumprod_fails_with_a_hint(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_alphas_cumprod(wrong)


def no_sqrt(x0, noise, t, ab):
    return ab[t] * x0 + (1 - ab[t]) * noise


def swapped(x0, noise, t, ab):
    return (1 - ab[t]).sqrt() * x0 + ab[t].sqrt() * noise


def off_by_one(x0, noise, t, ab):
    a = ab[min(t + 1, len(ab) - 1)]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def noise_sqrt_missing(x0, noise, t, ab):
    return ab[t].sqrt() * x0 + (1 - ab[t]) * noise


def signal_not_scaled(x0, noise, t, ab):
    return x0 + (1 - ab[t]).sqrt() * noise


def uses_betas_as_alpha(x0, noise, t, ab):
    return x0 * 0.5 + noise * 0.5


def flattens(x0, noise, t, ab):
    return right_add_noise(x0, noise, t, ab).flatten()


@pytest.mark.parametrize(
    "wrong, message",
    [
        (no_sqrt, "forgot the square roots"),
        (swapped, "coefficients are swapped"),
        (off_by_one, "off by one: you used ᾱ at t\\+1"),
        (noise_sqrt_missing, "missing on the noise coefficient"),
        (signal_not_scaled, "the signal must shrink too"),
        (uses_betas_as_alpha, "x_t is off by up to"),
        (flattens, "x_t should have shape \\(2, 3, 8, 8\\); got \\(384,\\)"),
    ],
)
def test_wrong_add_noise_fails_with_a_hint(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_add_noise(wrong)


def test_check_rejects_a_result_instead_of_a_function():
    with pytest.raises(ExerciseError, match="pass your function itself"):
        check_add_noise(torch.zeros(3))


def test_exercise_error_is_an_assertion_error_for_autograders():
    assert issubclass(ExerciseError, AssertionError)


# --- chapter 4 -------------------------------------------------------------------------------------------

def _unit(x, dim=-1):
    return x / x.norm(dim=dim, keepdim=True)


def test_similarity_matrix_check_accepts_right_answers_and_names_slips():
    from sdlab.checks import ExerciseError, check_similarity_matrix

    assert check_similarity_matrix(lambda a, b, s: s.exp() * _unit(a) @ _unit(b).T)
    assert check_similarity_matrix(lambda a, b, s: torch.nn.functional.normalize(a, dim=1)
                                   @ torch.nn.functional.normalize(b, dim=1).T * s.exp(), seed=3)
    wrong = [
        (lambda a, b, s: s.exp() * a @ b.T, "forgot to normalise"),
        (lambda a, b, s: s.exp() * _unit(a, 0) @ _unit(b, 0).T, "wrong axis"),
        (lambda a, b, s: s.exp() * _unit(b) @ _unit(a).T, "transposed"),
        (lambda a, b, s: _unit(a) @ _unit(b).T / s.exp(), "temperature is inverted"),
        (lambda a, b, s: s * _unit(a) @ _unit(b).T, "logit_scale is a logarithm"),
        (lambda a, b, s: _unit(a) @ _unit(b).T, "left out the temperature"),
        (lambda a, b, s: s.exp() * _unit(a) @ b.T, "only one side"),
        (lambda a, b, s: 2 * s.exp() * _unit(a) @ _unit(b).T, "off by up to"),
    ]
    for fn, message in wrong:
        with pytest.raises(ExerciseError, match=message):
            check_similarity_matrix(fn)


def test_contrastive_loss_check_accepts_right_answers_and_names_slips():
    from sdlab.checks import ExerciseError, check_contrastive_loss
    from sdlab.clip import contrastive_loss

    F = torch.nn.functional
    assert check_contrastive_loss(contrastive_loss)
    assert check_contrastive_loss(lambda z: (F.cross_entropy(z, torch.arange(len(z)))
                                             + F.cross_entropy(z.T, torch.arange(len(z)))) / 2, seed=5)
    wrong = [
        (lambda z: F.cross_entropy(z, torch.arange(len(z))), "only one direction"),
        (lambda z: F.cross_entropy(z.T, torch.arange(len(z))), "only one direction"),
        (lambda z: F.cross_entropy(z, torch.arange(len(z))) + F.cross_entropy(z.T, torch.arange(len(z))), "added"),
        (lambda z: -contrastive_loss(z), "sign is flipped"),
        (lambda z: contrastive_loss(z) * 0 + F.cross_entropy(z, torch.zeros(len(z), dtype=torch.long)),
         "off by up to"),
        (lambda z: (F.cross_entropy(z, torch.arange(len(z)), reduction="none")
                    + F.cross_entropy(z.T, torch.arange(len(z)), reduction="none")) / 2, "one number"),
        (lambda z: None, "returned None"),
    ]
    for fn, message in wrong:
        with pytest.raises(ExerciseError, match=message):
            check_contrastive_loss(fn)
