"""The samplers speak diffusers' scheduler protocol, and one loop drives them and diffusers' schedulers alike."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from sdlab.random import randn_tensor
from sdlab.samplers import (
    DDIMSampler,
    DDPMSampler,
    StepOutput,
    predict_original_sample,
    run_diffusers_scheduler,
    sample,
)
from sdlab.schedules import NoiseSchedule

SHAPE = (3, 2, 8, 8)
SCHEDULE = NoiseSchedule("cosine")


def model_fn(x, t):
    """A smooth, deterministic stand-in for a trained network."""
    return torch.tanh(1.5 * x) * (0.6 + t.float() / 2500) + 0.05 * torch.sin(3 * x)


def course_samplers():
    return [DDPMSampler(SCHEDULE), DDIMSampler(SCHEDULE), DDIMSampler(SCHEDULE, eta=1.0),
            DDPMSampler(SCHEDULE, variance_type="fixed_large", clip_sample=False, prediction_type="v_prediction")]


def diffusers_schedulers():
    config = SCHEDULE.diffusers_config()
    return [DDIMScheduler(**config), DPMSolverMultistepScheduler(**config), EulerDiscreteScheduler(**config)]


# The two loops as they were before there was one (sdlab 0.1.0, chapter 3): the reference.
def old_sample(sampler, n, generator):
    sampler.set_timesteps(n)
    x = randn_tensor(SHAPE, generator=generator)
    for t in sampler.timesteps:
        x = sampler.step(model_fn(x, t), t, x, generator=generator).prev_sample
    return x


def old_run_diffusers_scheduler(scheduler, n, generator):
    kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    scheduler.set_timesteps(n)
    x = randn_tensor(SHAPE, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(model_fn(scheduler.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
    return x


def diffusers_style_loop(scheduler, n, generator, device="cpu"):
    """The denoising loop of diffusers' pipelines, verbatim in its calls (StableDiffusionPipeline.__call__)."""
    scheduler.set_timesteps(n, device=device)
    timesteps = scheduler.timesteps
    latents = randn_tensor(SHAPE, generator=generator, device=device)
    latents = latents * scheduler.init_noise_sigma
    extra_step_kwargs = {}
    if "generator" in set(inspect.signature(scheduler.step).parameters.keys()):
        extra_step_kwargs["generator"] = generator
    for t in timesteps:
        latent_model_input = scheduler.scale_model_input(latents, t)
        noise_pred = model_fn(latent_model_input, t)
        latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
    return latents


@pytest.mark.parametrize("index", range(4))
def test_one_loop_gives_the_old_images_with_course_samplers(index):
    new = sample(model_fn, SHAPE, sampler=course_samplers()[index], num_inference_steps=12,
                 generator=torch.Generator().manual_seed(4), progress=False)
    old = old_sample(course_samplers()[index], 12, torch.Generator().manual_seed(4))
    assert torch.equal(new, old)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy's __array__ inside diffusers' DPM-Solver
@pytest.mark.parametrize("index", range(3))
def test_one_loop_gives_the_old_images_with_diffusers_schedulers(index):
    new = sample(model_fn, SHAPE, sampler=diffusers_schedulers()[index], num_inference_steps=12,
                 generator=torch.Generator().manual_seed(4), progress=False)
    old = old_run_diffusers_scheduler(diffusers_schedulers()[index], 12, torch.Generator().manual_seed(4))
    assert torch.equal(new, old)


