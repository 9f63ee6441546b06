"""Tests for sdlab.samplers: agreement with diffusers' DDPM/DDIM schedulers, the papers' equations, bad inputs."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor as diffusers_randn_tensor

from sdlab.samplers import (
    DDIMSampler,
    DDPMSampler,
    StepOutput,
    Trajectory,
    predict_epsilon,
    predict_original_sample,
    randn_tensor,
    sample,
)
from sdlab.schedules import SCHEDULE_NAMES, NoiseSchedule

SHAPE = (2, 3, 8, 8)
PREDICTIONS = ("epsilon", "v_prediction")
# (kind, eta, extra options): DDPM with both fixed variances, DDIM at three values of η and with ᾱ_prev(0) = ᾱ_0.
SAMPLERS = [("ddpm", None, {}), ("ddpm", None, {"variance_type": "fixed_large"})] + [
    ("ddim", eta, {}) for eta in (0.0, 0.5, 1.0)
] + [("ddim", 1.0, {"set_alpha_to_one": False})]
# For 1000 steps, a spread of timesteps (each step is independent of the others) keeps the test fast.
SOME_OF_1000 = [999, 998, 900, 750, 500, 250, 100, 20, 3, 2, 1, 0]


@pytest.fixture(scope="module")
def schedules() -> dict[str, NoiseSchedule]:
    return {name: NoiseSchedule(name) for name in SCHEDULE_NAMES}


def make_pair(schedule, kind, eta, options, *, prediction_type="epsilon", clip_sample=True, same_alphas=True):
    """An sdlab sampler and the diffusers scheduler built from schedule.diffusers_config(), plus step kwargs.

    ``same_alphas`` hands diffusers sdlab's ᾱ_t (float64-computed) instead of its own float32 cumprod,
    so that only the step arithmetic is compared.
    """
    common = dict(prediction_type=prediction_type, clip_sample=clip_sample)
    if kind == "ddpm":
        ours = DDPMSampler(schedule, **common, **options)
        theirs = DDPMScheduler(**schedule.diffusers_config(), **common, **options)
        kwargs = {}
    else:
        ours = DDIMSampler(schedule, eta=eta, **common, **options)
        theirs = DDIMScheduler(**schedule.diffusers_config(), **common, **options)
        kwargs = {"eta": eta}
    if same_alphas:
        theirs.alphas_cumprod = schedule.alphas_cumprod
        if kind == "ddim" and not options.get("set_alpha_to_one", True):
            theirs.final_alpha_cumprod = schedule.alphas_cumprod[0]
    return ours, theirs, kwargs


def max_step_diff(ours, theirs, kwargs, n, timesteps=None):
    """Run both `step`s on random (x_t, model output) at each timestep; return max |Δ| of x_{t-1} and of x̂0."""
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    gen = torch.Generator().manual_seed(0)
    d_prev = d_x0 = 0.0
    for t in ours.timesteps if timesteps is None else torch.tensor(timesteps):
        x, out = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(int(t)))
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(int(t)), **kwargs)
        d_prev = max(d_prev, (a.prev_sample - b.prev_sample).abs().max().item())
        # x̂0 reaches ~1e4 at the cosine schedule's last step; compare relative to its size.
        d_x0 = max(d_x0, ((a.pred_original_sample - b.pred_original_sample).abs() / (1 + b.pred_original_sample.abs())).max().item())
    return d_prev, d_x0


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a trained network: a smooth function of x_t and t."""
    return torch.tanh(1.5 * x) * (0.6 + t.float() / 2500) + 0.05 * torch.sin(3 * x)


