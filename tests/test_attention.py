"""sdlab.attention: one cross-attention head in plain code, and the recorder of attention maps."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from test_text_unet import g, tiny_text_encoder, tiny_unet, tiny_vae

import sdlab as sd


def one_head_attention(query_dim=12, token_dim=10, seed=0):
    """diffusers' Attention with one head whose output projection is the identity."""
    torch.manual_seed(seed)
    attn = Attention(query_dim=query_dim, cross_attention_dim=token_dim, heads=1, dim_head=query_dim)
    attn.set_processor(AttnProcessor())
    with torch.no_grad():
        attn.to_out[0].weight.copy_(torch.eye(query_dim))
        attn.to_out[0].bias.zero_()
    return attn.eval()


def test_cross_attention_is_diffusers_attention_with_one_head():
    attn = one_head_attention()
    x, states = torch.randn(2, 9, 12, generator=g(1)), torch.randn(2, 5, 10, generator=g(2))
    out, probs = sd.attention.cross_attention(x, states, attn.to_q.weight.T, attn.to_k.weight.T, attn.to_v.weight.T)
    with torch.no_grad():
        expected = attn(x, encoder_hidden_states=states)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert probs.shape == (2, 9, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 9))
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        sd.attention.cross_attention(x[0], states, attn.to_q.weight.T, attn.to_k.weight.T, attn.to_v.weight.T)


def test_the_recorder_changes_nothing_and_keeps_every_cross_attention_softmax():
    unet = tiny_unet()
    x, t = torch.randn(2, 4, 8, 8, generator=g(1)), torch.tensor([10, 700])
    states = torch.randn(2, 77, 16, generator=g(2))
    before = dict(unet.attn_processors)
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=states).sample
        recorder = sd.attention.AttentionRecorder().install(unet)
        got = unet(x, t, encoder_hidden_states=states).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    cross_layers = sum(name.endswith("attn2.processor") for name in before)
    assert len(recorder.maps) == cross_layers > 0
    for side, probs in recorder.maps:
        assert probs.shape == (2, side * side, 77)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, side * side))
    recorder.remove(unet)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}


def test_attention_maps_cover_the_picture_for_each_token():
    result = sd.attention.attention_maps(tiny_unet(), tiny_text_encoder(), tiny_vae(), "a red cat",
                                         guidance_scale=2.0, num_inference_steps=2, generator=g(0))
    assert result.tokens == ["<|startoftext|>", "a", "red", "cat", "<|endoftext|>"]
    assert result.maps.shape == (5, *result.image.shape[-2:])
    assert (result.maps >= 0).all() and (result.maps.sum(0) <= 1 + 1e-5).all()
    assert torch.equal(result.of("red"), result.maps[2])
    with pytest.raises(ValueError, match="'dog' is not one of the prompt's tokens"):
        result.of("dog")
    with pytest.raises(TypeError, match="prompt must be a str"):
        sd.attention.attention_maps(tiny_unet(), tiny_text_encoder(), tiny_vae(), ["a", "b"])
