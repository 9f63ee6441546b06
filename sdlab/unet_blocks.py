"""The building blocks of the course's U-Net: time embedding, normalisation, residual and attention blocks.

Each block is small enough to read in one go; ``sdlab.unet`` assembles them into the full network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["timestep_embedding", "GroupNorm32", "ResBlock", "Attention", "SpatialAttention", "Downsample", "Upsample"]

def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, in float32.

    emb(t) = [sin(t·ω_0) … sin(t·ω_{d/2−1}), cos(t·ω_0) … cos(t·ω_{d/2−1})] with ω_i = max_period^(−2i/d):
    the Transformer's positional encoding (Vaswani et al. 2017, §3.5) with its sines and cosines
    grouped, used for t by DDPM (Ho et al. 2020, App. B). Equals diffusers'
    ``get_timestep_embedding(t, dim, flip_sin_to_cos=False, downscale_freq_shift=0)``.

    Args:
        t: (B,) timesteps, integer or float.
        dim: embedding size, even.

    Returns:
        (B, dim) float32 tensor on ``t``'s device.
    """
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in at least float32, so bf16/fp16 activations keep accurate statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = F.group_norm(x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps)
        return out.to(x.dtype)


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding ``emb``.

    h = conv1(SiLU(GN(x))), then with (s, b) = Linear(SiLU(emb)) per channel:
    "shift" (DDPM, Ho et al. 2020): h = GN(h + b);
    "scale_shift" (AdaGN, Dhariwal & Nichol 2021, §3): h = GN(h)·(1 + s) + b.
    out = skip(x) + conv2(dropout(SiLU(h))), skip = 1×1 conv when the channel count changes, else identity.
    """

    def __init__(self, in_channels: int, out_channels: int, *, emb_dim: int, num_groups: int,
                 dropout: float, scale_shift: bool) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = GroupNorm32(num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, out_channels * (2 if scale_shift else 1))
        self.norm2 = GroupNorm32(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W), emb: (B, emb_dim) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        cond = self.time_proj(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = cond.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + cond)
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    """Multi-head attention softmax(QKᵀ/√d)·V (Vaswani et al. 2017, eq. 1), via F.scaled_dot_product_attention.

    Self-attention when ``context`` is None; cross-attention (queries from x, keys and values from the
    text tokens) otherwise, as in Stable Diffusion (Rombach et al. 2022, eq. 3).
    """

    def __init__(self, dim: int, *, num_heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim or dim, dim)
        self.to_v = nn.Linear(context_dim or dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, dim), context: (B, L, context_dim) or None -> (B, N, dim)."""
        source = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        q, k, v = (a.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for a in (q, k, v))  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class SpatialAttention(nn.Module):
    """Self-attention among the H·W positions, then (if built with ``context_dim``) cross-attention to text."""

    def __init__(self, channels: int, *, num_heads: int, num_groups: int, context_dim: int | None) -> None:
        super().__init__()
        self.norm = GroupNorm32(num_groups, channels)
        self.self_attn = Attention(channels, num_heads=num_heads)
        self.cross_norm = nn.LayerNorm(channels) if context_dim else None
        self.cross_attn = Attention(channels, num_heads=num_heads, context_dim=context_dim) if context_dim else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """x: (B, C, H, W), context: (B, L, context_dim) or None -> (B, C, H, W)."""
        tokens = x.flatten(2).transpose(1, 2)  # (B, H·W, C)
        tokens = tokens + self.self_attn(self.norm(x).flatten(2).transpose(1, 2))
        if self.cross_attn is not None:
            tokens = tokens + self.cross_attn(self.cross_norm(tokens), context)
        return tokens.transpose(1, 2).unflatten(2, x.shape[2:])


class Downsample(nn.Conv2d):
    """Halve H and W with a 3×3 convolution of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour), then a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