def point_mass_denoiser(x0: torch.Tensor, alphas_cumprod: torch.Tensor):
    """The ideal ε-predictor when the data is the single image x0: ε̂ = (x_t − √ᾱ_t x0) / √(1 − ᾱ_t)."""
    def model_fn(x, t):
        ab = alphas_cumprod[int(t)].double()
        return ((x.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).to(x.dtype)
    return model_fn


# --- agreement with diffusers, one step at a time -------------------------------------------------

@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_step_matches_diffusers_given_the_same_alphas(schedules, name, prediction_type):
    for (kind, eta, options), clip in itertools.product(SAMPLERS, (True, False)):
        ours, theirs, kwargs = make_pair(schedules[name], kind, eta, options, prediction_type=prediction_type, clip_sample=clip)
        for n, ts in ((1000, SOME_OF_1000), (50, None), (10, None), (7, None), (1, None)):
            d_prev, d_x0 = max_step_diff(ours, theirs, kwargs, n, ts)
            assert d_prev <= 1e-6 and d_x0 <= 1e-6, (kind, eta, options, clip, n, d_prev, d_x0)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_step_matches_diffusers_with_its_own_schedule(schedules, name, prediction_type):
    # Each library computes its own ᾱ_t (they differ by < 5e-7). For 1000 steps the DDPM β_t = 1 − ᾱ_t/ᾱ_{t−1}
    # turns that into ~1e-3 relative error near t = 0, and the unclipped cosine x̂0 (~1e4) at t = 999 as well.
    for (kind, eta, options), clip in itertools.product(SAMPLERS, (True, False)):
        pair = make_pair(schedules[name], kind, eta, options, prediction_type=prediction_type, clip_sample=clip, same_alphas=False)
        for n, ts, tol in ((1000, SOME_OF_1000, 2e-3), (50, None, 2e-5)):  # 10 steps: see the trajectory test
            d_prev, d_x0 = max_step_diff(*pair, n, ts)
            assert d_prev <= tol and d_x0 <= 2e-5, (kind, eta, options, clip, n, d_prev, d_x0)


def test_set_timesteps_matches_diffusers(schedules):
    ours, theirs = DDIMSampler(schedules["linear"]), DDPMScheduler(**schedules["linear"].diffusers_config())
    for n in (1, 3, 7, 10, 50, 333, 999, 1000):
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        assert torch.equal(ours.timesteps, theirs.timesteps) and len(ours.timesteps) == n
        assert ours.timesteps[-1] == 0 and bool((ours.timesteps.diff() < 0).all())


def test_randn_tensor_draws_what_diffusers_draws():
    ours = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theirs = diffusers_randn_tensor(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(ours, theirs) and ours.dtype == torch.float64
    # A CPU generator draws on the CPU for any device (here "meta", standing in for a GPU), then moves:
    # the generator advances exactly as for a CPU draw, so a GPU run sees the same numbers.
    gen, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert randn_tensor(SHAPE, generator=gen, device="meta").device.type == "meta"
    torch.randn(SHAPE, generator=reference)
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=reference))


# --- agreement with diffusers, whole trajectories --------------------------------------------------

@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("n", [10, 50])
def test_whole_trajectory_matches_diffusers(schedules, name, n):
    # Each library with its own ᾱ_t: the plain `DDPMScheduler(**schedule.diffusers_config())` a reader would build.
    for (kind, eta, options), prediction_type in itertools.product(SAMPLERS, PREDICTIONS):
        ours, theirs, kwargs = make_pair(
            schedules[name], kind, eta, options, prediction_type=prediction_type, same_alphas=False
        )
        a = sample(fake_model, SHAPE, sampler=ours, num_inference_steps=n,
                   generator=torch.Generator().manual_seed(7), progress=False)
        b = sample(fake_model, SHAPE, sampler=theirs, num_inference_steps=n, step_kwargs=kwargs,
                                    generator=torch.Generator().manual_seed(7), progress=False)
        diff = (a - b).abs().max().item()
        assert diff <= 1e-5, (kind, eta, options, prediction_type, diff)


