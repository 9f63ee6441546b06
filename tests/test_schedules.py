"""Noise schedules and the closed-form forward process, checked against diffusers."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from sdlab.schedules import SCHEDULE_NAMES, NoiseSchedule, make_betas


@pytest.fixture
def x0():
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _diffusers_float64(schedule):
    """A DDPMScheduler with the same config whose ᾱ is accumulated in float64 (its own betas)."""
    reference = DDPMScheduler(**schedule.diffusers_config())
    reference.alphas_cumprod = torch.cumprod(1 - reference.betas.double(), dim=0)
    return reference


TIMESTEPS = [torch.tensor([0, 1, 500, 999]), torch.tensor([999, 998, 10, 250]), torch.tensor([3, 40, 81, 433])]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_add_noise_matches_diffusers_to_1e6(name, x0):
    # diffusers' own add_noise code, fed float64 inputs and a float64 ᾱ: the same formula.
    schedule = NoiseSchedule(name)
    reference = _diffusers_float64(schedule)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    for t in TIMESTEPS:
        ours = schedule.add_noise(x0, noise, t).double()
        theirs = reference.add_noise(x0.double(), noise.double(), t)
        assert (ours - theirs).abs().max() < 1e-6


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_add_noise_is_closer_to_exact_than_stock_float32_diffusers(name, x0):
    # Stock diffusers accumulates ᾱ in float32; near t = 0, √(1 − ᾱ) magnifies that rounding
    # to a few 1e-6. Ours comes from float64 and must be at least as close to the exact value.
    schedule = NoiseSchedule(name)
    stock = DDPMScheduler(**schedule.diffusers_config())
    exact = _diffusers_float64(schedule)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    for t in TIMESTEPS:
        truth = exact.add_noise(x0.double(), noise.double(), t)
        ours = (schedule.add_noise(x0, noise, t).double() - truth).abs().max()
        theirs = (stock.add_noise(x0, noise, t).double() - truth).abs().max()
        assert ours < 1e-6 and theirs < 1e-5
        assert ours <= theirs


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_schedule_tensors_match_diffusers(name):
    schedule = NoiseSchedule(name)
    reference = DDPMScheduler(**schedule.diffusers_config())
    torch.testing.assert_close(schedule.betas, reference.betas, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(schedule.alphas_cumprod, reference.alphas_cumprod, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_alphas_cumprod_decreases_from_one_towards_zero(name):
    ab = NoiseSchedule(name).alphas_cumprod
    assert ab.dtype == torch.float32
    assert (ab[1:] < ab[:-1]).all()
    assert 0.99 < ab[0] <= 1
    assert ab[-1] < 0.01


def test_linear_endpoints_are_ddpm_values():
    betas = make_betas("linear")
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_cosine_follows_nichol_dhariwal_closed_form():
    T, s = 1000, 0.008
    ab = NoiseSchedule("cosine").alphas_cumprod.double()
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    # β is capped at 0.999 at the very end, so compare where the cap is inactive.
    torch.testing.assert_close(ab[:990], expected[:990], atol=1e-6, rtol=1e-5)


def test_add_noise_at_first_step_is_almost_x0(x0):
    schedule = NoiseSchedule("linear")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # seeded: the bound holds for it
    x_t = schedule.add_noise(x0, noise, 0)
    assert (x_t - x0).abs().max() < 0.05


def test_add_noise_at_last_step_is_almost_pure_noise(x0):
    schedule = NoiseSchedule("linear")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x_t = schedule.add_noise(x0, noise, schedule.num_train_timesteps - 1)
    assert (x_t - noise).abs().max() < 0.02


def test_add_noise_keeps_unit_variance_for_unit_variance_data():
    schedule = NoiseSchedule("cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, generator=g)
    for t in (0, 300, 700, 999):
        x_t = schedule.add_noise(x0, torch.randn(20000, generator=g), t)
        assert abs(x_t.var().item() - 1) < 0.05


def test_add_noise_follows_input_dtype(x0):
    schedule = NoiseSchedule("linear")
    out = schedule.add_noise(x0.double(), torch.randn_like(x0).double(), 10)
    assert out.dtype == torch.float64


def test_stepwise_and_closed_form_agree_in_distribution():
    schedule = NoiseSchedule("linear", num_train_timesteps=200)
    x0 = torch.full((20000,), 0.8)
    g = torch.Generator().manual_seed(0)
    slow = schedule.add_noise_stepwise(x0, 120, generator=g)
    fast = schedule.add_noise(x0, torch.randn(20000, generator=g), 120)
    ab = schedule.alphas_cumprod[120].item()
    for sample in (slow, fast):
        assert sample.mean().item() == pytest.approx(0.8 * math.sqrt(ab), abs=0.02)
        assert sample.var().item() == pytest.approx(1 - ab, abs=0.02)


def test_snr_is_decreasing_and_crosses_zero_db():
    schedule = NoiseSchedule("scaled_linear")
    snr_db = schedule.snr_db()
    assert (snr_db[1:] < snr_db[:-1]).all()
    assert snr_db[0] > 0 > snr_db[-1]
    assert schedule.snr(5).item() == pytest.approx((schedule.alphas_cumprod[5] / (1 - schedule.alphas_cumprod[5])).item())


def test_schedule_tensors_are_read_only_copies():
    schedule = NoiseSchedule("linear")
    schedule.alphas_cumprod.zero_()
    assert schedule.alphas_cumprod[0] > 0.99


# ---- bad input -----------------------------------------------------------------


def test_unknown_schedule_name_is_rejected():
    with pytest.raises(ValueError, match=r"schedule name must be one of .*'linear'.*got 'cosin'"):
        NoiseSchedule("cosin")


def test_bad_betas_are_rejected():
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        NoiseSchedule("linear", beta_start=0.02, beta_end=1e-4)
    with pytest.raises(ValueError, match="cosine schedule takes no beta_start"):
        NoiseSchedule("cosine", beta_start=0.001)
    with pytest.raises(ValueError, match="num_train_timesteps must be an int >= 2; got 1"):
        NoiseSchedule("linear", num_train_timesteps=1)


@pytest.mark.parametrize("t", [-1, 1000, torch.tensor([0, 1000, 3, 4])])
def test_timestep_out_of_range(t, x0):
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1000\)"):
        NoiseSchedule("linear").add_noise(x0, torch.randn_like(x0), t)


def test_float_timestep_is_rejected(x0):
    with pytest.raises(TypeError, match="t must be an int or an integer tensor; got float"):
        NoiseSchedule("linear").add_noise(x0, torch.randn_like(x0), 3.0)
    with pytest.raises(TypeError, match="integer timesteps; got dtype torch.float32"):
        NoiseSchedule("linear").add_noise(x0, torch.randn_like(x0), torch.tensor([1.0, 2, 3, 4]))


def test_batch_size_mismatch(x0):
    with pytest.raises(ValueError, match="t has 3 timesteps but the batch has 4 images"):
        NoiseSchedule("linear").add_noise(x0, torch.randn_like(x0), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"noise must have the shape of x0 \(4, 3, 16, 16\); got \(2, 3, 16, 16\)"):
        NoiseSchedule("linear").add_noise(x0, torch.randn(2, 3, 16, 16), 5)


def test_nan_and_integer_images_are_rejected(x0):
    bad = x0.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0 contains NaN"):
        NoiseSchedule("linear").add_noise(bad, torch.randn_like(x0), 5)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor; got dtype torch.uint8"):
        NoiseSchedule("linear").add_noise(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.randn(1, 3, 4, 4), 5)


def test_ideal_observer_accuracy_matches_simulation():
    schedule = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 8, generator=g) * 2 - 1
    b = a.flip(-1)
    theory = schedule.ideal_observer_accuracy(a, b)
    assert theory[0] > 0.999 and abs(theory[-1].item() - 0.5) < 0.02
    assert (theory[1:] <= theory[:-1] + 1e-6).all()
    for t in (400, 600, 800):
        n = 4000
        noise = torch.randn(n, *a.shape, generator=g)
        x_t = schedule.add_noise(a.expand(n, -1, -1, -1), noise, t)
        s = schedule.alphas_cumprod[t].sqrt()
        nearer_a = ((x_t - s * a).flatten(1).norm(dim=1) < (x_t - s * b).flatten(1).norm(dim=1)).float().mean()
        assert abs(nearer_a.item() - theory[t].item()) < 0.03


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_velocity_matches_diffusers_get_velocity(name, x0):
    schedule = NoiseSchedule(name)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 250, 700, 999])
    expected = DDPMScheduler(**schedule.diffusers_config()).get_velocity(x0, noise, t)
    # atol: the course accumulates ᾱ in float64, diffusers in float32
    torch.testing.assert_close(schedule.velocity(x0, noise, t), expected, atol=1e-5, rtol=1e-5)
    # v, x_t and the pair (x0, ε) determine each other: x0 = √ᾱ x_t − √(1−ᾱ) v.
    ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = schedule.add_noise(x0, noise, t)
    torch.testing.assert_close(ab.sqrt() * x_t - (1 - ab).sqrt() * schedule.velocity(x0, noise, t), x0,
                               atol=1e-5, rtol=1e-5)
