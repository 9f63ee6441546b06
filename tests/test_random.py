"""One rule for random numbers: drawn on the generator's device and moved; the global RNG left alone."""

from __future__ import annotations

import functools
import importlib
import inspect

import pytest
import torch

import sdlab as sd
from sdlab.random import generator_device, rand, randint, randn_tensor, randperm, seeded_global_rng

# Every module of the package (sd.__all__ names them), so a new module's functions are found too.
MODULES = sorted(name for name in sd.__all__ if inspect.ismodule(getattr(sd, name)))


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("draw", [
    lambda gen, device: randn_tensor((3, 4), generator=gen, device=device),
    lambda gen, device: rand((3, 4), generator=gen, device=device),
    lambda gen, device: randint(0, 10, (3, 4), generator=gen, device=device),
    lambda gen, device: randperm(12, generator=gen, device=device),
], ids=["randn_tensor", "rand", "randint", "randperm"])
def test_a_cpu_generator_draws_on_the_cpu_for_any_device(draw):
    # "meta" stands in for a GPU: a device whose own generator the CPU one cannot serve.
    on_meta = draw(g(5), "meta")
    assert on_meta.device.type == "meta"
    a, b = g(5), g(5)
    draw(a, "meta"), draw(b, "cpu")
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))  # advanced alike
    assert torch.equal(draw(g(5), None), draw(g(5), "cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_the_same_numbers_on_cuda():
    assert torch.equal(randn_tensor((4, 4), generator=g(1), device="cuda").cpu(), randn_tensor((4, 4), generator=g(1)))


def test_a_list_of_generators_draws_each_row_with_its_own():
    rows = randn_tensor((3, 5), generator=[g(1), g(2), g(3)])
    assert torch.equal(rows[1], randn_tensor((1, 5), generator=g(2))[0])
    with pytest.raises(ValueError, match="one per batch element: got 2 for shape"):
        randn_tensor((3, 5), generator=[g(1), g(2)])
    with pytest.raises(TypeError, match="generator must be a torch.Generator, a list of them, or None"):
        randn_tensor((3, 5), generator=[1, 2, 3])
    assert generator_device([g(1)]).type == "cpu" and generator_device(None, "meta").type == "meta"


def test_without_a_generator_the_global_rng_is_used():
    torch.manual_seed(3)
    a = randn_tensor((4,))
    torch.manual_seed(3)
    assert torch.equal(a, torch.randn(4))


def test_randint_refuses_an_empty_range():
    with pytest.raises(ValueError, match="randint needs low < high; got low=3, high=3"):
        randint(3, 3, (2,))


def test_seeded_global_rng_repeats_and_restores():
    before = torch.get_rng_state()
    with seeded_global_rng(7):
        a = torch.rand(3)
    with seeded_global_rng(7):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)


# --- every function that takes a generator leaves the global RNG alone ----------------------------------

def _tiny_unet():
    with seeded_global_rng(0):
        return sd.UNet(sd.UNetConfig.tiny(in_channels=1, out_channels=1, sample_size=8))


def _blobs(n, generator):
    return randn_tensor((n, 1, 8, 8), generator=generator, device=generator.device).clamp(-1, 1)


def _tiny_clip():
    with seeded_global_rng(0):
        return sd.clip.MiniCLIP(sd.clip.MiniCLIPConfig(embed_dim=16, text_width=32, text_layers=1, text_heads=2,
                                                       image_channels=8, image_size=64))


def _tiny_vae():
    with seeded_global_rng(0):
        return sd.vae.make_vae(4, block_out_channels=(8, 8, 8))


def _tiny_judge():
    with seeded_global_rng(0):
        return sd.judge.AttributeJudge(width=8).eval()


def _latent_scenes():
    return sd.text_unet.encode_scenes(_tiny_vae(), 4, generator=g(4), progress=False)


def _tiny_text_unet():
    with seeded_global_rng(0):
        return sd.text_unet.make_text_unet(cross_attention_dim=32, block_out_channels=(16, 16))


def _text_unet_loss():
    unet, text = _tiny_text_unet(), _tiny_clip().text_model
    return sd.text_unet.text_unet_loss(unet, _latent_scenes().batch(4, g(5)), g(), caption_dropout=0.5,
                                       schedule=sd.NoiseSchedule("scaled_linear"), text_encoder=text)


def _scenes64():
    return sd.data.make_scenes(4, **sd.data.SCENES, generator=g(3))


def _ddpm_step():
    sampler = sd.samplers.DDPMSampler(sd.NoiseSchedule("cosine"))
    sampler.set_timesteps(10)
    x = torch.zeros(2, 1, 4, 4)
    return sampler.step(x, 900, x, generator=g())


def _ddim_step():
    sampler = sd.samplers.DDIMSampler(sd.NoiseSchedule("cosine"), eta=1.0)
    sampler.set_timesteps(10)
    x = torch.zeros(2, 1, 4, 4)
    return sampler.step(x, 900, x, generator=g())


@functools.cache
def _mini_sd():
    return sd.pipeline.load_pipeline()


CALLS = {
    "random.randn_tensor": lambda: randn_tensor((2, 3), generator=g()),
    "random.rand": lambda: rand((2, 3), generator=g()),
    "random.randint": lambda: randint(0, 4, (2, 3), generator=g()),
    "random.randperm": lambda: randperm(5, generator=g()),
    "random.generator_device": lambda: generator_device(g()),
    "samplers.randn_tensor": lambda: sd.samplers.randn_tensor((2, 3), generator=g()),
    "samplers.DDPMSampler.step": _ddpm_step,
    "samplers.DDIMSampler.step": _ddim_step,
    "samplers.sample": lambda: sd.samplers.sample(lambda x, t: x * 0.1, (2, 1, 4, 4),
                                                  sampler=sd.samplers.DDPMSampler(sd.NoiseSchedule("linear")),
                                                  num_inference_steps=5, generator=g(), progress=False),
    "schedules.NoiseSchedule.add_noise_stepwise": lambda: sd.NoiseSchedule("linear").add_noise_stepwise(
        torch.zeros(1, 1, 4, 4), 5, generator=g()),
    "data.make_scenes": lambda: sd.data.make_scenes(4, generator=g()),
    "data.render_scenes": lambda: sd.data.render_scenes(sd.data.make_scenes(2, generator=g()).specs(),
                                                        generator=g()),
    "data.make_silhouette_batch": lambda: sd.data.make_silhouette_batch(4, generator=g()),
    "silhouettes.make_silhouette_batch": lambda: sd.silhouettes.make_silhouette_batch(4, generator=g()),
    "plotting.plot_noising_grid": lambda: sd.plotting.plot_noising_grid(
        torch.zeros(3, 8, 8), sd.NoiseSchedule("linear"), [0, 500], generator=g()),
    "train.diffusion_loss": lambda: sd.train.diffusion_loss(_tiny_unet(), sd.NoiseSchedule("cosine"),
                                                            _blobs(4, g()), generator=g()),
    "train.per_timestep_loss": lambda: sd.train.per_timestep_loss(_tiny_unet(), sd.NoiseSchedule("cosine"), _blobs,
                                                                  bins=2, batch_size=4, generator=g()),
    "evaluate.train_classifier": lambda: sd.evaluate.train_classifier(steps=2, batch_size=4, generator=g(),
                                                                      progress=False),
    "captions.paraphrase": lambda: sd.captions.paraphrase(_scenes64().labels, generator=g()),
    "clip.clip_batch": lambda: sd.clip.clip_batch(8, g())[1],
    "clip.clip_loss": lambda: sd.clip.clip_loss(_tiny_clip(), sd.clip.clip_batch(8, g(1)), generator=g()),
    "clip.probe_accuracy": lambda: sd.clip.probe_accuracy(_tiny_clip(), _scenes64(), _scenes64(), steps=2,
                                                          generator=g()),
    "judge.judge_batch": lambda: sd.judge.judge_batch(4, g()).images,
    "judge.degrade": lambda: sd.judge.degrade(_scenes64().images, g()),
    "judge.judge_loss": lambda: sd.judge.judge_loss(_tiny_judge(), _scenes64(), generator=g()),
    "judge.train_judge": lambda: sd.judge.train_judge(steps=2, batch_size=4, width=8, generator=g(),
                                                      progress=False)[1],
    "vae.encode": lambda: sd.vae.encode(_tiny_vae(), _scenes64().images, generator=g()),
    "vae.vae_loss": lambda: sd.vae.vae_loss(_tiny_vae(), _scenes64().images, generator=g()),
    "vae.vae_batch": lambda: sd.vae.vae_batch(4, g()),
    "text_unet.encode_scenes": lambda: sd.text_unet.encode_scenes(_tiny_vae(), 4, generator=g(),
                                                                  progress=False).latents,
    "text_unet.LatentScenes.batch": lambda: _latent_scenes().batch(4, g())[0],
    "text_unet.text_unet_loss": _text_unet_loss,
    "guidance.generate": lambda: sd.guidance.generate(_tiny_text_unet(), _tiny_clip().text_model, _tiny_vae(),
                                                      ["a red cat"], num_inference_steps=2, generator=g()),
    "pipeline.paint": lambda: torch.cat([  # text-to-image, and image-to-image (encoder sampling, add_noise)
        sd.pipeline.paint(_mini_sd(), "a red cat", num_inference_steps=2, generator=g()),
        sd.pipeline.paint(_mini_sd(), "a red cat", image=_scenes64().images[:1], strength=0.5,
                          num_inference_steps=2, generator=g())]),
    "vae.prior_samples": lambda: sd.vae.prior_samples(_tiny_vae(), 2, generator=g()),
    "vae.scaling_factor_from_data": lambda: torch.tensor(sd.vae.scaling_factor_from_data(
        _tiny_vae(), _scenes64().images, generator=g())),
}
# They take a generator to save or restore its state, not to draw from it.
STATE_ONLY = {"checkpoints.save_checkpoint", "checkpoints.load_checkpoint"}


def _functions_taking_a_generator():
    for module_name in MODULES:
        module = importlib.import_module(f"sdlab.{module_name}")
        for name in module.__all__:
            obj = getattr(module, name)
            members = [(name, obj)]
            if inspect.isclass(obj):
                members = [(f"{name}.{attr}", getattr(obj, attr)) for attr in vars(obj) if not attr.startswith("_")]
                members += [(f"{name}.{attr}", getattr(obj, attr)) for base in obj.__mro__[1:-1]
                            for attr in vars(base) if not attr.startswith("_")]
            for qualname, member in members:
                try:
                    parameters = inspect.signature(member).parameters
                except (TypeError, ValueError):
                    continue
                if "generator" in parameters:
                    yield f"{module_name}.{qualname}"


def test_every_function_that_takes_a_generator_is_checked_below():
    found = set(_functions_taking_a_generator())
    assert len(found) >= 15
    missing = sorted(found - set(CALLS) - STATE_ONLY)
    assert not missing, f"add these to CALLS in {__file__}: {missing}"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_function_given_a_generator_leaves_the_global_rng_alone(name):
    import matplotlib.pyplot as plt

    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = CALLS[name]()
    assert torch.equal(torch.get_rng_state(), before), f"{name} consumed the global RNG"
    torch.manual_seed(999)  # another global state: the result must not depend on it
    second = CALLS[name]()
    plt.close("all")
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second), f"{name} depends on the global RNG"