def test_sample_with_diffusers_ddim_equals_our_ddim(schedules):
    schedule = schedules["scaled_linear"]
    ours = sample(fake_model, SHAPE, sampler=DDIMSampler(schedule), num_inference_steps=20,
                  generator=torch.Generator().manual_seed(1), progress=False)
    theirs = sample(fake_model, SHAPE, sampler=DDIMScheduler(**schedule.diffusers_config()),
                                     num_inference_steps=20, generator=torch.Generator().manual_seed(1), progress=False)
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside diffusers' DPM-Solver
def test_sample_drives_dpm_solver(schedules):
    schedule = schedules["linear"]
    scheduler = DPMSolverMultistepScheduler(**schedule.diffusers_config())
    x, trajectory = sample(fake_model, SHAPE, sampler=scheduler, num_inference_steps=10,
                                            generator=torch.Generator().manual_seed(0), return_trajectory=True,
                                            progress=False)
    assert x.shape == SHAPE and torch.isfinite(x).all()
    assert len(trajectory.timesteps) == 10 and len(trajectory.samples) == 11
    assert trajectory.pred_original_samples == []  # DPM-Solver's step does not report x̂0
    # With the ideal denoiser for a single image, DPM-Solver++ lands on that image.
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8
    out = sample(point_mass_denoiser(x0, schedule.alphas_cumprod), SHAPE, sampler=scheduler,
                                  num_inference_steps=10, generator=torch.Generator().manual_seed(0), progress=False)
    assert (out - x0).abs().max().item() < 1e-5


# --- the papers' equations, checked without diffusers ------------------------------------------------

@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_x0_and_noise_helpers_invert_add_noise(schedules, prediction_type):
    schedule = schedules["cosine"]
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(SHAPE, generator=gen) * 2 - 1, torch.randn(SHAPE, generator=gen)
    for t in (0, 100, 500, 900):
        ab = schedule.alphas_cumprod[t]
        x_t = schedule.add_noise(x0, eps, t)
        output = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0  # v
        x0_hat = predict_original_sample(output, x_t, ab, prediction_type=prediction_type)
        eps_hat = predict_epsilon(output, x_t, ab, prediction_type=prediction_type)
        assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, eps, atol=1e-4)


def test_ddpm_posterior_mean_equals_eq_11(schedules):
    # Eq. 7 with x̂0 plugged in equals eq. 11: μ = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t, and the noise has variance β̃_t.
    # In float64, with β_t = 1 − ᾱ_t/ᾱ_{t−1} as the sampler uses it (= schedule.betas up to float32 rounding).
    schedule = schedules["linear"]
    ab = schedule.alphas_cumprod.double()
    assert torch.allclose(1 - ab[1:] / ab[:-1], schedule.betas[1:].double(), rtol=2e-3)
    gen = torch.Generator().manual_seed(0)
    for n, timesteps in ((1000, [999, 500, 100, 10, 1, 0]), (10, [900, 500, 100, 0])):
        sampler = DDPMSampler(schedule, clip_sample=False)
        sampler.set_timesteps(n)
        for t in timesteps:
            prev_ab = ab[sampler.previous_timestep(t)] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
            beta = 1 - ab[t] / prev_ab
            x, eps = torch.randn(SHAPE, generator=gen, dtype=torch.float64), torch.randn(SHAPE, generator=gen, dtype=torch.float64)
            out = sampler.step(eps, t, x, generator=torch.Generator().manual_seed(t))
            mu = (x - beta / (1 - ab[t]).sqrt() * eps) / (1 - beta).sqrt()
            var = (1 - prev_ab) / (1 - ab[t]) * beta if t > 0 else 0.0
            z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
            assert torch.allclose(out.prev_sample, mu + var**0.5 * z, atol=1e-9), (n, t)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_deterministic_ddim_follows_the_forward_marginals(schedules, prediction_type):
    # Eq. 12 with σ = 0 and the true noise: x_{t−1} = √ᾱ_{t−1} x0 + √(1−ᾱ_{t−1}) ε, i.e. add_noise at t−1.
    schedule = schedules["scaled_linear"]
    sampler = DDIMSampler(schedule, eta=0.0, prediction_type=prediction_type)
    sampler.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(SHAPE, generator=gen) * 1.8 - 0.9, torch.randn(SHAPE, generator=gen)
    for t in sampler.timesteps.tolist():
        ab = schedule.alphas_cumprod[t]
        output = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        prev = sampler.step(output, t, schedule.add_noise(x0, eps, t)).prev_sample
        expected = x0 if t == 0 else schedule.add_noise(x0, eps, sampler.previous_timestep(t))
        assert torch.allclose(prev, expected, atol=1e-5), t


