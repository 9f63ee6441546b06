"""Chapter 2 helpers: the training exercises' checks and the loss / noise-guess figures."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sdlab as sd  # noqa: E402
from sdlab.checks import ExerciseError, check_diffusion_loss, check_eps_or_x0, check_loss_weight  # noqa: E402
from sdlab.plotting import moving_average, plot_losses, plot_noise_guesses, plot_per_timestep_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("close_figures")  # tests/conftest.py


def coefficients(ab, t):
    a = ab[t].reshape(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def right_loss(model, x0, noise, t, ab):
    s, n = coefficients(ab, t)
    return F.mse_loss(model(s * x0 + n * noise, t), noise)


def test_right_loss_passes_and_agrees_with_the_library(capsys):
    assert check_diffusion_loss(right_loss)
    assert check_diffusion_loss(lambda m, x0, e, t, ab: F.mse_loss(sd.unet.predict_noise(m, s_n(ab, t, x0, e), t), e))
    assert capsys.readouterr().out.count("✓") == 2
    # The same formula as sd.train.diffusion_loss on a real UNet with fixed t.
    model, schedule = sd.UNet(sd.UNetConfig.tiny()), sd.NoiseSchedule("cosine")
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    x0, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([10, 700])
    g = torch.Generator().manual_seed(3)
    library = sd.train.diffusion_loss(model, schedule, x0, t=t, generator=g)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(library, right_loss(model, x0, noise, t, schedule.alphas_cumprod), atol=1e-6)


def s_n(ab, t, x0, e):
    s, n = coefficients(ab, t)
    return s * x0 + n * e


def wrong_target_x0(model, x0, noise, t, ab):
    return ((model(s_n(ab, t, x0, noise), t) - x0) ** 2).mean()


def no_sqrt(model, x0, noise, t, ab):
    a = ab[t].reshape(-1, 1, 1, 1)
    return ((model(a * x0 + (1 - a) * noise, t) - noise) ** 2).mean()


def summed(model, x0, noise, t, ab):
    return ((model(s_n(ab, t, x0, noise), t) - noise) ** 2).sum()


def target_xt(model, x0, noise, t, ab):
    x_t = s_n(ab, t, x0, noise)
    return ((model(x_t, t) - x_t) ** 2).mean()


def no_reshape(model, x0, noise, t, ab):
    a = ab[t]
    return ((model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()


def own_noise(model, x0, noise, t, ab):
    return right_loss(model, x0, torch.randn_like(noise), t, ab)


def detached(model, x0, noise, t, ab):
    return right_loss(model, x0, noise, t, ab).item()


def per_image(model, x0, noise, t, ab):
    return ((model(s_n(ab, t, x0, noise), t) - noise) ** 2).flatten(1).mean(1)


def off_by_one(model, x0, noise, t, ab):
    return F.mse_loss(model(s_n(ab, t + 1, x0, noise), t), noise)


def x0_space(model, x0, noise, t, ab):
    s, n = coefficients(ab, t)
    x_t = s * x0 + n * noise
    return (((x_t - n * model(x_t, t)) / s - x0) ** 2).mean()


@pytest.mark.parametrize("wrong, message", [
    (wrong_target_x0, "not the clean image x0"),
    (target_xt, "not the noisy image x_t"),
    (no_sqrt, "square root is missing"),
    (summed, "you summed the squared errors"),
    (no_reshape, "reshape it to \\(B, 1, 1, 1\\)"),
    (own_noise, "changes from one call to the next"),
    (detached, "carries no gradient"),
    (per_image, "return one number"),
    (off_by_one, "off by one: you used ᾱ at t\\+1"),
    (x0_space, "compared the implied x̂0 with x0"),
    (lambda m, x0, e, t, ab: F.l1_loss(m(s_n(ab, t, x0, e), t), e), "absolute values"),
    (lambda m, x0, e, t, ab: F.mse_loss(m(x0, t), e), "shown the noisy image"),
    (lambda m, x0, e, t, ab: 1.01 * right_loss(m, x0, e, t, ab), "the loss is off by up to"),
    (lambda m, x0, e, t, ab: None, "forget `return`"),
])
def test_wrong_losses_fail_with_a_hint(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_diffusion_loss(wrong)


def test_loss_weight_check(capsys):
    assert check_loss_weight(lambda ab: ab / (1 - ab))
    assert "✓" in capsys.readouterr().out
    for wrong, message in [(lambda ab: (1 - ab) / ab, "other way round"),
                           (lambda ab: (ab / (1 - ab)).sqrt(), "errors themselves"), (lambda ab: ab, "divide"),
                           (lambda ab: ab[:2], "the weight should have shape"),
                           (lambda ab: 2 * ab / (1 - ab), "the weight is off by up to")]:
        with pytest.raises(ExerciseError, match=message):
            check_loss_weight(wrong)


def test_eps_or_x0_check(capsys):
    assert check_eps_or_x0(lambda: " B ")
    assert "✓" in capsys.readouterr().out
    for answer, message in [("a", "not \\(a\\)"), ("c", "not \\(c\\)"), ("d", "not \\(d\\)"),
                            ("e", "one of the letters"), (2, "one of the letters")]:
        with pytest.raises(ExerciseError, match=message):
            check_eps_or_x0(lambda answer=answer: answer)
    with pytest.raises(ExerciseError, match="pass your function itself"):
        check_eps_or_x0("b")


# ---- figures ---------------------------------------------------------------------------------------------------


def test_moving_average_is_a_trailing_mean():
    assert np.allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    assert np.allclose(moving_average(torch.ones(5), 10), 1)
    with pytest.raises(ValueError, match="window must be a positive int; got 0"):
        moving_average([1.0], 0)


def test_plot_losses_draws_steps_and_smoothing():
    fig = plot_losses([1.0, 0.5, 0.25, 0.2], every=10, smooth=2, label="run")
    ax = fig.axes[0]
    smooth, raw = ax.lines
    assert np.allclose(raw.get_xdata(), [10, 20, 30, 40]) and np.allclose(smooth.get_ydata(), [1, 0.75, 0.375, 0.225])
    assert ax.get_yscale() == "log" and ax.get_legend().get_texts()[0].get_text() == "run"
    assert plot_losses([0.3, 0.2], ax=ax) is fig and len(ax.lines) == 4  # a second run in the same axes


@pytest.mark.parametrize("losses, error, message", [
    ([], ValueError, "non-empty 1-D"), ([[1.0]], ValueError, "non-empty 1-D"), ([1.0, float("nan")], ValueError, "NaN"),
    ("abc", TypeError, "sequence of numbers"),
])
def test_plot_losses_rejects_bad_losses(losses, error, message):
    with pytest.raises(error, match=message):
        plot_losses(losses)


def test_plot_losses_rejects_bad_options():
    with pytest.raises(ValueError, match="every must be a positive int; got 0"):
        plot_losses([1.0], every=0)
    with pytest.raises(TypeError, match="ax must be None or a matplotlib Axes; got str"):
        plot_losses([1.0], ax="left")


def test_plot_per_timestep_loss_with_baselines():
    fig = plot_per_timestep_loss([50, 150], [0.1, 0.05], baselines={"ε̂ = 0": [1.0, 1.0]})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="centres has 2 entries but losses has 3"):
        plot_per_timestep_loss([50, 150], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="baselines\\['x'\\] has 1 entries"):
        plot_per_timestep_loss([50, 150], [0.1, 0.2], baselines={"x": [1.0]})


def test_plot_noise_guesses_grid_and_noise_scaling():
    g = torch.Generator().manual_seed(0)
    x_t, eps, eps_hat, x0_hat = (torch.randn(3, 3, 8, 8, generator=g) for _ in range(4))
    fig = plot_noise_guesses(x_t, eps, eps_hat, x0_hat, [10, 500, 990], x0=torch.zeros(3, 8, 8), noise_scale=2.0)
    assert len(fig.axes) == 15 and [ax.get_title() for ax in fig.axes[:3]] == ["t = 10", "t = 500", "t = 990"]
    shown = fig.axes[6].images[0].get_array()  # row 3 (true noise), first column
    assert np.allclose(shown, ((eps[0] / 2).clamp(-1, 1) + 1).permute(1, 2, 0).numpy() / 2, atol=1e-6)
    with pytest.raises(ValueError, match="x_t must be an \\(N, C, H, W\\) tensor with N = 2"):
        plot_noise_guesses(x_t, eps, eps_hat, x0_hat, [10, 500])
    with pytest.raises(ValueError, match="noise_pred must be an .* got \\(3, 8, 8\\)"):
        plot_noise_guesses(x_t, eps, eps_hat[0], x0_hat, [1, 2, 3])
    with pytest.raises(ValueError, match="noise_scale must be a positive number; got 0"):
        plot_noise_guesses(x_t, eps, eps_hat, x0_hat, [1, 2, 3], noise_scale=0)
