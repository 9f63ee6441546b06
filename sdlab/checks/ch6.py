"""Chapter 6's exercises: classifier-free guidance and one cross-attention head."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdlab.checks.core import Answer, Case, Exercise, dtype_name, generator, randint, uniform

__all__ = ["check_classifier_free_guidance", "check_cross_attention_head"]


# ----------------------------------------------------------------------------- classifier-free guidance

def _guidance_cases(seed: int) -> list[Case]:
    g = generator(seed, 61)
    plan = [((2, 4, 3, 3), 7.5, torch.float32), ((3, 4, 2, 5), 3.0, torch.float32), ((1, 4, 4, 4), 1.0, torch.float32),
            ((2, 4, 2, 2), 12.5, torch.float64)]
    if seed:
        plan = [((randint(g, 1, 3), 4, randint(g, 2, 5), randint(g, 2, 5)), round(uniform(g, 1.5, 12), 2), dtype)
                for dtype in (torch.float32, torch.float64, torch.float32)] + [((1, 4, 3, 3), 1.0, torch.float32)]
    cases = []
    for shape, scale, dtype in plan:
        uncond = torch.randn(shape, generator=g, dtype=torch.float64)
        cond = uncond + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
        cases.append(Case((uncond.to(dtype), cond.to(dtype), scale), f"at scale {scale} for shape {shape} "
                          f"({dtype_name(dtype)})", ("noise_uncond", "noise_cond", "scale")))
    return cases


def _guidance_answer(case: Case) -> Answer:
    u, c, scale = case.args[0].double(), case.args[1].double(), case.args[2]
    slips = [
        ("the guidance points the wrong way: start from the unconditional prediction and move towards "
         "the conditional one", u - scale * (c - u)),
        ("the guidance points the wrong way: it starts from the conditional prediction and moves towards "
         "the unconditional one (the weights 1 − s and s are swapped)", c + scale * (u - c)),
        ("the scale multiplies the unconditional prediction; it should multiply the difference "
         "(conditional − unconditional)", scale * u + (c - u)),
        ("the scale multiplies the conditional prediction alone; it multiplies the difference "
         "(conditional − unconditional), added to the unconditional one", u + scale * c),
        ("you returned s · ε̂_cond: the unconditional prediction is the starting point", scale * c),
        ("the scale is ignored: you returned the unconditional prediction", u),
        ("you averaged the two predictions: guidance extrapolates past the conditional one", scale * (u + c) / 2),
    ]
    if scale != 1.0:
        slips.append(("the scale is ignored: you returned the conditional prediction", c))
    return Answer(u + scale * (c - u), slips, what="the guided prediction")


CLASSIFIER_FREE_GUIDANCE = Exercise("classifier-free guidance", _guidance_cases, _guidance_answer)


def check_classifier_free_guidance(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], *,
                                   seed: int = 0) -> bool:
    """Check ``fn(noise_uncond, noise_cond, scale) -> guided``: ε̂_uncond + s · (ε̂_cond − ε̂_uncond).

    Graded on batches of several shapes and scales, float32 and float64; the inputs must come back unchanged.
    """
    return CLASSIFIER_FREE_GUIDANCE.check(fn, seed=seed)


# ----------------------------------------------------------------------------- one cross-attention head

def _attention_cases(seed: int) -> list[Case]:
    g = generator(seed, 62)
    plan = [(2, 6, 5, 8, 12, torch.float32), (3, 4, 7, 8, 10, torch.float32)]
    plan += [(1, randint(g, 2, 6), randint(g, 2, 8), randint(g, 3, 9), randint(g, 4, 12), torch.float64),
             (randint(g, 2, 3), randint(g, 2, 6), randint(g, 2, 8), randint(g, 3, 9), randint(g, 4, 12), torch.float32)]
    cases = []
    for batch, positions, tokens, width, token_width, dtype in plan:
        x = torch.randn(batch, positions, width, generator=g, dtype=torch.float64).to(dtype)
        states = torch.randn(batch, tokens, token_width, generator=g, dtype=torch.float64).to(dtype)
        w_q, w_k, w_v = (torch.randn(rows, width, generator=g, dtype=torch.float64).mul(0.6).to(dtype)
                         for rows in (width, token_width, token_width))
        cases.append(Case((x, states, w_q, w_k, w_v), f"for {positions} positions reading {tokens} tokens, "
                          f"batch {batch} ({dtype_name(dtype)})", ("x", "states", "w_q", "w_k", "w_v")))
    return cases


def _attention_answer(case: Case) -> Answer:
    """The reference is diffusers' own ``Attention`` (one head, output projection the identity) on the weights."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    x, states, w_q, w_k, w_v = (a.double() for a in case.args)
    width, token_width = x.shape[-1], states.shape[-1]
    attn = Attention(query_dim=width, cross_attention_dim=token_width, heads=1, dim_head=width).double()
    attn.set_processor(AttnProcessor())
    with torch.no_grad():
        for layer, weight in ((attn.to_q, w_q), (attn.to_k, w_k), (attn.to_v, w_v)):
            layer.weight.copy_(weight.T)
        attn.to_out[0].weight.copy_(torch.eye(width, dtype=torch.float64))
        attn.to_out[0].bias.zero_()
        expected = attn.eval()(x, encoder_hidden_states=states)
    q, k, v = x @ w_q, states @ w_k, states @ w_v
    scores = q @ k.transpose(1, 2)
    slips = [
        ("the softmax runs over the wrong axis: each position's weights must sum to 1 over the tokens "
         "(the last axis of Q Kᵀ)", torch.softmax(scores / width**0.5, dim=1) @ v),
        ("the 1/√d scaling is missing: divide Q Kᵀ by the square root of the head width",
         torch.softmax(scores, dim=-1) @ v),
        ("you divided by d; the scaling is 1/√d", torch.softmax(scores / width, dim=-1) @ v),
        ("you scaled by the token states' width; d is the head width (the queries' last axis)",
         torch.softmax(scores / token_width**0.5, dim=-1) @ v),
        ("the softmax is missing: the weights must be positive and sum to 1", scores / width**0.5 @ v),
        ("you returned the attention weights; multiply them by the values", torch.softmax(scores / width**0.5, dim=-1)),
        ("keys and values are swapped: keys are compared with the queries, values are mixed",
         torch.softmax(q @ v.transpose(1, 2) / width**0.5, dim=-1) @ k),
    ]
    return Answer(expected, slips, what="the head's output")


CROSS_ATTENTION_HEAD = Exercise("cross-attention head", _attention_cases, _attention_answer)


def check_cross_attention_head(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> bool:
    """Check ``fn(x, states, w_q, w_k, w_v) -> out (B, N, d)``: softmax(Q Kᵀ / √d) V for one head.

    The reference is diffusers' own ``Attention`` (one head, the output projection the identity)
    on the same weights; graded on several shapes, float32 and float64.
    """
    return CROSS_ATTENTION_HEAD.check(fn, seed=seed)


EXERCISES = {"check_classifier_free_guidance": CLASSIFIER_FREE_GUIDANCE,
             "check_cross_attention_head": CROSS_ATTENTION_HEAD}