def test_ddim_noise_scale_is_eq_16(schedules):
    # Two seeds differ only in z: x(seed1) − x(seed2) = σ_t(η) (z1 − z2).
    schedule = schedules["cosine"]
    ab = schedule.alphas_cumprod.double()
    x, out = torch.randn(SHAPE), torch.randn(SHAPE)
    for eta, n in ((0.5, 10), (1.0, 50), (0.3, 1000)):
        sampler = DDIMSampler(schedule, eta=eta)
        sampler.set_timesteps(n)
        t = int(sampler.timesteps[1])
        prev_t = sampler.previous_timestep(t)
        sigma = eta * ((1 - ab[prev_t]) / (1 - ab[t]) * (1 - ab[t] / ab[prev_t])).sqrt()
        a, b = (sampler.step(out, t, x, generator=torch.Generator().manual_seed(s)).prev_sample for s in (1, 2))
        z1, z2 = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
        assert torch.allclose(a - b, (sigma * (z1 - z2)).float(), atol=1e-5), (eta, n)


def test_ddim_with_eta_one_is_ddpm(schedules):
    schedule = schedules["linear"]
    gen = torch.Generator().manual_seed(0)
    for n in (1000, 50):
        ddpm, ddim = DDPMSampler(schedule, clip_sample=False), DDIMSampler(schedule, eta=1.0, clip_sample=False)
        ddpm.set_timesteps(n)
        ddim.set_timesteps(n)
        for t in ddpm.timesteps[:: max(1, n // 10)].tolist() + [0]:
            x, out = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
            a = ddpm.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
            b = ddim.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
            assert torch.allclose(a, b, atol=2e-5), (n, t)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_ideal_denoiser_lands_on_its_image(schedules, kind):
    schedule = schedules["cosine"]
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8
    sampler = DDPMSampler(schedule) if kind == "ddpm" else DDIMSampler(schedule, eta=0.5)
    out = sample(point_mass_denoiser(x0, schedule.alphas_cumprod), SHAPE, sampler=sampler, num_inference_steps=20,
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert (out - x0).abs().max().item() < 1e-5


# --- the loop and its trajectory ------------------------------------------------------------------

def test_sample_returns_a_trajectory_and_is_reproducible(schedules):
    sampler = DDPMSampler(schedules["linear"])
    x, traj = sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=5,
                     generator=torch.Generator().manual_seed(0), return_trajectory=True, progress=False)
    again = sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=5,
                   generator=torch.Generator().manual_seed(0), progress=False)
    other = sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=5,
                   generator=torch.Generator().manual_seed(1), progress=False)
    assert isinstance(traj, Trajectory) and torch.equal(x, again) and not torch.equal(x, other)
    assert traj.timesteps == [800, 600, 400, 200, 0]
    assert len(traj.samples) == 6 and len(traj.pred_original_samples) == 5
    assert torch.equal(traj.samples[0], randn_tensor(SHAPE, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(traj.samples[-1], x) and all(s.device.type == "cpu" for s in traj.samples)


def test_sample_follows_the_requested_dtype_and_ddim_eta0_ignores_the_generator(schedules):
    sampler = DDIMSampler(schedules["cosine"], eta=0.0)
    a = sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=4, dtype=torch.float64,
               generator=torch.Generator().manual_seed(0), progress=False)
    x_T = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler.set_timesteps(4)
    b = x_T
    for t in sampler.timesteps:  # the same loop by hand, without a generator: η = 0 draws no noise
        b = sampler.step(fake_model(b, t), t, b).prev_sample
    assert a.dtype == torch.float64 and torch.equal(a, b)


def test_step_output_is_a_named_tuple(schedules):
    sampler = DDPMSampler(schedules["linear"])
    sampler.set_timesteps(10)
    out = sampler.step(torch.zeros(SHAPE), 0, torch.zeros(SHAPE))
    prev, x0 = out
    assert isinstance(out, StepOutput) and prev is out.prev_sample and x0 is out.pred_original_sample


# --- bad inputs -----------------------------------------------------------------------------------

def test_bad_constructor_arguments(schedules):
    s = schedules["linear"]
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]; got 1.5"):
        DDIMSampler(s, eta=1.5)
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]; got -0.1"):
        DDIMSampler(s, eta=-0.1)
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('epsilon', 'v_prediction'\); got 'sample'"):
        DDPMSampler(s, prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type must be one of .*; got 'x0'"):
        predict_original_sample(torch.zeros(1), torch.zeros(1), 0.5, prediction_type="x0")
    with pytest.raises(ValueError, match="variance_type must be one of .*; got 'learned'"):
        DDPMSampler(s, variance_type="learned")
    with pytest.raises(TypeError, match="schedule must be a sdlab NoiseSchedule; got DDPMScheduler"):
        DDPMSampler(DDPMScheduler())
    with pytest.raises(TypeError, match="clip_sample must be True or False; got 1"):
        DDIMSampler(s, clip_sample=1)


def test_bad_num_inference_steps(schedules):
    sampler = DDPMSampler(schedules["linear"])
    with pytest.raises(ValueError, match=r"num_inference_steps must lie in \[1, 1000\] for this schedule; got 0"):
        sampler.set_timesteps(0)
    with pytest.raises(ValueError, match=r"num_inference_steps must lie in \[1, 1000\] for this schedule; got 1001"):
        sampler.set_timesteps(1001)
    with pytest.raises(TypeError, match="num_inference_steps must be an int; got float"):
        sampler.set_timesteps(10.0)
    with pytest.raises(ValueError, match="num_inference_steps must lie in"):
        sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=2000, progress=False)


