"""A small U-Net noise predictor ε_θ(x_t, t) for chapters 2–6, in plain PyTorch.

The layout is the DDPM U-Net (Ho et al. 2020, App. B), itself built on Ronneberger et al. 2015::

    x ─ conv_in ─ [ResBlock (+Attention)]×n ─ down ─ … ─ middle ─ … ─ up ─ [ResBlock (+Attention)]×(n+1) ─ conv_out ─ ε̂
                  └────────────── every activation is concatenated back in on the way up ──────────────┘

The timestep t reaches every ResBlock through a sinusoidal embedding and an MLP. An optional class label
adds a learned vector to that embedding; optional text embeddings (``encoder_hidden_states``) enter through
cross-attention next to each self-attention. ``predict_noise`` calls this model or a diffusers U-Net alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

from sdlab.unet_blocks import (  # re-exported: chapters and tests reach the blocks through sdlab.unet too
    Attention,
    Downsample,
    GroupNorm32,
    ResBlock,
    SpatialAttention,
    Upsample,
    timestep_embedding,
)
from sdlab.unet_config import TimeConditioning, UNetConfig  # re-exported: sd.UNetConfig, sd.unet.UNetConfig

__all__ = [
    "TimeConditioning",
    "UNetConfig",
    "UNet",
    "UNetOutput",
    "timestep_embedding",
    "predict_noise",
    "count_parameters",
    "receptive_field",
    "describe",
    # the building blocks, re-exported from sdlab.unet_blocks
    "Attention",
    "Downsample",
    "GroupNorm32",
    "ResBlock",
    "SpatialAttention",
    "Upsample",
]





@dataclass
class UNetOutput(BaseOutput):
    """What ``UNet(..., return_dict=True)`` returns, as diffusers' models do: the prediction as ``.sample``."""

    sample: torch.Tensor  # (B, out_channels, H, W)


def _renamed_context(encoder_hidden_states: torch.Tensor | None, context: torch.Tensor | None) -> torch.Tensor | None:
    """Accept the old keyword ``context`` with a DeprecationWarning; never both names at once."""
    if context is None:
        return encoder_hidden_states
    if encoder_hidden_states is not None:
        raise TypeError("pass encoder_hidden_states or context (its deprecated name), not both")
    warnings.warn("the keyword 'context' is deprecated: call the model with encoder_hidden_states=..., as "
                  "diffusers' UNet2DConditionModel", DeprecationWarning, stacklevel=3)
    return context


def _check_unused(options: dict[str, Any]) -> None:
    """diffusers' extra call options are fine when None; anything else this model cannot honour."""
    known = {"timestep_cond", "cross_attention_kwargs", "added_cond_kwargs", "attention_mask",
             "encoder_attention_mask"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"UNet.forward() got unexpected keyword arguments {unknown}")
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise ValueError(f"this UNet does not use {given}; pass None or leave them out")

class UNetBlock(nn.Module):
    """One ResBlock, followed by SpatialAttention at the attention levels."""

    def __init__(self, in_channels: int, out_channels: int, *, attention: bool, config: UNetConfig) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim=4 * config.base_channels, num_groups=config.num_groups,
                            dropout=config.dropout, scale_shift=config.time_conditioning == "scale_shift")
        self.attn = SpatialAttention(out_channels, num_heads=config.num_heads, num_groups=config.num_groups,
                                     context_dim=config.context_dim) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h, context)


