"""sdlab.pipeline: the course's parts as a StableDiffusionPipeline that loads where sdlab cannot be imported."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch

import sdlab as sd
from sdlab.pretrained import REGISTRY

PROMPT = "a small red cat on the left, blue background"
OTHER = "a large white dog in the centre, green background"
OPEN = "a small cat on the left, blue background"  # any colour
# what the judge should read in each prompt's pictures (the order of sd.judge.ATTRIBUTES)
TRUTH = {PROMPT: ("cat", "red", "blue", "small", "left"), OTHER: ("dog", "white", "green", "large", "centre")}


def _truth(words: tuple[str, ...]) -> dict[str, int]:
    return {name: names.index(word) for (name, names), word in zip(sd.judge.ATTRIBUTES.items(), words)}


@pytest.fixture(scope="module")
def pipe():
    return sd.pipeline.load_pipeline()


@pytest.fixture(scope="module")
def judge():
    return sd.pretrained.load_pretrained("judge")[0]


def _scene(seed: int = 5) -> sd.data.SceneBatch:
    return sd.data.make_scenes(1, **sd.data.SCENES, generator=torch.Generator().manual_seed(seed))


def test_the_shipped_pipeline_is_small_and_holds_exactly_the_shipped_parts(pipe):
    folder = REGISTRY["mini_sd"].path
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 40e6
    assert not list(folder.rglob("*.bin")) and len(list(folder.rglob("*.safetensors"))) == 3
    assert pipe.text_encoder.dtype == pipe.unet.dtype == pipe.vae.dtype == torch.float32
    parts = {"unet": sd.pretrained.load_pretrained("text_unet")[0], "vae": sd.pretrained.load_pretrained("vae_f4")[0],
             "text_encoder": sd.pretrained.load_pretrained("miniclip")[0].text_model}
    for name, part in parts.items():  # rebuild mini_sd (scripts/train_weights.py mini_sd) after retraining a part
        theirs = getattr(pipe, name).state_dict()
        assert part.state_dict().keys() == theirs.keys(), name
        assert all(torch.equal(v, theirs[k]) for k, v in part.state_dict().items()), name
    expected = sd.pipeline.make_scheduler(sd.text_unet.latent_sampler()).config
    assert {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")} == \
        {k: v for k, v in expected.items() if not k.startswith("_")}


def test_save_pipeline_writes_the_text_encoder_in_half_precision_and_it_loads_as_float32(pipe, tmp_path):
    folder = sd.pipeline.save_pipeline(pipe, tmp_path / "copy", info={"note": 1})
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    with safe_open(folder / "text_encoder" / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    again = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert again.text_encoder.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    assert all(torch.equal(v, again.text_encoder.state_dict()[k]) for k, v in pipe.text_encoder.state_dict().items())
    assert (folder / "sdlab_record.json").is_file() and not (tmp_path / "copy.tmp").exists()


PLAIN_DIFFUSERS = """
import sys
import warnings
sys.modules["sdlab"] = None  # any import of sdlab now fails
import torch
from diffusers import (DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionPipeline)
folder, out, prompt, other, open_prompt, negative = sys.argv[1:]
pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
seed = lambda: torch.Generator().manual_seed(0)
images = {}
images["ddim"] = pipe(prompt, height=64, width=64, num_inference_steps=20, guidance_scale=3.0,
                      num_images_per_prompt=8, generator=seed(), output_type="pt").images
images["negative"] = pipe(open_prompt, negative_prompt=negative, height=64, width=64, num_inference_steps=20,
                          guidance_scale=3.0, num_images_per_prompt=8, generator=seed(), output_type="pt").images
pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
images["dpm++"] = pipe(prompt, height=64, width=64, num_inference_steps=10, guidance_scale=3.0,
                       num_images_per_prompt=8, generator=seed(), output_type="pt").images
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
images["euler"] = pipe(prompt, height=64, width=64, num_inference_steps=20, guidance_scale=3.0,
                       num_images_per_prompt=8, generator=seed(), output_type="pt").images
img2img = StableDiffusionImg2ImgPipeline.from_pretrained(folder, local_files_only=True)
img2img.set_progress_bar_config(disable=True)
start = torch.load(sys.argv[2] + ".start.pt")
for strength in (0.3, 1.0):
    images[f"img2img {strength}"] = img2img([other] * 8, image=start, strength=strength,
                                            num_inference_steps=20, guidance_scale=3.0, generator=seed(),
                                            output_type="pt").images