def test_bad_step_arguments(schedules):
    sampler = DDIMSampler(schedules["linear"])
    x = torch.zeros(SHAPE)
    with pytest.raises(RuntimeError, match=r"call set_timesteps\(num_inference_steps\) before DDIMSampler.step"):
        sampler.step(x, 0, x)
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match=r"model_output must have the shape of sample \(2, 3, 8, 8\); got \(2, 6, 8, 8\)"):
        sampler.step(torch.zeros(2, 6, 8, 8), 900, x)
    with pytest.raises(ValueError, match="model_output has dtype torch.float64 but sample has dtype torch.float32"):
        sampler.step(x.double(), 900, x)
    with pytest.raises(ValueError, match="model_output is on meta but sample is on cpu"):
        sampler.step(torch.zeros(SHAPE, device="meta"), 900, x)
    with pytest.raises(TypeError, match="sample must be a floating-point torch.Tensor; got ndarray"):
        sampler.step(x, 900, x.numpy())
    with pytest.raises(ValueError, match=r"timestep 950 is not one of this sampler's timesteps \[900, 800, 700, \.\.\., 0\]"):
        sampler.step(x, 950, x)
    with pytest.raises(ValueError, match=r"timestep must be one timestep for the whole batch; got shape \(2,\)"):
        sampler.step(x, torch.tensor([900, 900]), x)
    with pytest.raises(ValueError, match=r"timestep must lie in \[0, 1000\) for this schedule; got 1000"):
        sampler.step(x, 1000, x)
    with pytest.raises(TypeError, match="timestep must hold integer timesteps"):
        sampler.step(x, torch.tensor(900.0), x)


@pytest.mark.parametrize("strength, steps_run", [(0.5, 4), (0.3, 2), (1.0, 8)])
def test_image_to_image_starts_part_way_down_from_the_noised_picture(schedules, strength, steps_run):
    sampler, clean = DDIMSampler(schedules["cosine"]), torch.rand(SHAPE, generator=torch.Generator().manual_seed(4))
    x, traj = sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=8, image_latents=clean,
                     strength=strength, generator=torch.Generator().manual_seed(0), return_trajectory=True,
                     progress=False)
    first = sampler.timesteps[8 - steps_run]
    assert traj.timesteps == sampler.timesteps[8 - steps_run:].tolist() and torch.equal(traj.samples[-1], x)
    noise = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(0))  # drawn after the picture's latents
    assert torch.equal(traj.samples[0], sampler.add_noise(clean, noise, first.repeat(SHAPE[0])))