@pytest.mark.parametrize("index", range(4))
def test_a_diffusers_style_loop_runs_unchanged_with_a_course_sampler(index):
    theirs = diffusers_style_loop(course_samplers()[index], 10, torch.Generator().manual_seed(2))
    ours = sample(model_fn, SHAPE, sampler=course_samplers()[index], num_inference_steps=10,
                  generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(theirs, ours)


def test_course_ddim_in_a_diffusers_loop_equals_diffusers_ddim():
    g = [torch.Generator().manual_seed(9) for _ in range(2)]
    ours = diffusers_style_loop(DDIMSampler(SCHEDULE), 20, g[0])
    theirs = diffusers_style_loop(DDIMScheduler(**SCHEDULE.diffusers_config()), 20, g[1])
    assert (ours - theirs).abs().max().item() < 1e-5


def test_protocol_attributes():
    sampler = DDIMSampler(SCHEDULE)
    assert sampler.order == 1 and sampler.init_noise_sigma == 1.0
    sampler.set_timesteps(5, device=torch.device("cpu"))
    assert isinstance(sampler.timesteps, torch.Tensor) and sampler.timesteps.dtype == torch.int64
    assert sampler.timesteps.tolist() == [800, 600, 400, 200, 0]
    x = torch.randn(SHAPE)
    assert sampler.scale_model_input(x, sampler.timesteps[0]) is x
    noise = torch.randn(SHAPE)
    t = torch.tensor([10, 500, 999])
    assert torch.equal(sampler.add_noise(x, noise, t), SCHEDULE.add_noise(x, noise, t))


def test_set_timesteps_puts_them_on_the_device():
    sampler = DDPMSampler(SCHEDULE)
    sampler.set_timesteps(4, device="meta")  # another device type, without needing a GPU
    assert sampler.timesteps.device.type == "meta"
    if torch.cuda.is_available():
        sampler.set_timesteps(4, device="cuda")
        assert sampler.timesteps.device.type == "cuda"


@pytest.mark.parametrize("sampler", course_samplers(), ids=lambda s: type(s).__name__)
def test_step_returns_a_tuple_without_return_dict(sampler):
    sampler.set_timesteps(10)
    x, t = torch.randn(SHAPE), sampler.timesteps[3]
    out = sampler.step(model_fn(x, t), t, x, generator=torch.Generator().manual_seed(1))
    plain = sampler.step(model_fn(x, t), t, x, generator=torch.Generator().manual_seed(1), return_dict=False)
    assert isinstance(out, StepOutput) and type(plain) is tuple and len(plain) == 2
    assert torch.equal(out.prev_sample, plain[0]) and torch.equal(out.pred_original_sample, plain[1])
    assert torch.equal(out[0], out.prev_sample)


def test_config_rebuilds_the_sampler():
    for sampler in course_samplers() + [DDIMSampler(NoiseSchedule("scaled_linear"), eta=0.3, steps_offset=1)]:
        rebuilt = type(sampler).from_config(sampler.config)
        assert rebuilt.config == sampler.config and rebuilt.schedule.name == sampler.schedule.name
        assert torch.equal(rebuilt.alphas_cumprod, sampler.alphas_cumprod)
        a = sample(model_fn, SHAPE, sampler=sampler, num_inference_steps=6,
                   generator=torch.Generator().manual_seed(3), progress=False)
        b = sample(model_fn, SHAPE, sampler=rebuilt, num_inference_steps=6,
                   generator=torch.Generator().manual_seed(3), progress=False)
        assert torch.equal(a, b)
    assert sampler.config.eta == sampler.eta and sampler.config["num_train_timesteps"] == 1000  # attribute access


def test_course_config_builds_the_diffusers_scheduler_and_back():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ddim = DDIMScheduler.from_config(DDIMSampler(SCHEDULE, steps_offset=1).config)
        ddpm = DDPMScheduler.from_config(DDPMSampler(SCHEDULE, variance_type="fixed_large").config)
    assert ddim.config.beta_schedule == "squaredcos_cap_v2" and ddim.config.steps_offset == 1
    assert ddpm.config.variance_type == "fixed_large"
    back = DDIMSampler.from_config(DDIMScheduler(**NoiseSchedule("linear").diffusers_config()).config)
    assert back.schedule.name == "linear" and back.eta == 0.0
    ours = diffusers_style_loop(DDIMSampler(SCHEDULE, steps_offset=1), 10, torch.Generator().manual_seed(0))
    theirs = diffusers_style_loop(ddim, 10, torch.Generator().manual_seed(0))
    assert (ours - theirs).abs().max().item() < 1e-5  # steps_offset=1, as Stable Diffusion's scheduler


def test_steps_offset_past_the_schedule_is_refused():
    with pytest.raises(ValueError, match="steps_offset=1 with 1000 steps reaches t = 1000"):
        DDIMSampler(SCHEDULE, steps_offset=1).set_timesteps(1000)


def test_a_list_of_generators_seeds_each_image():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batch = sample(model_fn, SHAPE, sampler=DDIMSampler(SCHEDULE, eta=1.0), num_inference_steps=5,
                   generator=gens, progress=False)
    alone = sample(model_fn, (1, *SHAPE[1:]), sampler=DDIMSampler(SCHEDULE, eta=1.0), num_inference_steps=5,
                   generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.allclose(batch[1:2], alone, atol=1e-6)


def test_latents_can_be_given():
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    a = sample(model_fn, SHAPE, sampler=DDIMSampler(SCHEDULE), num_inference_steps=5, latents=latents,
               progress=False)
    b = sample(model_fn, SHAPE, sampler=DDIMSampler(SCHEDULE), num_inference_steps=5,
               generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"latents must have shape \(3, 2, 8, 8\); got \(1, 2, 8, 8\)"):
        sample(model_fn, SHAPE, sampler=DDIMSampler(SCHEDULE), num_inference_steps=5, latents=latents[:1])


def test_run_diffusers_scheduler_is_a_deprecated_alias_of_sample():
    with pytest.warns(DeprecationWarning, match="sampler=scheduler"):
        old = run_diffusers_scheduler(model_fn, SHAPE, DDIMScheduler(**SCHEDULE.diffusers_config()),
                                      num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                                      progress=False)
    new = sample(model_fn, SHAPE, sampler=DDIMScheduler(**SCHEDULE.diffusers_config()), num_inference_steps=5,
                 generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(old, new)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["model_output", "sample"])
def test_step_refuses_nan_and_inf(bad, where):
    sampler = DDPMSampler(SCHEDULE)
    sampler.set_timesteps(10)
    x, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    (eps if where == "model_output" else x)[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=f"{where} holds NaN or infinite values at timestep 900"):
        sampler.step(eps, 900, x)


@pytest.mark.parametrize("alpha", [1.5, -0.5, 0.0, float("nan"), torch.tensor(1.5), torch.tensor([0.5, 0.0])])
def test_pred_original_sample_refuses_alpha_prod_outside_0_1(alpha):
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"alpha_prod_t \(ᾱ_t\) must lie in \(0, 1\]"):
        predict_original_sample(x, x, alpha)


def test_pred_original_sample_accepts_the_edges():
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(predict_original_sample(x, x, 1.0), x * 0 + x)  # ᾱ = 1: x_t is already clean
    assert torch.isfinite(predict_original_sample(x, x, torch.tensor(1e-6))).all()
