"""Tests for sdlab.unet: shapes, conditioning, equations, receptive field, errors, diffusers drop-in."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from sdlab.unet import (
    Attention,
    GroupNorm32,
    ResBlock,
    UNet,
    UNetConfig,
    count_parameters,
    describe,
    predict_noise,
    receptive_field,
    timestep_embedding,
)

TINY = dict(base_channels=8, channel_mults=(1, 2), num_groups=4, num_heads=2, sample_size=8, attention_levels=(1,))


def make_model(seed: int = 0, **overrides) -> UNet:
    """A tiny UNet whose zero-initialised output conv is randomised, so every path shows in the output."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(**{**TINY, **overrides}))
    nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


def inputs(config: UNetConfig, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=g)
    return x, torch.randint(0, 1000, (batch,), generator=g)


# ---------------------------------------------------------------- shapes, determinism, t handling


@pytest.mark.parametrize("overrides", [
    {},
    dict(in_channels=4, out_channels=8),
    dict(channel_mults=(1, 2, 2), sample_size=16, attention_levels=(0, 2), num_res_blocks=2),
    dict(channel_mults=(1,), attention_levels=()),
    dict(time_conditioning="shift", dropout=0.1),
    dict(num_classes=5, context_dim=6),
])
def test_output_shape(overrides):
    model = make_model(**overrides)
    c = model.config
    x, t = inputs(c, batch=3)
    cond = {}
    if c.num_classes:
        cond["class_labels"] = torch.tensor([0, 4, c.num_classes])
    if c.context_dim:
        cond["encoder_hidden_states"] = torch.randn(3, 7, c.context_dim)
    out = model(x, t, **cond)
    assert out.shape == (3, c.out_channels, c.sample_size, c.sample_size)
    assert out.dtype == x.dtype and torch.isfinite(out).all()


def test_untrained_model_predicts_zero_noise():
    model = UNet(UNetConfig(**TINY))
    x, t = inputs(model.config)
    assert torch.equal(model(x, t), torch.zeros_like(x))


def test_same_seed_same_model_and_output():
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    x, t = inputs(a.config)
    assert torch.equal(a(x, t), b(x, t))
    assert not torch.allclose(a(x, t), c(x, t))


def test_int_float_and_tensor_timesteps_agree():
    model = make_model()
    x, _ = inputs(model.config)
    expected = model(x, torch.tensor([7, 7]))
    for t in (7, 7.0, torch.tensor(7), torch.tensor([7.0, 7.0]), torch.tensor([7], dtype=torch.int32)[0]):
        torch.testing.assert_close(model(x, t), expected)
    assert not torch.allclose(model(x, 8), expected)  # t matters


def test_each_image_gets_its_own_timestep():
    model = make_model()
    x, _ = inputs(model.config)
    both = model(x, torch.tensor([3, 900]))
    torch.testing.assert_close(both[1:], model(x[1:], 900))


# ---------------------------------------------------------------- conditioning


def test_class_labels_change_output_and_null_class_is_extra_row():
    model = make_model(num_classes=3)
    x, t = inputs(model.config)
    assert model.null_class == 3 and model.class_embedding.num_embeddings == 4
    outs = [model(x, t, class_labels=label) for label in range(4)]  # 0, 1, 2 and the null class
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j])
    torch.testing.assert_close(model(x, t, class_labels=torch.tensor([1, 1])), outs[1])


def test_context_changes_output_through_cross_attention():
    model = make_model(context_dim=6)
    x, t = inputs(model.config)
    g = torch.Generator().manual_seed(5)
    c1, c2 = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    assert not torch.allclose(model(x, t, encoder_hidden_states=c1), model(x, t, encoder_hidden_states=c2))
    assert all(m.cross_attn is not None for m in model.modules() if type(m).__name__ == "SpatialAttention")
    assert model(x, t, encoder_hidden_states=torch.randn(2, 9, 6)).shape == x.shape  # any number of tokens L


