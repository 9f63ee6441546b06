"""sdlab.vae: chapter 5's AutoencoderKL, its latents, its loss and its scaling factor."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

import sdlab as sd
from sdlab.random import seeded_global_rng


def tiny(factor=4):
    with seeded_global_rng(0):
        return sd.vae.make_vae(factor, block_out_channels=(8,) * (int(math.log2(factor)) + 1)).eval()


def scenes(n=4, seed=0):
    return sd.data.make_scenes(n, **sd.data.SCENES, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("factor, side", [(4, 16), (8, 8)])
def test_latents_have_four_channels_and_the_factor_s_size(factor, side):
    vae = tiny(factor)
    x = scenes(3).images
    z = sd.vae.encode(vae, x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 4, side, side) and sd.vae.latent_shape(vae) == (4, side, side)
    assert sd.vae.downsampling_factor(vae) == factor
    assert sd.vae.decode(vae, z).shape == x.shape
    assert 3 * 64 * 64 / z[0].numel() == {4: 12, 8: 48}[factor]


def test_the_course_configurations_are_autoencoderkl_without_mid_attention():
    for factor in sd.vae.FACTORS:
        vae = sd.vae.make_vae(factor)
        assert isinstance(vae, AutoencoderKL) and not vae.config.mid_block_add_attention
        assert vae.config.latent_channels == 4
    with pytest.raises(ValueError, match="needs 3 blocks"):
        sd.vae.make_vae(4, block_out_channels=(8, 8))
    with pytest.raises(ValueError, match="factor"):
        sd.vae.make_vae(2)


def test_encoding_is_repeatable_with_a_generator_and_mean_is_deterministic():
    vae, x = tiny(), scenes().images
    a = sd.vae.encode(vae, x, generator=torch.Generator().manual_seed(1))
    b = sd.vae.encode(vae, x, generator=torch.Generator().manual_seed(1))
    c = sd.vae.encode(vae, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    mean = sd.vae.encode(vae, x, sample=False)
    assert torch.equal(mean, sd.vae.encode(vae, x, sample=False))
    expected = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(mean, expected)


def test_encode_and_decode_use_the_scaling_factor():
    vae, x = tiny(), scenes().images
    z1 = sd.vae.encode(vae, x, sample=False)
    decoded = sd.vae.decode(vae, z1)
    sd.vae.set_scaling_factor(vae, 0.25)
    z2 = sd.vae.encode(vae, x, sample=False)
    torch.testing.assert_close(z2, z1 * 0.25)
    torch.testing.assert_close(sd.vae.decode(vae, z2), decoded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sd.vae.decode(vae, z2), vae.decode(z2 / 0.25).sample, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError):
        sd.vae.set_scaling_factor(vae, 0.0)


def test_the_scaling_factor_from_data_gives_latents_of_unit_variance():
    vae, x = tiny(), scenes(16).images
    scale = sd.vae.scaling_factor_from_data(vae, x, generator=torch.Generator().manual_seed(0))
    sd.vae.set_scaling_factor(vae, scale)
    z = sd.vae.encode(vae, x, generator=torch.Generator().manual_seed(0))
    assert z.std().item() == pytest.approx(1.0, abs=1e-4)
    assert vae.config.scaling_factor == pytest.approx(scale)


def test_save_and_load_keep_weights_and_scaling_factor(tmp_path):
    vae, x = tiny(), scenes(2).images
    sd.vae.set_scaling_factor(vae, 0.731)
    vae.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AutoencoderKL.from_pretrained(tmp_path, local_files_only=True).eval()
    assert loaded.config.scaling_factor == pytest.approx(0.731)
    z = sd.vae.encode(vae, x, sample=False)
    torch.testing.assert_close(sd.vae.encode(loaded, x, sample=False), z)
    torch.testing.assert_close(sd.vae.decode(loaded, z), sd.vae.decode(vae, z))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 3, 62, 62), "multiples of the VAE's factor 4"),
    (torch.zeros(2, 1, 64, 64), r"shape \(B, 3, H, W\)"),
    (torch.zeros(2, 64, 64, 3), "channels last"),
    (torch.zeros(3, 64, 64), r"shape \(B, 3, H, W\)"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "floating point"),
    (torch.full((2, 3, 64, 64), 200.0), r"in \[-1, 1\]"),
])
def test_wrong_images_are_refused_clearly(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sd.vae.encode(tiny(), bad)


def test_wrong_latents_are_refused_clearly():
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        sd.vae.decode(tiny(), torch.zeros(1, 3, 16, 16))


def test_kl_and_reparameterisation_agree_with_diffusers():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    theirs = DiagonalGaussianDistribution(torch.cat([mean, logvar], 1))
    torch.testing.assert_close(sd.vae.kl_divergence(mean, logvar), theirs.kl())
    noise = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(sd.vae.reparameterise(mean, logvar, noise),
                               theirs.sample(generator=torch.Generator().manual_seed(5)))
    assert torch.equal(sd.vae.kl_divergence(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)), torch.zeros(2))


def test_the_loss_is_reconstruction_plus_a_small_kl_and_trains():
    vae, x = tiny(), scenes(4).images
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with_kl = sd.vae.vae_loss(vae, x, g(), kl_weight=1.0)
    without = sd.vae.vae_loss(vae, x, g(), kl_weight=0.0)
    mean, logvar = sd.vae.encode_distribution(vae, x)
    kl = sd.vae.kl_divergence(mean, logvar).mean() / x[0].numel()
    torch.testing.assert_close(with_kl - without, kl, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        sd.vae.vae_loss(vae, x, g(), kl_weight=-1)
    config = sd.train.TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=1, ema_decay=0.0)
    result = sd.train.fit(tiny().train(), sd.vae.vae_loss, sd.vae.vae_batch, config=config, progress=False)
    assert sum(result.losses[-10:]) < 0.9 * sum(result.losses[:10])


def test_training_crops_are_squares_of_scenes():
    crops = sd.vae.vae_batch(6, torch.Generator().manual_seed(0), crop=24)
    assert crops.shape == (6, 3, 24, 24) and crops.min() >= -1 and crops.max() <= 1
    whole = sd.vae.vae_batch(2, torch.Generator().manual_seed(0), crop=64)
    assert whole.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError):
        sd.vae.vae_batch(2, torch.Generator(), crop=65)


def test_psnr_of_known_errors():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.02  # mse 4e-4: 10 log10(4 / 4e-4) = 40 dB
    y[1] += 0.2  # 20 dB
    torch.testing.assert_close(sd.vae.psnr(y, x), torch.tensor([40.0, 20.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        sd.vae.psnr(x, x[:1])


def test_interpolation_runs_from_one_scene_to_the_other():
    vae = tiny()
    x = scenes(2).images
    through_latents, through_pixels = sd.vae.interpolate(vae, x[0], x[1], steps=5)
    assert through_latents.shape == through_pixels.shape == (5, 3, 64, 64)
    assert torch.allclose(through_pixels[0], x[0]) and torch.allclose(through_pixels[-1], x[1])
    assert torch.allclose(through_pixels[2], (x[0] + x[1]) / 2)
    ends = sd.vae.decode(vae, sd.vae.encode(vae, x, sample=False)).clamp(-1, 1)
    assert torch.allclose(through_latents[[0, -1]], ends, atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        sd.vae.interpolate(vae, x[:1], x[1])
    with pytest.raises(ValueError, match="steps"):
        sd.vae.interpolate(vae, x[0], x[1], steps=1)


def test_prior_samples_are_repeatable_images():
    vae = tiny()
    a = sd.vae.prior_samples(vae, 3, generator=torch.Generator().manual_seed(1))
    b = sd.vae.prior_samples(vae, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b) and a.abs().max() <= 1


def test_latent_diffusion_cost_measures_each_space_with_the_same_network():
    rows = sd.vae.latent_diffusion_cost({"f4": tiny(4), "f8": tiny(8)}, batch_size=2, sampling_steps=10,
                                        repeats=1, base_channels=8)
    assert [r["space"] for r in rows] == ["pixels", "f4", "f8"]
    assert [r["shape"] for r in rows] == [(3, 64, 64), (4, 16, 16), (4, 8, 8)]
    assert [r["numbers"] for r in rows] == [12288, 1024, 256]
    # the same width: only the first and last convolutions differ (3 vs 4 channels)
    assert abs(rows[0]["parameters"] - rows[1]["parameters"]) < 200 and rows[1]["parameters"] == rows[2]["parameters"]
    assert rows[0]["decode_s"] == 0 and all(r["decode_s"] > 0 for r in rows[1:])
    for r in rows:
        assert r["train_step_s"] > 0 and r["forward_s"] > 0
        assert r["sampling_s"] == pytest.approx(10 * r["forward_s"] + r["decode_s"])
    # activations scale with the numbers per image: 12x fewer at f4 should keep far less for backward
    assert rows[0]["activation_mb"] > 5 * rows[1]["activation_mb"] > 5 * rows[2]["activation_mb"]


def test_taesd_shaped_models_encode_and_decode_through_the_same_helpers():
    from diffusers import AutoencoderTiny

    with seeded_global_rng(0):
        taesd = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).eval()
    x = scenes(2).images
    with torch.no_grad():
        z = sd.vae.encode(taesd, x)
        assert z.shape == (2, 4, 8, 8) and torch.equal(z, sd.vae.encode(taesd, x))
        assert sd.vae.decode(taesd, z).shape == x.shape


def test_real_vae_fails_fast_offline(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match=r"HF_HUB_OFFLINE is set.*vae_f4"):
        sd.hub.load_real_vae()
    assert time.perf_counter() - start < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # refused at once
    start = time.perf_counter()
    with pytest.raises(sd.hub.HubUnavailable, match="sd-vae-ft-mse.*did not answer"):
        sd.hub.load_real_vae("sd", timeout=2.0)
    with pytest.raises(sd.hub.HubUnavailable, match="taesd"):
        sd.hub.load_real_vae("taesd", timeout=2.0)
    assert time.perf_counter() - start < 5