class UNet(nn.Module):
    """Noise predictor ε_θ(x_t, t): the small DDPM-style U-Net of the course (see the module docstring).

    The output convolution starts at zero, so an untrained model predicts ε̂ = 0 (loss 1 on unit noise).
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        config = UNetConfig() if config is None else config
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig (use UNetConfig.from_dict for a dict); "
                            f"got {type(config).__name__}")
        self.config = config
        ch, emb_dim, levels = config.level_channels, 4 * config.base_channels, len(config.channel_mults)
        self.time_mlp = nn.Sequential(nn.Linear(config.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One extra row, index num_classes, is the "null" class used for classifier-free guidance.
        self.class_embedding = nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes else None
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)

        skip_channels, prev = [ch[0]], ch[0]
        self.down = nn.ModuleList()
        for level in range(levels):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                blocks.append(UNetBlock(prev, ch[level], attention=level in config.attention_levels, config=config))
                prev = ch[level]
                skip_channels.append(prev)
            self.down.append(nn.ModuleDict({"blocks": blocks}))
            if level < levels - 1:
                self.down[level]["downsample"] = Downsample(prev)
                skip_channels.append(prev)

        low_attention = levels - 1 in config.attention_levels
        self.mid = nn.ModuleList([UNetBlock(prev, prev, attention=low_attention, config=config),
                                  UNetBlock(prev, prev, attention=False, config=config)])

        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                blocks.append(UNetBlock(prev + skip_channels.pop(), ch[level],
                                        attention=level in config.attention_levels, config=config))
                prev = ch[level]
            self.up.append(nn.ModuleDict({"blocks": blocks}))
            if level > 0:
                self.up[-1]["upsample"] = Upsample(prev)

        self.norm_out = GroupNorm32(config.num_groups, prev)
        self.conv_out = nn.Conv2d(prev, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int:
        """The class index meaning "no class" (= num_classes), for classifier-free guidance."""
        if self.config.num_classes is None:
            raise ValueError("this UNet has no class conditioning (num_classes=None), so it has no null class")
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor | int | float,
                encoder_hidden_states: torch.Tensor | None = None, *, class_labels: torch.Tensor | int | None = None,
                return_dict: bool | None = None, context: torch.Tensor | None = None,
                **diffusers_options: Any) -> torch.Tensor | UNetOutput | tuple[torch.Tensor]:
        """Predict the noise ε in x_t; called as diffusers' ``UNet2DConditionModel`` is.

        Args:
            x: (B, in_channels, sample_size, sample_size) noisy images x_t.
            t: (B,) or () timesteps, int or float tensor, or a Python number shared by the batch.
            class_labels: (B,) integer labels in [0, num_classes], or one int for the whole batch; index
                ``num_classes`` (``model.null_class``) is the null class. Required exactly when the model was
                built with ``num_classes`` (pass ``model.null_class`` for an unconditional prediction). Values
                are not range-checked here (that would sync the GPU); nn.Embedding rejects bad ones.
            encoder_hidden_states: (B, L, context_dim) text embeddings (per-token hidden states of a text
                encoder); required exactly when built with ``context_dim``.
            return_dict: None (default) returns the tensor; True a ``UNetOutput`` with ``.sample`` and False
                the tuple ``(sample,)``, as diffusers' models do when their callers pass it.
            context: deprecated name of ``encoder_hidden_states``.
            diffusers_options: what diffusers' pipelines also pass (``timestep_cond``, ``cross_attention_kwargs``,
                ``added_cond_kwargs``); accepted when None, since this model has no use for them.

        Returns:
            (B, out_channels, H, W) predicted noise ε̂, in x's dtype (or autocast's).
        """
        encoder_hidden_states = _renamed_context(encoder_hidden_states, context)
        _check_unused(diffusers_options)
        eps = self._predict(x, t, encoder_hidden_states, class_labels)
        if return_dict is None:
            return eps
        return UNetOutput(sample=eps) if return_dict else (eps,)

    def _predict(self, x: torch.Tensor, t: torch.Tensor | int | float, context: torch.Tensor | None,
                 class_labels: torch.Tensor | int | None) -> torch.Tensor:
        """The network itself: x_t, t and the conditioning → ε̂."""
        self._check_x(x)
        emb = self.time_mlp(timestep_embedding(self._timesteps(t, x), self.config.base_channels).to(x.dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(self._class_labels(class_labels, x))
        elif class_labels is not None:
            raise ValueError("class_labels were given but this UNet has no class conditioning (num_classes=None)")
        self._check_context(context, x)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb, context)
                skips.append(h)
            if "downsample" in level:  # every level but the lowest
                h = level["downsample"](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb, context)
        for level in self.up:
            for block in level["blocks"]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if "upsample" in level:  # every level but the top one
                h = level["upsample"](h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_x(self, x: torch.Tensor) -> None:
        c = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, C, H, W) tensor; got {shape}")
        if x.shape[1] != c.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels but this UNet takes in_channels={c.in_channels}")
        if tuple(x.shape[2:]) != (c.sample_size, c.sample_size):
            raise ValueError(f"x is {tuple(x.shape[2:])} pixels but this UNet was built for sample_size="
                             f"{c.sample_size}; build a UNetConfig with the images' size")

    @staticmethod
    def _timesteps(t: torch.Tensor | int | float, x: torch.Tensor) -> torch.Tensor:
        """Return t as a (B,) tensor on x's device."""
        batch = x.shape[0]
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return torch.full((batch,), t, device=x.device)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be an int, a float or a tensor; got {type(t).__name__}")
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must hold integer or float timesteps; got dtype {t.dtype}")
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != batch):
            raise ValueError(f"t must have shape () or (B,) = ({batch},); got {tuple(t.shape)}")
        return t.to(x.device).expand(batch)

    def _class_labels(self, labels: torch.Tensor | int | None, x: torch.Tensor) -> torch.Tensor:
        """Return class labels as a (B,) long tensor on x's device."""
        batch = x.shape[0]
        if labels is None:
            raise ValueError(f"this UNet is class-conditional (num_classes={self.config.num_classes}): pass "
                             f"class_labels, or class_labels=model.null_class ({self.null_class}) for none")
        if isinstance(labels, int) and not isinstance(labels, bool):
            return torch.full((batch,), labels, device=x.device, dtype=torch.long)
        if not isinstance(labels, torch.Tensor) or labels.dtype == torch.bool or labels.is_floating_point():
            kind = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise TypeError(f"class_labels must be an int or an integer tensor; got {kind}")
        if labels.shape != (batch,):
            raise ValueError(f"class_labels must have shape (B,) = ({batch},); got {tuple(labels.shape)}")
        return labels.to(x.device, torch.long)

    def _check_context(self, context: torch.Tensor | None, x: torch.Tensor) -> None:
        dim = self.config.context_dim
        if dim is None:
            if context is not None:
                raise ValueError("encoder_hidden_states were given but this UNet has no cross-attention "
                                 "(context_dim=None)")
            return
        if context is None:
            raise ValueError(f"this UNet is text-conditional (context_dim={dim}): pass encoder_hidden_states "
                             f"of shape (B, L, {dim})")
        if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[0] != x.shape[0] \
                or context.shape[2] != dim:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"encoder_hidden_states must have shape (B, L, context_dim) = ({x.shape[0]}, L, {dim}); "
                             f"got {shape}")


