"""The weights shipped in sdlab/weights/: each described once in the registry, loadable, and trained."""

import pytest
import torch

import sdlab as sd
from sdlab.pretrained import REGISTRY, ClassifierRecipe, DiffusionRecipe, load_pretrained
from sdlab.train import diffusion_loss

UNETS = sorted(name for name, entry in REGISTRY.items() if isinstance(entry.recipe, DiffusionRecipe))


def test_every_shipped_file_is_in_the_registry_and_every_entry_has_its_file():
    shipped = {p.name for p in sd.checkpoints.WEIGHTS_DIR.iterdir() if not p.name.startswith(".")}
    expected = {entry.path.name for entry in REGISTRY.values()}
    assert shipped == expected
    assert len(UNETS) >= 2 and "catdog_classifier" in REGISTRY


@pytest.mark.parametrize("name", UNETS)
def test_shipped_unets_load_with_their_training_record(name):
    model, info = load_pretrained(name)
    recipe = REGISTRY[name].recipe
    assert isinstance(model, sd.UNet) and model.config == recipe.unet  # the file is what the recipe makes
    assert info["steps"] == recipe.steps and info["schedule"] == recipe.schedule
    assert info["batch_size"] == recipe.batch_size
    assert len(info["losses"]) == info["steps"] // 10  # every 10th step's loss
    assert info.get("weights", "final") == recipe.weights  # scenes32 predates the field: its final weights
    assert next(model.parameters()).dtype == torch.float32  # stored in float16, loaded for use in float32
    assert not model.training


@pytest.mark.parametrize("name", UNETS)
def test_shipped_unets_predict_the_noise(name):
    # An untrained network scores about 1 (the variance of the noise); the shipped ones far less, on
    # held-out silhouettes too. Fixed timesteps across the range keep the number steady.
    model, info = load_pretrained(name)
    schedule = sd.NoiseSchedule(info["schedule"])
    g = torch.Generator().manual_seed(0)
    x0 = REGISTRY[name].recipe.data(64, g)
    t = torch.linspace(0, schedule.num_train_timesteps - 1, 64).long()
    with torch.no_grad():
        trained = diffusion_loss(model, schedule, x0, generator=g, t=t).item()
        untrained = diffusion_loss(sd.UNet(model.config), schedule, x0, generator=g, t=t).item()
    assert trained < 0.1 < 0.5 < untrained, (trained, untrained)


def test_shipped_classifier_loads_with_its_record():
    classifier, info = load_pretrained("catdog_classifier")
    recipe = REGISTRY["catdog_classifier"].recipe
    assert isinstance(recipe, ClassifierRecipe) and isinstance(classifier, sd.evaluate.CatDogClassifier)
    assert info["steps"] == recipe.steps and info["batch_size"] == recipe.batch_size
    assert info["test_accuracy"] >= 0.97
    images, labels = sd.evaluate.real_images(split="test")
    assert abs(sd.evaluate.accuracy(classifier, images, labels) - info["test_accuracy"]) < 1e-3


def test_shipped_miniclip_loads_with_its_record_and_matches_pictures_with_words():
    model, info = load_pretrained("miniclip")
    recipe = REGISTRY["miniclip"].recipe
    assert isinstance(model, sd.clip.MiniCLIP) and not model.training
    assert info["steps"] == recipe.steps and info["batch_size"] == recipe.batch_size
    assert len(info["losses"]) == info["steps"] and info["scenes"] == sd.clip.SCENES
    # Chapter 4's own measurement (1 000 held-out scenes of unseen animal-colour pairs, the same seed) and
    # issue 9's goal: zero-shot >= 95 % on animal and colour.
    test = sd.data.make_scenes(1000, **sd.clip.SCENES, split="test", held_out="only",
                               generator=torch.Generator().manual_seed(1))
    accuracy = sd.clip.zero_shot_accuracy(model, test, ("animal", "colour"))
    assert accuracy["colour"] >= 0.95 and accuracy["animal"] >= 0.95, accuracy


def test_shipped_judge_names_each_attribute_of_clean_held_out_scenes():
    judge, info = load_pretrained("judge")
    assert isinstance(judge, sd.judge.AttributeJudge) and info["scenes"] == sd.data.SCENES
    assert all(v >= 0.98 for k, v in info["test_accuracy"].items() if k != "all"), info["test_accuracy"]
    # The record is re-measured here on the same 2 000 held-out scenes ("test" silhouettes, every pair).
    test = sd.data.make_scenes(info["test_scenes"], held_out="include", split="test", **sd.data.SCENES,
                               generator=torch.Generator().manual_seed(12345))
    measured = sd.judge.judge_accuracy(judge, test)
    assert all(abs(measured[k] - v) < 2e-3 for k, v in info["test_accuracy"].items()), (measured, info)