def test_image_to_image_with_diffusers_dpm_solver_equals_the_pipeline_s_set_up(schedules):
    config = schedules["linear"].diffusers_config()
    ours, theirs = (DPMSolverMultistepScheduler(**config) for _ in range(2))
    clean, noise = torch.rand(SHAPE, generator=torch.Generator().manual_seed(4)), torch.randn(SHAPE)
    x = sample(fake_model, SHAPE, sampler=ours, num_inference_steps=10, latents=noise, image_latents=clean,
               strength=0.6, progress=False)
    theirs.set_timesteps(10)
    timesteps = theirs.timesteps[4:]  # StableDiffusionImg2ImgPipeline.get_timesteps
    theirs.set_begin_index(4)
    y = theirs.add_noise(clean, noise, timesteps[:1].repeat(SHAPE[0]))
    for t in timesteps:
        y = theirs.step(fake_model(y, t), t, y).prev_sample
    assert torch.equal(x, y)


def test_bad_image_to_image_arguments(schedules):
    sampler, clean = DDIMSampler(schedules["cosine"]), torch.zeros(SHAPE)
    run = lambda **kw: sample(fake_model, SHAPE, sampler=sampler, num_inference_steps=8, progress=False,  # noqa: E731
                              **{"image_latents": clean, **kw})
    for strength in (0.0, 1.5, "1"):
        with pytest.raises((ValueError, TypeError), match="strength"):
            run(strength=strength)
    with pytest.raises(ValueError, match="strength 0.1 runs no step of 8: raise strength or num_inference_steps"):
        run(strength=0.1)
    with pytest.raises(ValueError, match=r"image_latents must have shape \(2, 3, 8, 8\); got \(1, 3, 8, 8\)"):
        run(image_latents=clean[:1])


def test_bad_loop_arguments(schedules):
    sampler = DDPMSampler(schedules["linear"])
    with pytest.raises(ValueError, match=r"shape must be a tuple of positive ints such as \(B, C, H, W\); got \(2, 0, 8\)"):
        sample(fake_model, (2, 0, 8), sampler=sampler, num_inference_steps=2, progress=False)
    with pytest.raises(ValueError, match=r"model_output must have the shape of sample \(2, 3, 8, 8\); got \(2, 3\)"):
        sample(lambda x, t: x[:, :, 0, 0], SHAPE, sampler=sampler, num_inference_steps=2, progress=False)
    with pytest.raises(TypeError, match="sampler must be a sdlab sampler or a diffusers scheduler; "
                                        "NoiseSchedule lacks set_timesteps, step"):
        sample(fake_model, SHAPE, sampler=schedules["linear"], num_inference_steps=2, progress=False)


@pytest.mark.parametrize("n", [1, 7, 20, 30, 50])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_trailing_spacing_matches_diffusers_ddim(n, prediction_type):
    schedule = NoiseSchedule("cosine")
    ours = DDIMSampler(schedule, prediction_type=prediction_type, clip_sample=False, timestep_spacing="trailing")
    theirs = DDIMScheduler.from_config(ours.config)
    assert theirs.config.timestep_spacing == "trailing"
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert torch.equal(ours.timesteps, theirs.timesteps) and int(ours.timesteps[0]) == 999
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    a, b = x.clone(), x.clone()
    for t in ours.timesteps:
        output = torch.randn(2, 4, 8, 8, generator=g)
        a = ours.step(output, t, a).prev_sample
        b = theirs.step(output, t, b).prev_sample
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert DDIMSampler.from_config(ours.config).timestep_spacing == "trailing"
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMSampler(schedule, timestep_spacing="linspace")