def predict_noise(model: nn.Module, x: torch.Tensor, t: torch.Tensor | int | float, *,
                  class_labels: torch.Tensor | int | None = None, encoder_hidden_states: torch.Tensor | None = None,
                  context: torch.Tensor | None = None) -> torch.Tensor:
    """Call an sdlab `UNet` or a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` and return ε̂.

    diffusers models return an output object whose ``.sample`` is the tensor and call the text embeddings
    ``encoder_hidden_states``; this helper hides both, so a sampling loop works with either model unchanged.

    Args:
        model: the noise predictor.
        x: (B, C, H, W) noisy images x_t.
        t: (B,) or () timesteps, or a Python number.
        class_labels: (B,) class labels, for class-conditional models only.
        encoder_hidden_states: (B, L, D) text embeddings, for text-conditional models only.
        context: deprecated name of ``encoder_hidden_states``.

    Returns:
        (B, C_out, H, W) predicted noise.
    """
    encoder_hidden_states = _renamed_context(encoder_hidden_states, context)
    if isinstance(model, UNet):
        return model(x, t, encoder_hidden_states, class_labels=class_labels)
    kwargs: dict[str, Any] = {}
    if class_labels is not None:
        kwargs["class_labels"] = class_labels
    if encoder_hidden_states is not None:
        kwargs["encoder_hidden_states"] = encoder_hidden_states
    out = model(x, t, **kwargs)
    out = getattr(out, "sample", out[0] if isinstance(out, tuple) else out)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model returned {type(out).__name__}; expected a tensor or an object with .sample")
    return out


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _as_config(config_or_model: UNetConfig | UNet) -> UNetConfig:
    if isinstance(config_or_model, UNet):
        return config_or_model.config
    if isinstance(config_or_model, UNetConfig):
        return config_or_model
    raise TypeError(f"expected a UNetConfig or a UNet; got {type(config_or_model).__name__}")