@pytest.mark.parametrize("name", ["vae_f4", "vae_f8"])
def test_shipped_autoencoders_load_with_diffusers_and_reach_their_recorded_quality(name):
    from diffusers import AutoencoderKL

    vae, info = load_pretrained(name)
    assert isinstance(vae, AutoencoderKL) and sd.vae.downsampling_factor(vae) == REGISTRY[name].recipe.factor
    assert vae.config.scaling_factor == pytest.approx(info["scaling_factor"], rel=1e-4)
    assert info["scenes"] == sd.data.SCENES
    judge = load_pretrained("judge")[0]
    measured = sd.vae.evaluate_vae(vae, judge=judge)  # the same 500 held-out scenes as the record
    assert measured["psnr_db"] == pytest.approx(info["psnr_db"], abs=0.05)
    assert all(abs(measured["agreement"][k] - v) <= 0.004 for k, v in info["agreement"].items())
    if name == "vae_f4":  # the chapter's goals (issue 10): 28 dB, and every attribute survives 98 % of round trips
        assert info["psnr_db"] >= 28 and min(info["agreement"].values()) >= 0.98, info



def test_the_shipped_text_unet_loads_with_plain_diffusers_where_sdlab_cannot_be_imported(tmp_path):
    import json
    import subprocess
    import sys

    folder = REGISTRY["text_unet"].path
    script = f"""
import sys
sys.modules["sdlab"] = None  # any import of sdlab now fails
import torch
from diffusers import UNet2DConditionModel
unet = UNet2DConditionModel.from_pretrained({str(folder)!r}, low_cpu_mem_usage=False).eval()
c = unet.config
x = torch.zeros(2, c.in_channels, c.sample_size, c.sample_size)
states = torch.zeros(2, 77, c.cross_attention_dim)
with torch.no_grad():
    out = unet(x, torch.tensor([10, 900]), encoder_hidden_states=states).sample
print(tuple(out.shape), c.cross_attention_dim)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "128" and "(2, 4, 16, 16)" in done.stdout
    info = json.loads((folder / "sdlab_record.json").read_text())
    recipe = REGISTRY["text_unet"].recipe
    assert info["steps"] == recipe.steps and info["schedule"] == recipe.schedule and info["weights"] == "ema"
    assert info["prediction_type"] == recipe.prediction_type
    assert tuple(info["recipe"]["block_out_channels"]) == recipe.block_out_channels == unet_channels(folder)


def unet_channels(folder):
    import json

    return tuple(json.loads((folder / "config.json").read_text())["block_out_channels"])


def test_the_shipped_text_unet_reads_mini_clip_s_token_states():
    unet, record = load_pretrained("text_unet")
    text = load_pretrained("miniclip")[0].text_model
    states = sd.text_unet.encode_prompts(text, ["a small red cat on the left, blue background"])
    sd.text_unet.check_text_states(unet, states)  # the widths match
    assert unet.config.cross_attention_dim == text.config.hidden_size == 128
    # ... and they are the very states it learnt to read: mini-CLIP's text tower has not moved since
    pipeline = load_pretrained("mini_sd")[0].text_encoder
    assert sd.clip.fingerprint(text) == sd.clip.fingerprint(pipeline) == record["text_encoder_sha256"]


@pytest.fixture(scope="module")
def painter():
    """The shipped text U-Net with its text tower, autoencoder and judge, and the DDIM sampler it was trained for."""
    unet, record = load_pretrained("text_unet")
    text = load_pretrained("miniclip")[0].text_model.float().eval()
    vae, judge = load_pretrained("vae_f4")[0], load_pretrained("judge")[0]
    sampler = sd.text_unet.record_sampler(record)
    return dict(unet=unet.eval(), text_encoder=text, vae=vae.eval(), judge=judge.eval()), sampler, record


def test_the_shipped_text_unet_follows_prompts_it_never_saw(painter):
    # Issue 11's bar is 90 % on animal and colour; the shipped model meets it for colour (and background, size,
    # position) but not for the animal (65 % at s = 2, scripts/eval_text_unet.py). These floors, below what it
    # reaches on 40 held-out prompts, catch a model that stops following its prompts.
    scenes = sd.data.make_scenes(40, **sd.data.SCENES, split="test", held_out="only",
                                 generator=torch.Generator().manual_seed(5))
    parts, sampler, _ = painter
    result = sd.guidance.adherence(*parts.values(), scenes, guidance_scale=3.0,
                                   sampler=sampler, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    floors = {"animal": 0.4, "colour": 0.85, "background": 0.9, "size": 0.9, "position": 0.9}
    assert all(result[k] >= v for k, v in floors.items()), result


def test_the_shipped_text_unet_follows_short_prompts_by_meaning_not_word_position(painter):
    # Issue 25: the first U-Net painted "red cat on blue" and "red cat" with both colours on the background
    # (colour right 0 % and 2.5 % of 200 held-out scenes, scripts/eval_wordings.py); the shipped one gets
    # 68 % and 65 %. These floors, well below that on 20 scenes, catch a model that keys on word position again.
    scenes = sd.data.make_scenes(20, **sd.data.SCENES, split="test", held_out="only",
                                 generator=torch.Generator().manual_seed(6))
    families = [f for f in sd.captions.FAMILIES if f.name in ("on colour", "two words", "animal only")]
    parts, sampler, record = painter
    rows = sd.guidance.wording_adherence(*parts.values(), scenes, families=families,
                                         sampler=sampler, num_inference_steps=20, progress=False)
    assert rows["on colour"]["colour"] >= 0.4 and rows["on colour"]["background"] >= 0.35, rows
    assert rows["two words"]["colour"] >= 0.4 and rows["animal only"]["animal"] >= 0.3, rows
    assert set(record["wordings"]["adherence"]) == {f.name for f in sd.captions.FAMILIES}