torch.save(images, out)
print(type(pipe).__name__, pipe.scheduler.config.prediction_type, pipe.scheduler.config.timestep_spacing)
"""


def test_the_shipped_pipeline_paints_what_it_is_told_with_plain_diffusers_where_sdlab_cannot_be_imported(
        tmp_path, judge):
    folder, out = REGISTRY["mini_sd"].path, tmp_path / "images.pt"
    start = _scene()  # a large orange bear on the left, white background
    torch.save(start.images / 2 + 0.5, str(out) + ".start.pt")
    # a prompt that leaves the colour open: the colour the model picks most often goes in the negative prompt
    open_colours = sd.judge.predict(judge, sd.pipeline.paint(
        sd.pipeline.load_pipeline(), [OPEN] * 8, guidance_scale=3.0, generator=torch.Generator().manual_seed(0)))
    favourite = open_colours["colour"].mode().values.item()
    assert (open_colours["colour"] == favourite).double().mean() >= 6 / 8
    negative = f"a {sd.data.COLOURS[favourite]} cat"
    done = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS, str(folder), str(out), PROMPT, OTHER, OPEN, negative],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["StableDiffusionPipeline", "v_prediction", "trailing"]
    images = {k: v * 2 - 1 for k, v in torch.load(out).items()}
    read = {k: sd.judge.predict(judge, v) for k, v in images.items()}

    def share(key: str, caption: str, attributes=sd.judge.ATTRIBUTES) -> float:
        truth = _truth(TRUTH[caption])
        return torch.stack([read[key][a] == truth[a] for a in attributes]).all(0).double().mean().item()

    for key in ("ddim", "dpm++", "euler"):  # all five attributes right (8 pictures; 16 of 16 when measured)
        assert share(key, PROMPT) >= 6 / 8, key
    # the negative prompt pushes the pictures away from the favourite colour; the background stays
    assert (read["negative"]["colour"] == favourite).double().mean() <= 2 / 8
    assert share("negative", PROMPT, ("background", "position")) >= 6 / 8
    # image-to-image: at strength 0.3 the start's layout survives, at 1 the new prompt wins
    assert (read["img2img 0.3"]["position"] == start.position).double().mean() >= 6 / 8
    assert share("img2img 1.0", OTHER, ("colour", "background", "size", "position")) >= 6 / 8


@pytest.mark.parametrize("scheduler", sorted(sd.pipeline.SCHEDULERS))
@pytest.mark.parametrize("scale, negative", [(1.0, ""), (3.0, ""), (7.5, "a white dog")])
def test_the_readable_loop_paints_the_pipeline_s_picture(pipe, scheduler, scale, negative):
    swapped = sd.pipeline.swap_scheduler(pipe, scheduler)
    ours = sd.pipeline.paint(swapped, [PROMPT, OTHER], negative_prompt=negative, guidance_scale=scale,
                             num_inference_steps=6, generator=torch.Generator().manual_seed(3))
    theirs = swapped([PROMPT, OTHER], negative_prompt=[negative] * 2 if negative else None, guidance_scale=scale,
                     num_inference_steps=6, height=64, width=64, generator=torch.Generator().manual_seed(3),
                     output_type="pt").images
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-5, rtol=0)
    assert type(swapped.scheduler).__name__ == sd.pipeline.SCHEDULERS[scheduler]
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the original is untouched


@pytest.mark.parametrize("strength, negative", [(0.5, ""), (1.0, "a white dog")])
@pytest.mark.parametrize("scheduler", sorted(sd.pipeline.SCHEDULERS))
def test_the_readable_loop_paints_the_image_to_image_pipeline_s_picture(pipe, strength, negative, scheduler):
    swapped = sd.pipeline.swap_scheduler(pipe, scheduler)
    start = _scene().images
    ours = sd.pipeline.paint(swapped, [OTHER, PROMPT], image=start, strength=strength, guidance_scale=3.0,
                             negative_prompt=negative, num_inference_steps=8,
                             generator=torch.Generator().manual_seed(1))
    theirs = sd.pipeline.image_to_image(swapped)([OTHER, PROMPT], image=start / 2 + 0.5, strength=strength,
                                                 negative_prompt=[negative] * 2 if negative else None,
                                                 guidance_scale=3.0, num_inference_steps=8,
                                                 generator=torch.Generator().manual_seed(1), output_type="pt").images
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-5, rtol=0)


def test_chapter_6_s_parts_gathered_once_paint_what_the_pipeline_and_generate_paint(pipe):
    parts = sd.pipeline.Parts(unet=pipe.unet, text_encoder=pipe.text_encoder, vae=pipe.vae)
    assert type(parts.scheduler).__name__ == "DDIMSampler" and parts.tokenizer is sd.tokenizer.load_tokenizer()
    options = dict(negative_prompt="a white dog", guidance_scale=3.0, num_inference_steps=6)
    ours = sd.pipeline.paint(parts, [PROMPT, OTHER], generator=torch.Generator().manual_seed(2), **options)
    kept = sd.guidance.generate(pipe.unet, pipe.text_encoder, pipe.vae, [PROMPT, OTHER],
                                generator=torch.Generator().manual_seed(2), **options)
    theirs = pipe([PROMPT, OTHER], negative_prompt=[options.pop("negative_prompt")] * 2, height=64, width=64,
                  generator=torch.Generator().manual_seed(2), output_type="pt", **options).images
    assert torch.equal(ours, kept)
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-4, rtol=0)  # the course's DDIM vs diffusers'


def test_image_to_image_keeps_more_of_the_start_at_lower_strength(pipe):
    start = _scene().images
    distance = [(sd.pipeline.paint(pipe, OTHER, image=start, strength=s, guidance_scale=3.0, num_inference_steps=10,
                                   generator=torch.Generator().manual_seed(0)) - start).abs().mean().item()
                for s in (0.2, 0.6, 1.0)]
    assert distance[0] < distance[1] < distance[2]


def test_the_trajectory_holds_every_step_and_the_predicted_clean_latents(pipe):
    pictures, trajectory = sd.pipeline.paint(pipe, PROMPT, num_inference_steps=5, guidance_scale=2.0,
                                             generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert len(trajectory.timesteps) == 5 and trajectory.timesteps[0] == 999
    assert trajectory.timesteps == sorted(trajectory.timesteps, reverse=True)
    assert [x.shape for x in trajectory.pred_original_samples] == [(1, 4, 16, 16)] * 5
    assert len(trajectory.samples) == 6
    assert torch.equal(pictures, sd.pipeline.paint(pipe, PROMPT, num_inference_steps=5, guidance_scale=2.0,
                                                   generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        last = sd.vae.decode(pipe.vae, trajectory.samples[-1]).clamp(-1, 1)
    assert torch.equal(last, pictures)
    trajectory.samples[0].zero_()  # ordinary tensors, not inference-mode ones


def test_on_step_is_deprecated_and_still_sees_every_step(pipe):
    seen = []
    with pytest.warns(DeprecationWarning, match="return_trajectory"):
        sd.pipeline.paint(pipe, PROMPT, num_inference_steps=5, guidance_scale=2.0,
                          on_step=lambda i, t, out: seen.append((i, int(t), out.pred_original_sample.shape)))
    assert [s[0] for s in seen] == list(range(5)) and seen[0][1] == 999 and seen[-1][1] < seen[0][1]
    assert {s[2] for s in seen} == {(1, 4, 16, 16)}


def test_eta_reaches_ddim_s_step_and_a_scheduler_without_it_ignores_it_as_the_pipeline_does(pipe):
    settings = dict(guidance_scale=3.0, num_inference_steps=4)
    ours = sd.pipeline.paint(pipe, PROMPT, eta=0.7, generator=torch.Generator().manual_seed(0), **settings)
    theirs = pipe(PROMPT, eta=0.7, height=64, width=64, generator=torch.Generator().manual_seed(0),
                  output_type="pt", **settings).images
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-5, rtol=0)
    assert not torch.equal(ours, sd.pipeline.paint(pipe, PROMPT, generator=torch.Generator().manual_seed(0),
                                                   **settings))
    euler = sd.pipeline.swap_scheduler(pipe, "euler")
    assert torch.equal(*(sd.pipeline.paint(euler, PROMPT, eta=eta, generator=torch.Generator().manual_seed(0),
                                           **settings) for eta in (0.0, 0.7)))


def test_paint_is_repeatable_per_seed(pipe):
    first, again = (sd.pipeline.paint(pipe, PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(9))
                    for _ in range(2))
    other = sd.pipeline.paint(pipe, PROMPT, num_inference_steps=4, generator=torch.Generator().manual_seed(10))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (1, 3, 64, 64) and first.min() >= -1 and first.max() <= 1


@pytest.mark.parametrize("options, error, match", [
    ({"prompt": 3}, TypeError, "prompt must be a string"),
    ({"prompt": []}, TypeError, "prompt must be a string"),
    ({"guidance_scale": 0.5}, ValueError, "at least 1"),
    ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    ({"height": 62}, ValueError, "multiples of 4"),
    ({"image": "start", "strength": 0.0}, ValueError, "strength"),
    ({"image": "start", "strength": 1.5}, ValueError, "strength"),
    ({"image": "start", "strength": 0.01}, ValueError, "runs no step"),
    ({"image": torch.rand(1, 3, 62, 62)}, ValueError, "multiples of 4"),
    ({"image": torch.rand(1, 1, 64, 64)}, ValueError, r"\(3, H, W\)"),
    ({"image": torch.rand(1, 3, 64, 64) * 255}, ValueError, r"\[-1, 1\]"),
    ({"image": torch.zeros(2, 3, 64, 64)}, ValueError, "2 pictures for 1 prompts"),
])
def test_bad_input_gets_a_message_that_says_what_to_change(pipe, options, error, match):
    options = {"prompt": PROMPT, "num_inference_steps": 4, **options}
    if isinstance(options.get("image"), str):
        options["image"] = _scene().images
    with pytest.raises(error, match=match):
        sd.pipeline.paint(pipe, options.pop("prompt"), **options)


def test_a_pil_picture_can_start_image_to_image(pipe):
    picture = sd.images.to_pil(_scene().images[0])
    out = sd.pipeline.paint(pipe, OTHER, image=picture, strength=0.5, num_inference_steps=4)
    assert out.shape == (1, 3, 64, 64)


def test_an_unknown_scheduler_names_the_known_ones(pipe):
    with pytest.raises(ValueError, match="dpm"):
        sd.pipeline.swap_scheduler(pipe, "heun")


def test_trace_shows_that_text_to_image_never_encodes_or_adds_noise(pipe):
    rows = {row["part"]: row for row in sd.pipeline.trace(pipe, [PROMPT, OTHER], num_inference_steps=3)}
    assert list(rows) == [label for _, label in sd.pipeline.TRACED]
    assert rows["VAE encoder"]["calls"] == rows["forward diffusion (add_noise)"]["calls"] == 0
    assert rows["text encoder"] == {"part": "text encoder", "calls": 2, "input": (2, 77), "output": (2, 77, 128)}
    assert rows["U-Net"] == {"part": "U-Net", "calls": 3, "input": (4, 4, 16, 16), "output": (4, 4, 16, 16)}
    assert rows["scheduler step"]["calls"] == 3
    assert rows["VAE decoder"] == {"part": "VAE decoder", "calls": 1, "input": (2, 4, 16, 16), "output": (2, 3, 64, 64)}
    assert not pipe.unet._forward_hooks and "step" not in vars(pipe.scheduler)  # all undone


def test_trace_of_image_to_image_encodes_the_start_once_and_noises_it_once(pipe):
    rows = {row["part"]: row for row in sd.pipeline.trace(pipe, PROMPT, image=_scene().images, strength=0.5,
                                                          num_inference_steps=4, guidance_scale=1.0)}
    assert rows["VAE encoder"]["calls"] == rows["forward diffusion (add_noise)"]["calls"] == 1
    assert rows["VAE encoder"]["input"] == (1, 3, 64, 64)
    assert rows["U-Net"]["calls"] == 2 and rows["U-Net"]["input"] == (1, 4, 16, 16)  # scale 1: one branch
    assert rows["text encoder"]["calls"] == 1


def test_the_readable_loop_follows_any_diffusers_scheduler_such_as_real_stable_diffusion_s_pndm(pipe):
    from diffusers import PNDMScheduler

    swapped = sd.pipeline.swap_scheduler(pipe, "ddim")
    swapped.register_modules(scheduler=PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True))
    ours = sd.pipeline.paint(swapped, PROMPT, guidance_scale=3.0, num_inference_steps=6,
                             generator=torch.Generator().manual_seed(0))
    theirs = swapped(PROMPT, guidance_scale=3.0, num_inference_steps=6, height=64, width=64,
                     generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=1e-5, rtol=0)


def test_paint_names_the_words_the_course_s_model_never_saw(pipe):
    options = dict(guidance_scale=3.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    with pytest.warns(sd.pipeline.UnknownWordsWarning, match=r"never saw 'crimson', 'kitty', 'navy' in training"):
        sd.pipeline.paint(pipe, ["a crimson kitty", "a red cat"], negative_prompt="navy", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd.pipeline.paint(pipe, "Purple giraffe, tiny, to the left", **options)  # every word known: no warning
    assert sd.pipeline.is_course_model(pipe) and sd.pipeline.unknown_words(pipe, "a scarlet puppy") == [
        "scarlet", "puppy"]


def test_a_pipeline_that_is_not_the_course_s_is_never_warned_about_words(pipe):
    other = copy.copy(pipe)
    other.register_to_config(_name_or_path="runwayml/stable-diffusion-v1-5")
    assert not sd.pipeline.is_course_model(other) and sd.pipeline.unknown_words(other, "a crimson kitty") == []


def test_the_prompt_box_shows_a_warning_above_the_pictures():
    def render(text):
        warnings.warn(f"never saw {text!r}", sd.pipeline.UnknownWordsWarning, stacklevel=2)
        return "<img>"

    assert sd.widgets.prompt_box(render, "kitty").rendered("kitty") == "<p><strong>Note:</strong> never saw 'kitty'</p><img>"
    assert sd.widgets.prompt_box(lambda text: "<img>", "cat").rendered("cat") == "<img>"