def test_gradient_reaches_every_parameter():
    model = make_model(num_classes=3, context_dim=6, channel_mults=(1, 2, 2), sample_size=16, attention_levels=(1, 2))
    x, t = inputs(model.config)
    out = model(x, t, class_labels=torch.tensor([0, 3]), encoder_hidden_states=torch.randn(2, 4, 6))
    out.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# ---------------------------------------------------------------- the equations in the docstrings


def test_timestep_embedding_matches_transformer_formula_and_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, 16)
    i = 3  # sin(t / 10000^(2i/d)) in column i, the matching cos in column d/2 + i
    torch.testing.assert_close(emb[:, i], torch.sin(t / 10000 ** (2 * i / 16)))
    torch.testing.assert_close(emb[:, 8 + i], torch.cos(t / 10000 ** (2 * i / 16)))
    reference = get_timestep_embedding(t, 16, flip_sin_to_cos=False, downscale_freq_shift=0)
    torch.testing.assert_close(emb, reference)


def test_attention_is_softmax_qk_v():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2, context_dim=5)
    x, context = torch.randn(2, 6, 8), torch.randn(2, 3, 5)
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v[..., s])
    torch.testing.assert_close(attn(x, context), attn.to_out(torch.cat(heads, dim=-1)))


@pytest.mark.parametrize("scale_shift", [True, False])
def test_resblock_follows_its_formula(scale_shift):
    torch.manual_seed(0)
    block = ResBlock(4, 8, emb_dim=6, num_groups=2, dropout=0.0, scale_shift=scale_shift)
    x, emb = torch.randn(2, 4, 5, 5), torch.randn(2, 6)
    h = block.conv1(nn.functional.silu(block.norm1(x)))
    cond = block.time_proj(nn.functional.silu(emb))[:, :, None, None]
    if scale_shift:
        h = block.norm2(h) * (1 + cond[:, :8]) + cond[:, 8:]
    else:
        h = block.norm2(h + cond)
    torch.testing.assert_close(block(x, emb), block.skip(x) + block.conv2(nn.functional.silu(h)))


def test_groupnorm32_computes_bf16_input_in_float32():
    torch.manual_seed(0)
    norm = GroupNorm32(2, 4)
    x = (torch.randn(2, 4, 3, 3) * 50 + 1000).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), nn.GroupNorm(2, 4)(x.float()).to(torch.bfloat16).float())


# ---------------------------------------------------------------- receptive field


