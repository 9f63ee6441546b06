"""sdlab.text_unet and sdlab.guidance: the text-conditioned U-Net of chapter 6, its data, loss and guidance."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DConditionModel

import sdlab as sd
from sdlab.random import seeded_global_rng


def tiny_unet(width=16):
    with seeded_global_rng(0):
        return sd.text_unet.make_text_unet(cross_attention_dim=width, block_out_channels=(16, 16),
                                           attention_head_dim=8).eval()


def tiny_text_encoder(width=16):
    from transformers import CLIPTextConfig, CLIPTextModel

    with seeded_global_rng(0):
        return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width,
                                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)).eval()


def tiny_vae():
    with seeded_global_rng(0):
        return sd.vae.make_vae(4, block_out_channels=(8, 8, 8)).eval()


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_the_course_configuration_is_stable_diffusion_s_layout_made_small():
    unet = sd.text_unet.make_text_unet()
    assert isinstance(unet, UNet2DConditionModel)
    assert unet.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    assert unet.config.cross_attention_dim == 128 and unet.config.in_channels == unet.config.out_channels == 4
    states = torch.randn(2, 77, 128, generator=g())
    with torch.no_grad():
        out = unet(torch.randn(2, 4, 16, 16, generator=g()), torch.tensor([10, 500]), encoder_hidden_states=states)
    assert out.sample.shape == (2, 4, 16, 16)


def test_attention_can_skip_the_full_resolution_level():
    unet = sd.text_unet.make_text_unet(attention=(False, True, True))
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match=r"one True/False per level \(3\)"):
        sd.text_unet.make_text_unet(attention=(True, True))


def test_mismatched_token_states_get_a_message_that_says_what_to_change():
    unet = tiny_unet(16)
    with pytest.raises(ValueError, match=r"32 wide but .* reads 16-wide .* make_text_unet\(cross_attention_dim=32\)"):
        sd.text_unet.check_text_states(unet, torch.zeros(1, 77, 32))
    with pytest.raises(ValueError, match=r"token states \(B, tokens, 16\); got \(77, 16\)"):
        sd.text_unet.check_text_states(unet, torch.zeros(77, 16))
    with pytest.raises(ValueError, match="32 wide"):
        sd.guidance.guided_noise(unet, torch.zeros(1, 4, 8, 8), 5, cond_states=torch.zeros(1, 77, 32),
                                 uncond_states=torch.zeros(1, 77, 32), guidance_scale=3)


def test_the_guidance_formula():
    u, c = torch.randn(2, 4, 3, 3, generator=g(1)), torch.randn(2, 4, 3, 3, generator=g(2))
    cfg = sd.guidance.classifier_free_guidance
    assert torch.allclose(cfg(u, c, 1), c, atol=1e-6)
    assert torch.allclose(cfg(u, c, 7.5), u + 7.5 * (c - u))
    assert torch.allclose(cfg(u, c, 3) - c, 2 * (c - u))  # past the conditional, away from the unconditional
    with pytest.raises(ValueError, match="differ in shape"):
        cfg(u, c[:1], 2)


@pytest.mark.parametrize("scale, match", [(0, "at least 1"), (0.5, "at least 1"), (-1, "guidance_scale"),
                                          (31, "guidance_scale"), (float("nan"), "guidance_scale"),
                                          (True, "guidance_scale"), ("7", "guidance_scale")])
def test_out_of_range_scales_are_refused(scale, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sd.guidance.check_guidance_scale(scale)


def test_the_batched_pass_equals_two_separate_calls():
    unet = tiny_unet()
    x = torch.randn(3, 4, 8, 8, generator=g(3))
    cond, uncond = torch.randn(3, 77, 16, generator=g(4)), torch.randn(1, 77, 16, generator=g(5))
    t = torch.tensor([3, 400, 999])
    with torch.no_grad():
        guided = sd.guidance.guided_noise(unet, x, t, cond_states=cond, uncond_states=uncond, guidance_scale=5)
        e_cond = unet(x, t, encoder_hidden_states=cond).sample
        e_uncond = unet(x, t, encoder_hidden_states=uncond.expand(3, -1, -1)).sample
        assert torch.allclose(guided, e_uncond + 5 * (e_cond - e_uncond), atol=1e-5)
        alone = sd.guidance.guided_noise(unet, x, t, cond_states=cond, uncond_states=uncond, guidance_scale=1)
        assert torch.allclose(alone, e_cond, atol=1e-6)
        one_t = sd.guidance.guided_noise(unet, x, 400, cond_states=cond, uncond_states=uncond, guidance_scale=2)
        e400 = [unet(x, 400, encoder_hidden_states=s).sample for s in (uncond.expand(3, -1, -1), cond)]
        assert torch.allclose(one_t, e400[0] + 2 * (e400[1] - e400[0]), atol=1e-5)


def test_encode_scenes_keeps_latents_captions_and_labels_together():
    vae = tiny_vae()
    data = sd.text_unet.encode_scenes(vae, 7, generator=g(), batch_size=3, progress=False)
    assert len(data) == 7 and data.latents.shape == (7, 4, 16, 16) and data.latents.dtype == torch.float16
    assert data.input_ids.shape == (7, 77) and len(data.captions) == 7
    assert torch.equal(data.input_ids[2].long(), sd.tokenizer.tokenize(data.captions[2])["input_ids"][0])
    pairs = set(zip(data.labels["animal"].tolist(), data.labels["colour"].tolist()))
    held = {(sd.data.ANIMALS.index(a), sd.data.COLOURS.index(c)) for a, c in sd.data.HELD_OUT}
    assert not pairs & held  # the combinations chapter 6 tests on are never trained on
    again = sd.text_unet.encode_scenes(vae, 7, generator=g(), batch_size=3, progress=False)
    assert torch.equal(again.latents, data.latents) and again.captions == data.captions
    latents, ids = data.batch(5, g(1))
    assert latents.shape == (5, 4, 16, 16) and latents.dtype == torch.float32 and ids.shape == (5, 77)


def test_caption_dropout_replaces_captions_by_the_encoded_empty_prompt(monkeypatch):
    unet, text = tiny_unet(), tiny_text_encoder()
    schedule = sd.NoiseSchedule("scaled_linear")
    latents = torch.randn(6, 4, 8, 8, generator=g())
    ids = sd.tokenizer.tokenize(["a red cat"] * 6)["input_ids"]
    seen = []
    real = sd.text_unet.encode_prompts
    monkeypatch.setattr(sd.text_unet, "encode_prompts", lambda enc, p: seen.append(p) or real(enc, p))
    loss = sd.text_unet.text_unet_loss(unet, (latents, ids), g(), schedule=schedule, text_encoder=text,
                                       caption_dropout=1.0)
    empty = sd.tokenizer.tokenize([""])["input_ids"]
    assert torch.equal(seen[-1], empty.expand(6, -1)) and math.isfinite(loss.item())
    sd.text_unet.text_unet_loss(unet, (latents, ids), g(), schedule=schedule, text_encoder=text,
                                caption_dropout=0.0)
    assert torch.equal(seen[-1], ids)
    sd.text_unet.text_unet_loss(unet, (latents, ids), g(7), schedule=schedule, text_encoder=text,
                                caption_dropout=0.5)
    dropped = (seen[-1] == empty).all(1)
    assert 0 < int(dropped.sum()) < 6
    a = sd.text_unet.text_unet_loss(unet, (latents, ids), g(7), schedule=schedule, text_encoder=text)
    b = sd.text_unet.text_unet_loss(unet, (latents, ids), g(7), schedule=schedule, text_encoder=text)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="caption_dropout"):
        sd.text_unet.text_unet_loss(unet, (latents, ids), g(), schedule=schedule, text_encoder=text,
                                    caption_dropout=1.5)


def test_encode_prompts_matches_the_text_encoder_without_a_mask():
    text = tiny_text_encoder()
    ids = sd.tokenizer.tokenize(["a red cat", ""])["input_ids"]
    with torch.no_grad():
        expected = text(input_ids=ids).last_hidden_state
    assert torch.equal(sd.text_unet.encode_prompts(text, ["a red cat", ""]), expected)
    assert torch.equal(sd.text_unet.encode_prompts(text, ids), expected)


def test_generate_makes_repeatable_pictures_and_guidance_changes_them():
    unet, text, vae = tiny_unet(), tiny_text_encoder(), tiny_vae()
    prompts = ["a red cat", "a blue dog"]
    make = lambda **kw: sd.guidance.generate(unet, text, vae, prompts, num_inference_steps=3,  # noqa: E731
                                             generator=g(1), **kw)
    a, b = make(guidance_scale=3), make(guidance_scale=3)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.allclose(make(guidance_scale=1), a)
    assert not torch.allclose(make(guidance_scale=3, negative_prompt="a green bird"), a)
    with pytest.raises(ValueError, match="at least 1"):
        make(guidance_scale=0.5)


def test_adherence_judges_the_pictures_against_the_captions(monkeypatch):
    unet, text, vae = tiny_unet(), tiny_text_encoder(), tiny_vae()
    judge = sd.judge.AttributeJudge(width=8).eval()
    scenes = sd.data.make_scenes(5, **sd.data.SCENES, generator=g(2))
    result = sd.guidance.adherence(unet, text, vae, judge, scenes, guidance_scale=2, batch_size=2,
                                   num_inference_steps=2, generator=g(0))
    assert set(result) == set(sd.judge.ATTRIBUTES) | {"all"} and all(0 <= v <= 1 for v in result.values())
    # a "generator" that paints exactly what each caption says scores what the judge scores on real scenes
    by_caption = dict(zip(scenes.captions, scenes.images))
    asked = []
    monkeypatch.setattr(sd.guidance, "generate", lambda u, t, v, prompts, **kw: asked.append(
        (len(prompts), kw["guidance_scale"])) or torch.stack([by_caption[p] for p in prompts]))
    perfect = sd.guidance.adherence(unet, text, vae, judge, scenes, guidance_scale=4, batch_size=2)
    assert perfect == sd.judge.judge_accuracy(judge, scenes) and asked == [(2, 4), (2, 4), (1, 4)]


def test_diversity_is_the_mean_distance_within_each_prompt():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0]])  # prompt 0: distance 5; prompt 1: 0
    assert sd.guidance.diversity(features, 2) == pytest.approx(2.5)
    three = torch.tensor([[0.0], [1.0], [3.0]])  # pairs 1, 3, 2
    assert sd.guidance.diversity(three, 3) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"\(n · 2, D\)"):
        sd.guidance.diversity(torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="per_prompt"):
        sd.guidance.diversity(torch.zeros(4, 2), 1)


def test_judge_features_are_the_pooled_last_map():
    judge = sd.judge.AttributeJudge(width=8).eval()
    images = sd.data.make_scenes(3, **sd.data.SCENES, generator=g(4)).images
    f = sd.judge.features(judge, images, batch_size=2)
    assert f.shape == (3, 32)
    with torch.no_grad():
        torch.testing.assert_close(f, judge.convs[:-2](images).mean((2, 3)))


def test_guidance_sweep_reports_every_scale_with_the_same_starting_noise(monkeypatch):
    unet, text, vae = tiny_unet(), tiny_text_encoder(), tiny_vae()
    judge = sd.judge.AttributeJudge(width=8).eval()
    scenes = sd.data.make_scenes(3, **sd.data.SCENES, generator=g(2))
    reference = sd.data.make_scenes(6, **sd.data.SCENES, generator=g(3))
    calls = []
    real_generate = sd.guidance.generate

    def spy(u, t, v, prompts, **kw):
        calls.append((list(prompts), kw["guidance_scale"], kw["generator"].initial_seed()))
        return real_generate(u, t, v, prompts, **kw)

    monkeypatch.setattr(sd.guidance, "generate", spy)
    rows = sd.guidance.guidance_sweep(unet, text, vae, judge, scenes, scales=["uncond", 1, 3], reference=reference,
                                      per_prompt=2, seed=5, num_inference_steps=2, progress=False)
    assert [r["scale"] for r in rows] == ["uncond", 1, 3]
    for r in rows:
        assert set(r) == {"scale", *sd.judge.ATTRIBUTES, "all", "diversity", "frechet"}
        assert r["diversity"] > 0 and r["frechet"] >= 0
    repeated = [c for c in scenes.captions for _ in range(2)]
    assert calls == [([""] * 6, 1.0, 5), (repeated, 1, 5), (repeated, 3, 5)]


def test_the_latent_sampler_starts_from_pure_noise_and_does_not_clip():
    sampler = sd.text_unet.latent_sampler()
    sampler.set_timesteps(20)
    assert int(sampler.timesteps[0]) == 999 and sampler.alphas_cumprod[999] < 1e-8
    assert sampler.config["clip_sample"] is False and sampler.config["prediction_type"] == "v_prediction"
    assert sd.text_unet.latent_sampler("scaled_linear", "epsilon", eta=1.0).config["eta"] == 1.0


@pytest.mark.parametrize("scale, negative", [(1.0, ""), (3.0, ""), (7.5, "a green bird")])
def test_generate_agrees_with_diffusers_stable_diffusion_pipeline(scale, negative):
    from diffusers import StableDiffusionPipeline

    unet, text, vae = tiny_unet(), tiny_text_encoder(), tiny_vae()
    sampler = sd.text_unet.latent_sampler()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=sd.tokenizer.load_tokenizer(), unet=unet,
                                   scheduler=sd.pipeline.make_scheduler(sampler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red cat on the left", "a large blue dog"]
    ours = sd.guidance.generate(unet, text, vae, prompts, guidance_scale=scale, negative_prompt=negative,
                                num_inference_steps=4, sampler=sampler, generator=g(3))
    theirs = pipe(prompts, negative_prompt=[negative] * 2 if negative else None, guidance_scale=scale, height=64,
                  width=64, num_inference_steps=4, generator=g(3), output_type="pt").images
    torch.testing.assert_close(ours / 2 + 0.5, theirs, atol=2e-4, rtol=0)