def test_the_same_generator_seed_gives_the_same_classifier():
    torch.manual_seed(1)
    a, _ = sd.evaluate.train_classifier(steps=3, batch_size=8, generator=g(4), progress=False)
    torch.manual_seed(2)
    b, _ = sd.evaluate.train_classifier(steps=3, batch_size=8, generator=g(4), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c, _ = sd.evaluate.train_classifier(steps=3, batch_size=8, generator=g(5), progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_training_leaves_the_global_rng_alone_and_repeats():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    config = sd.train.TrainConfig(steps=3, batch_size=4, warmup_steps=1)
    a = sd.train.train(_tiny_unet(), sd.NoiseSchedule("cosine"), _blobs, config=config, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(5)
    b = sd.train.train(_tiny_unet(), sd.NoiseSchedule("cosine"), _blobs, config=config, progress=False)
    assert a.losses == b.losses


def test_dropout_is_repeatable_and_resumes_exactly(tmp_path):
    def dropout_unet():
        with seeded_global_rng(0):
            return sd.UNet(sd.UNetConfig.tiny(in_channels=1, out_channels=1, sample_size=8, dropout=0.5))

    config = sd.train.TrainConfig(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=3)
    straight = sd.train.train(dropout_unet(), sd.NoiseSchedule("cosine"), _blobs, config=config, progress=False)
    calls = 0

    def dies_at_step_5(n, generator):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return _blobs(n, generator)

    path = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        sd.train.train(dropout_unet(), sd.NoiseSchedule("cosine"), dies_at_step_5, config=config, checkpoint=path,
                       progress=False)
    torch.manual_seed(77)  # a different global state before the resumed run
    resumed = sd.train.train(dropout_unet(), sd.NoiseSchedule("cosine"), _blobs, config=config,
                             checkpoint=path, resume=True, progress=False)
    assert resumed.losses == straight.losses
    assert all(torch.equal(p, q) for p, q in zip(resumed.model.parameters(), straight.model.parameters()))