def receptive_field(config_or_model: UNetConfig | UNet) -> int:
    """Side in pixels of the input square the centre output pixel sees through the convolutions.

    Walks the layers of the path through the middle block backwards, from the output pixel to the input
    interval it depends on (every path through a skip connection is a sub-path of it, so sees less):
    a 3×3 conv widens [a, b] to [a−1, b+1], the stride-2 conv maps it to [2a−1, 2b+1] and nearest
    upsampling to [⌊a/2⌋, ⌊b/2⌋]. Borders are ignored (the image is taken as unbounded). Self-attention,
    and the statistics of GroupNorm, reach every pixel, so with them each output strictly depends on
    the whole image: this number is the reach of the local, convolutional paths.
    """
    c = _as_config(config_or_model)
    levels = len(c.channel_mults)
    ops = ["conv"]  # conv_in
    for level in range(levels):
        ops += ["conv", "conv"] * c.num_res_blocks + ([] if level == levels - 1 else ["down"])
    ops += ["conv", "conv"] * 2  # middle: two ResBlocks
    for level in reversed(range(levels)):
        ops += ["conv", "conv"] * (c.num_res_blocks + 1) + (["up", "conv"] if level else [])
    ops += ["conv"]  # conv_out
    a = b = c.sample_size // 2
    for op in reversed(ops):
        if op == "conv":
            a, b = a - 1, b + 1
        elif op == "down":
            a, b = 2 * a - 1, 2 * b + 1
        else:
            a, b = a // 2, b // 2
    return b - a + 1


def _fit(line: str, width: int = 79) -> list[str]:
    """One summary line cut after ", " into lines of at most ``width`` characters (the book's column)."""
    lines = []
    while len(line) > width and (cut := line.rfind(", ", 0, width)) > 4:
        lines.append(line[:cut + 1])
        line = "    " + line[cut + 2:]
    return [*lines, line]


def describe(model: UNet) -> str:
    """A few lines for a notebook, cut to the book's 79-character column: parameters, resolutions, attention,
    conditioning, receptive field."""
    if not isinstance(model, UNet):
        raise TypeError(f"describe expects an sdlab UNet; got {type(model).__name__}")
    c, n = model.config, count_parameters(model)
    attn = ", self-attention" + (" + cross-attention" if c.context_dim else "")
    lines = [f"UNet: {n:,} parameters ({n * 4 / 2**20:.1f} MiB in float32), "
             f"{c.in_channels} -> {c.out_channels} channels at {c.sample_size}×{c.sample_size}"]
    for level, (size, ch) in enumerate(zip(c.level_sizes, c.level_channels)):
        lines.append(f"  level {level}: {size}×{size}, {ch} channels, {c.num_res_blocks} ResBlock(s) down, "
                     f"{c.num_res_blocks + 1} up" + (attn if level in c.attention_levels else ""))
    low = len(c.level_sizes) - 1
    lines.append(f"  middle: {c.level_sizes[low]}×{c.level_sizes[low]}, {c.level_channels[low]} channels, "
                 f"2 ResBlocks" + (attn if low in c.attention_levels else ""))
    cond = ["timestep"] + ([f"{c.num_classes} classes (+ null class {c.num_classes})"] if c.num_classes else [])
    cond += [f"text context of dim {c.context_dim} (cross-attention)"] if c.context_dim else []
    lines.append("  conditioning: " + ", ".join(cond))
    rf, image = receptive_field(c), f"(the image is {c.sample_size} px)"
    if c.attention_levels:
        where = ", ".join(f"{c.level_sizes[lvl]}×{c.level_sizes[lvl]}" for lvl in sorted(c.attention_levels))
        lines += [f"  receptive field {image}:",
                  f"    whole image (self-attention at {where}); convolutions alone: {rf} px"]
    else:
        lines.append(f"  receptive field of the convolutions: {rf} px {image}")
    return "\n".join(part for line in lines for part in _fit(line))
