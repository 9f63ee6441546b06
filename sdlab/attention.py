"""Chapter 6: cross-attention, the way text gets into the U-Net, and a recorder for its attention maps.

In every transformer block of ``UNet2DConditionModel`` the picture's features ask the prompt's
tokens a question. Each latent position's feature vector becomes a **query**, each token state a
**key** and a **value**; a softmax over the tokens of q · k / √d says how much of each token's value
the position takes in (Vaswani et al. 2017, eq. 1):

    attention(Q, K, V) = softmax(Q Kᵀ / √d) V        Q = x W_q,  K = s W_k,  V = s W_v

``cross_attention`` is that formula for one head, in plain tensor code. ``AttentionRecorder`` is a
diffusers attention processor that computes exactly what the default one does and keeps the
softmax of every cross-attention layer, which diffusers does not expose; ``attention_maps`` uses
it to show which parts of a generated picture listened to which word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import nn

__all__ = ["cross_attention", "AttentionRecorder", "AttentionMaps", "attention_maps"]


def cross_attention(x: torch.Tensor, states: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                    w_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-attention head: positions (queries) read from tokens (keys and values).

    Args:
        x: (B, N, C) the picture's features, one row per position.
        states: (B, T, D) the prompt's token states.
        w_q: (C, d); w_k, w_v: (D, d) the projections (``x @ w_q`` is the queries).

    Returns:
        ``(out (B, N, d), probs (B, N, T))``: each position's mix of the values, and the weights
        of that mix (each row sums to 1 over the tokens).
    """
    if x.dim() != 3 or states.dim() != 3 or x.shape[0] != states.shape[0]:
        raise ValueError(f"x must be (B, N, C) and states (B, T, D) with the same B; got {tuple(x.shape)} and "
                         f"{tuple(states.shape)}")
    q, k, v = x @ w_q, states @ w_k, states @ w_v
    probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return probs @ v, probs


class AttentionRecorder(AttnProcessor):
    """diffusers' default attention, which also keeps each cross-attention layer's softmax.

    Install it on a U-Net with ``recorder.install(unet)`` (``remove`` restores the default); every
    forward pass then appends, per cross-attention layer, the probabilities averaged over heads,
    (B, h·w, T), to ``recorder.maps`` as ``(side, probs)`` with ``side`` the layer's resolution.
    Self-attention layers run unchanged and are not recorded.
    """

    def __init__(self) -> None:
        self.maps: list[tuple[int, torch.Tensor]] = []
        self._replaced: dict[str, object] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs
                 ) -> torch.Tensor:
        plain = (attn.spatial_norm is None and attn.group_norm is None and not attn.norm_cross
                 and not attn.residual_connection and attention_mask is None and hidden_states.dim() == 3)
        if encoder_hidden_states is None or not plain:  # self-attention, or a layout this recorder does not read
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)  # (B·heads, N, T)
        batch, positions = hidden_states.shape[:2]
        self.maps.append((math.isqrt(positions), probs.view(batch, attn.heads, positions, -1).mean(1).detach()))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor

    def install(self, unet: nn.Module) -> AttentionRecorder:
        """Put this recorder in every attention layer of ``unet`` (remembering the processors it replaces)."""
        self._replaced = dict(unet.attn_processors)
        unet.set_attn_processor(self)
        self.maps.clear()
        return self

    def remove(self, unet: nn.Module) -> None:
        """Give ``unet`` back the processors it had before `install`."""
        if self._replaced is not None:
            unet.set_attn_processor(self._replaced)
            self._replaced = None


@dataclass(frozen=True)
class AttentionMaps:
    """What `attention_maps` returns: a picture, its prompt's tokens, and where each token was looked at.

    Attributes:
        image: (3, H, W) the generated picture in [−1, 1].
        tokens: the prompt's tokens as text (``<|startoftext|>``, "a", "small", ..., ``<|endoftext|>``).
        maps: (len(tokens), H, W) each token's attention, averaged over layers, heads and steps and
            resized to the picture; every position's weights sum to at most 1 over the shown tokens.
    """

    image: torch.Tensor
    tokens: list[str]
    maps: torch.Tensor

    def of(self, word: str) -> torch.Tensor:
        """The (H, W) map of the first token that is ``word`` (e.g. ``"red"``)."""
        for token, attention in zip(self.tokens, self.maps):
            if token == word:
                return attention
        raise ValueError(f"{word!r} is not one of the prompt's tokens {self.tokens}")


@torch.no_grad()
def attention_maps(unet: nn.Module, text_encoder: nn.Module, vae: nn.Module, prompt: str, *,
                   guidance_scale: float = 3.0, **options) -> AttentionMaps:
    """Generate one picture from ``prompt`` and record which latent positions attended to which token.

    Only the conditional branch counts (with guidance, the batch also holds the empty prompt's half).

    Args:
        prompt: one prompt. guidance_scale, options: as `sdlab.guidance.generate` (``generator``,
            ``num_inference_steps``, ``sampler``...).
    """
    from sdlab.guidance import generate
    from sdlab.tokenizer import pieces

    tokens = [piece for piece, _ in pieces(prompt)][:77]  # a TypeError for anything but one string
    recorder = AttentionRecorder().install(unet)
    try:
        image = generate(unet, text_encoder, vae, [prompt], guidance_scale=guidance_scale, **options)[0]
    finally:
        recorder.remove(unet)
    side = image.shape[-1]
    total = torch.zeros(len(tokens), side, side)
    for resolution, probs in recorder.maps:
        cond = probs[-1, :, : len(tokens)].float().cpu()  # the last row of the batch: the prompt's branch
        grid = cond.T.reshape(len(tokens), 1, resolution, resolution)
        total += F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    return AttentionMaps(image=image.cpu(), tokens=[t.removesuffix("</w>") for t in tokens],
                         maps=total / max(len(recorder.maps), 1))