def _without_groupnorm(model: UNet) -> UNet:
    """GroupNorm's statistics span the whole image; remove them to see the convolutions' local reach."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, nn.Identity())
    return model


def _input_pixels_seen(model: UNet) -> torch.Tensor:
    """(H, W) bool mask: the input pixels with a nonzero gradient for the centre output pixel."""
    c = model.config
    x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size, dtype=torch.float64, requires_grad=True)
    out = model.double()(x, 10)
    out[0, :, c.sample_size // 2, c.sample_size // 2].sum().backward()
    return x.grad[0].abs().sum(0) > 0


@pytest.mark.parametrize("overrides", [dict(channel_mults=(1, 2)), dict(channel_mults=(1, 1, 1), num_res_blocks=2)])
def test_receptive_field_matches_gradient_measurement(overrides):
    config = UNetConfig(**{**TINY, **overrides, "attention_levels": ()})
    rf = receptive_field(config)
    step = 2 ** (len(config.channel_mults) - 1)
    size = (rf + 8 + step - 1) // step * step  # room around the field, so no border clips it
    model = _without_groupnorm(make_model(**{**overrides, "attention_levels": (), "sample_size": size}))
    seen = _input_pixels_seen(model)
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert rows[0] > 0 and cols[0] > 0 and rows[-1] < size - 1 and cols[-1] < size - 1
    assert len(rows) == len(cols) == rf
    assert seen[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a full rf × rf square
    assert receptive_field(model) == rf == receptive_field(dataclasses.replace(config, sample_size=size))


def test_attention_and_groupnorm_make_the_field_global():
    size = 64  # just larger than the convolutional field of the 2-level TINY model
    local = UNetConfig(**{**TINY, "sample_size": size, "attention_levels": ()})
    assert receptive_field(local) < size
    assert not _input_pixels_seen(_without_groupnorm(make_model(sample_size=size, attention_levels=()))).all()
    assert _input_pixels_seen(_without_groupnorm(make_model(sample_size=size))).all()  # self-attention
    assert _input_pixels_seen(make_model(sample_size=size, attention_levels=())).all()  # GroupNorm statistics


# ---------------------------------------------------------------- config round trip, helpers


def test_config_round_trips_through_asdict_and_json():
    config = UNetConfig.small(num_classes=10, context_dim=32)
    assert UNetConfig.from_dict(dataclasses.asdict(config)) == config
    from_json = UNetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert from_json == config and hash(from_json) == hash(config)
    torch.manual_seed(0)
    original = UNet(UNetConfig(**TINY))
    rebuilt = UNet(UNetConfig.from_dict(dataclasses.asdict(original.config)))
    rebuilt.load_state_dict(original.state_dict(), strict=True)


def test_presets_and_count_parameters():
    small = UNet(UNetConfig.small())
    assert 1_000_000 < count_parameters(small) < 3_000_000
    assert count_parameters(UNet(UNetConfig.tiny())) < 300_000
    model = UNet(UNetConfig(**TINY))
    model.conv_in.requires_grad_(False)
    frozen = sum(p.numel() for p in model.conv_in.parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


def test_describe_names_sizes_attention_and_field():
    model = UNet(UNetConfig.small(num_classes=10, context_dim=32))
    text = describe(model)
    assert f"{count_parameters(model):,} parameters" in text
    assert "level 2: 8×8, 64 channels" in text and "self-attention + cross-attention" in text
    assert "10 classes (+ null class 10)" in text
    assert f"whole image (self-attention at 8×8); convolutions alone: {receptive_field(model)} px" in text


def test_channels_last_and_bf16_autocast():
    model = make_model()
    x, t = inputs(model.config)
    reference = model(x, t)
    model_cl = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model_cl(x.to(memory_format=torch.channels_last), t), reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_forward_compiles_as_one_graph():
    model = make_model(num_classes=3, context_dim=6)
    x, t = inputs(model.config)
    cond = dict(class_labels=torch.tensor([0, 3]), encoder_hidden_states=torch.randn(2, 4, 6))
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: no graph breaks, no .item()
    torch.testing.assert_close(compiled(x, t, **cond), model(x, t, **cond))


# ---------------------------------------------------------------- predict_noise: diffusers drop-in


def _diffusers_unet2d(**extra):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, attention_head_dim=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), **extra)


@pytest.mark.parametrize("kind", ["sdlab", "diffusers"])
def test_predict_noise_same_call_for_sdlab_and_diffusers(kind):
    model = make_model() if kind == "sdlab" else _diffusers_unet2d()
    x, t = inputs(UNetConfig(**TINY))
    eps = predict_noise(model, x, t)  # the sampling loop's one line, unchanged for either model
    expected = model(x, t) if kind == "sdlab" else model(x, t).sample
    assert eps.shape == x.shape
    torch.testing.assert_close(eps, expected)


def test_predict_noise_passes_class_labels_and_context_to_diffusers():
    from diffusers import UNet2DConditionModel

    model = _diffusers_unet2d(num_class_embeds=3)
    x, t = inputs(UNetConfig(**TINY))
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(predict_noise(model, x, t, class_labels=labels), model(x, t, class_labels=labels).sample)
    torch.manual_seed(0)
    cond_model = UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, attention_head_dim=4, cross_attention_dim=6,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    context = torch.randn(2, 5, 6)
    eps = predict_noise(cond_model, x, t, encoder_hidden_states=context)
    torch.testing.assert_close(eps, cond_model(x, t, encoder_hidden_states=context).sample)


def test_predict_noise_rejects_a_model_that_returns_no_tensor():
    with pytest.raises(TypeError, match="model returned dict; expected a tensor"):
        predict_noise(lambda x, t: {"eps": x}, torch.zeros(1, 3, 8, 8), 0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("overrides, error, match", [
    (dict(base_channels=0), ValueError, "base_channels must be a positive int; got 0"),
    (dict(in_channels=2.5), ValueError, "in_channels must be a positive int; got 2.5"),
    (dict(num_res_blocks=True), ValueError, "num_res_blocks must be a positive int; got True"),
    (dict(channel_mults=()), ValueError, "channel_mults must name at least one level"),
    (dict(channel_mults=(1, 0)), ValueError, r"channel_mults\[1\] must be a positive int; got 0"),
    (dict(channel_mults=2), TypeError, "channel_mults must be a tuple of ints; got 2"),
    (dict(base_channels=10), ValueError, "level 0 has 10 channels, not divisible by num_groups=4"),
    (dict(base_channels=9, num_groups=1), ValueError, "base_channels must be even"),
    (dict(attention_levels=(2,)), ValueError, r"attention_levels must hold level indices in \[0, 2\); got \(2,\)"),
    (dict(attention_levels=(1, 1)), ValueError, "attention_levels must not repeat a level"),
    (dict(num_heads=3), ValueError, "attention level 1 has 16 channels, not divisible by num_heads=3"),
    (dict(sample_size=10, channel_mults=(1, 2, 2)), ValueError,
     r"sample_size=10 must be divisible by 2\*\*\(levels - 1\) = 4 for 3 levels"),
    (dict(dropout=1.0), ValueError, r"dropout must be a float in \[0, 1\); got 1.0"),
    (dict(time_conditioning="film"), ValueError, "time_conditioning must be one of .*'scale_shift'.*got 'film'"),
    (dict(num_classes=0), ValueError, "num_classes must be a positive int; got 0"),
    (dict(context_dim="768"), ValueError, "context_dim must be a positive int; got '768'"),
])
def test_bad_config_raises(overrides, error, match):
    with pytest.raises(error, match=match):
        UNetConfig(**{**TINY, **overrides})


def test_bad_construction_raises():
    with pytest.raises(ValueError, match=r"unknown UNetConfig keys \['channels'\]; allowed keys are"):
        UNetConfig.from_dict({"channels": 3})
    with pytest.raises(TypeError, match="config must be a UNetConfig .*from_dict.*; got dict"):
        UNet(dataclasses.asdict(UNetConfig()))
    with pytest.raises(ValueError, match="no class conditioning .* so it has no null class"):
        _ = UNet(UNetConfig(**TINY)).null_class
    with pytest.raises(TypeError, match="expected a UNetConfig or a UNet; got dict"):
        receptive_field({})
    with pytest.raises(TypeError, match="describe expects an sdlab UNet; got Linear"):
        describe(nn.Linear(2, 2))


X = torch.zeros(2, 3, 8, 8)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.zeros(3, 8, 8), 0), {}, ValueError, r"x must be a \(B, C, H, W\) tensor; got \(3, 8, 8\)"),
    ((torch.zeros(2, 1, 8, 8), 0), {}, ValueError, "x has 1 channels but this UNet takes in_channels=3"),
    ((torch.zeros(2, 3, 16, 16), 0), {}, ValueError, r"x is \(16, 16\) pixels but this UNet was built for sample_size=8"),
    ((X, [1, 2]), {}, TypeError, "t must be an int, a float or a tensor; got list"),
    ((X, True), {}, TypeError, "t must be an int, a float or a tensor; got bool"),
    ((X, torch.tensor([True, False])), {}, TypeError, "t must hold integer or float timesteps; got dtype torch.bool"),
    ((X, torch.tensor([1, 2, 3])), {}, ValueError, r"t must have shape \(\) or \(B,\) = \(2,\); got \(3,\)"),
    ((X, torch.zeros(2, 1)), {}, ValueError, r"t must have shape \(\) or \(B,\) = \(2,\); got \(2, 1\)"),
    ((X, 0), dict(class_labels=torch.tensor([0, 1])), ValueError, r"class_labels were given .* \(num_classes=None\)"),
    ((X, 0), dict(encoder_hidden_states=torch.zeros(2, 4, 6)), ValueError, r"encoder_hidden_states were given .* \(context_dim=None\)"),
])
def test_bad_forward_inputs_raise(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_model()(*args, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(encoder_hidden_states=torch.zeros(2, 4, 6)), ValueError, r"class-conditional \(num_classes=3\): pass class_labels, or "
                                                     r"class_labels=model.null_class \(3\)"),
    (dict(class_labels=torch.tensor([0.0, 1.0]), encoder_hidden_states=torch.zeros(2, 4, 6)), TypeError,
     "class_labels must be an int or an integer tensor; got torch.float32"),
    (dict(class_labels=torch.tensor([0, 1, 2]), encoder_hidden_states=torch.zeros(2, 4, 6)), ValueError,
     r"class_labels must have shape \(B,\) = \(2,\); got \(3,\)"),
    (dict(class_labels=1), ValueError, r"text-conditional \(context_dim=6\): pass encoder_hidden_states of shape \(B, L, 6\)"),
    (dict(class_labels=1, encoder_hidden_states=torch.zeros(2, 4, 5)), ValueError,
     r"encoder_hidden_states must have shape \(B, L, context_dim\) = \(2, L, 6\); got \(2, 4, 5\)"),
    (dict(class_labels=1, encoder_hidden_states=torch.zeros(3, 4, 6)), ValueError, r"= \(2, L, 6\); got \(3, 4, 6\)"),
    (dict(class_labels=1, encoder_hidden_states=torch.zeros(4, 6)), ValueError, r"= \(2, L, 6\); got \(4, 6\)"),
])
def test_bad_conditioning_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_model(num_classes=3, context_dim=6)(X, 0, **kwargs)


# --- diffusers' calling convention --------------------------------------------------------------------

def test_context_is_a_deprecated_alias_of_encoder_hidden_states():
    model = make_model(context_dim=6).eval()
    x, t, text = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.randn(2, 4, 6)
    with pytest.warns(DeprecationWarning, match="encoder_hidden_states"):
        old = model(x, t, context=text)
    with pytest.warns(DeprecationWarning, match="encoder_hidden_states"):
        via_helper = predict_noise(model, x, t, context=text)
    new = model(x, t, encoder_hidden_states=text)
    assert torch.equal(old, new) and torch.equal(via_helper, new)
    with pytest.raises(TypeError, match="not both"):
        model(x, t, encoder_hidden_states=text, context=text)


def test_return_dict_as_diffusers_callers_pass_it():
    model = make_model(context_dim=6).eval()
    x, t, text = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.randn(2, 4, 6)
    eps = model(x, t, text)  # positional, as UNet2DConditionModel(sample, timestep, encoder_hidden_states)
    assert isinstance(eps, torch.Tensor)
    assert torch.equal(model(x, t, text, return_dict=True).sample, eps)
    # StableDiffusionPipeline's own call:
    out = model(x, t, encoder_hidden_states=text, timestep_cond=None, cross_attention_kwargs=None,
                added_cond_kwargs=None, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1 and torch.equal(out[0], eps)
    with pytest.raises(ValueError, match=r"does not use \['cross_attention_kwargs'\]"):
        model(x, t, text, cross_attention_kwargs={"scale": 0.5})
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['colour'\]"):
        model(x, t, text, colour="red")
