"""Chapter 6's exercise checks: the right answers pass (in float32 too), plausible wrong ones are named."""

from __future__ import annotations

import math

import pytest
import torch

import sdlab as sd
from sdlab.checks import ExerciseError, check_classifier_free_guidance, check_cross_attention_head


def right_cfg(uncond, cond, scale):
    return uncond + scale * (cond - uncond)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_right_guidance_passes_on_other_inputs(seed, capsys):
    assert check_classifier_free_guidance(right_cfg, seed=seed)
    assert check_classifier_free_guidance(lambda u, c, s: torch.lerp(u, c, s), seed=seed)
    assert check_classifier_free_guidance(sd.guidance.classifier_free_guidance, seed=seed)
    assert "✓ classifier-free guidance" in capsys.readouterr().out


def _in_place(u, c, s):
    return u.mul_(1 - s).add_(s * c)


def _visible_values_only(u, c, s):  # right for the first graded shape only, hard-coded otherwise
    return right_cfg(u, c, s) if u.shape == (2, 4, 3, 3) else torch.zeros_like(u)


@pytest.mark.parametrize("wrong, message", [
    (lambda u, c, s: u - s * (c - u), "wrong way"),
    (lambda u, c, s: c + s * (u - c), "wrong way"),
    (lambda u, c, s: s * u + (c - u), "multiplies the unconditional"),
    (lambda u, c, s: u + s * c, "multiplies the conditional prediction alone"),
    (lambda u, c, s: (1 - s) * c + s * u, "weights 1 − s and s are swapped"),
    (lambda u, c, s: c, "scale is ignored"),
    (lambda u, c, s: s * (u + c) / 2, "averaged"),
    (lambda u, c, s: u + 7.5 * (c - u), "at scale 3.0"),  # the notebook's scale hard-coded
    (_in_place, "in place"),
    (_visible_values_only, "off by up to"),
    (lambda u, c, s: (u + s * (c - u))[:1], "shape"),
    (lambda u, c, s: None, "returned None"),
])
def test_wrong_guidance_is_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_classifier_free_guidance(wrong)


def right_head(x, states, w_q, w_k, w_v):
    q, k, v = x @ w_q, states @ w_k, states @ w_v
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


@pytest.mark.parametrize("seed", [0, 3])
def test_right_attention_head_passes(seed):
    assert check_cross_attention_head(right_head, seed=seed)
    assert check_cross_attention_head(lambda *a: sd.attention.cross_attention(*a)[0], seed=seed)
    assert check_cross_attention_head(lambda x, s, q, k, v: torch.nn.functional.scaled_dot_product_attention(
        x @ q, s @ k, s @ v), seed=seed)


def _head(scores_fn, mix_values=True):
    def fn(x, states, w_q, w_k, w_v):
        q, k, v = x @ w_q, states @ w_k, states @ w_v
        probs = scores_fn(q, k, v)
        return probs @ v if mix_values else probs
    return fn


@pytest.mark.parametrize("wrong, message", [
    (_head(lambda q, k, v: torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=1)), "wrong axis"),
    (_head(lambda q, k, v: torch.softmax(q @ k.transpose(1, 2), dim=-1)), "1/√d scaling is missing"),
    (_head(lambda q, k, v: torch.softmax(q @ k.transpose(1, 2) / q.shape[-1], dim=-1)), "divided by d"),
    (_head(lambda q, k, v: q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])), "softmax is missing"),
    (_head(lambda q, k, v: torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1), False),
     "returned the attention weights"),
    (lambda x, s, q, k, v: torch.softmax((x @ q) @ (s @ v).transpose(1, 2) / math.sqrt(q.shape[1]), -1) @ (s @ k),
     "keys and values are swapped"),
    (lambda x, s, q, k, v: torch.softmax((x @ q) @ (s @ k).transpose(1, 2) / math.sqrt(s.shape[-1]), -1) @ (s @ v),
     "token states' width"),
    (lambda x, s, q, k, v: right_head(x[:1], s[:1], q, k, v).expand(x.shape[0], -1, -1), "off by up to"),
])
def test_wrong_attention_heads_are_named(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_cross_attention_head(wrong)
