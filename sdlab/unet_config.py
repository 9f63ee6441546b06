"""The settings of the course's U-Net (`sdlab.unet.UNet`): one frozen dataclass, checked when built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from sdlab.validation import is_integer, number_in_range, one_of, positive_int

__all__ = ["TimeConditioning", "UNetConfig"]

TimeConditioning = Literal["shift", "scale_shift"]


@dataclass(frozen=True)
class UNetConfig:
    """Every setting of a `UNet`; ``UNet(UNetConfig.from_dict(dataclasses.asdict(config)))`` rebuilds it.

    Levels are numbered from 0 (full resolution, ``sample_size`` pixels) down to ``len(channel_mults) - 1``
    (``sample_size / 2**(levels - 1)`` pixels); level i has ``base_channels * channel_mults[i]`` channels.
    ``attention_levels`` lists the levels that get self-attention (and cross-attention when ``context_dim``
    is set); the middle block gets them when the lowest level is listed.
    """

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 4
    num_groups: int = 8
    sample_size: int = 32
    num_classes: int | None = None
    context_dim: int | None = None
    dropout: float = 0.0
    time_conditioning: TimeConditioning = "scale_shift"

    def __post_init__(self) -> None:
        for name, value in self._normalised().items():
            object.__setattr__(self, name, value)
        self._validate()

    def _normalised(self) -> dict[str, Any]:
        """Each setting checked on its own and turned into a plain Python value (numpy ints and floats too).

        Lists (from JSON) become tuples, so configs stay hashable and compare equal; plain ints and floats
        keep ``json.dumps(dataclasses.asdict(config))`` working.
        """
        for name in ("channel_mults", "attention_levels"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise TypeError(f"{name} must be a tuple of ints; got {getattr(self, name)!r}")
        names = ("in_channels", "out_channels", "base_channels", "num_res_blocks", "num_heads", "num_groups",
                 "sample_size")
        out: dict[str, Any] = {name: positive_int(getattr(self, name), name) for name in names}
        if not self.channel_mults:
            raise ValueError("channel_mults must name at least one level; got ()")
        out["channel_mults"] = tuple(positive_int(m, f"channel_mults[{i}]") for i, m in enumerate(self.channel_mults))
        for name in ("num_classes", "context_dim"):
            out[name] = None if getattr(self, name) is None else positive_int(getattr(self, name), name)
        if not all(is_integer(level) for level in self.attention_levels):
            raise ValueError(f"attention_levels must hold level indices in [0, {len(self.channel_mults)}); "
                             f"got {tuple(self.attention_levels)}")
        out["attention_levels"] = tuple(int(level) for level in self.attention_levels)
        out["dropout"] = number_in_range(self.dropout, "dropout", 0, 1, high_open=True, what="a float")
        out["time_conditioning"] = one_of(self.time_conditioning, "time_conditioning", TimeConditioning)
        return out

    def _validate(self) -> None:
        """Check the settings against each other (after ``_normalised``)."""
        if self.base_channels % 2:
            raise ValueError(f"base_channels must be even (it sizes the timestep embedding); got {self.base_channels}")
        for level, channels in enumerate(self.level_channels):
            if channels % self.num_groups:
                raise ValueError(f"level {level} has {channels} channels, not divisible by "
                                 f"num_groups={self.num_groups}")
        levels = len(self.channel_mults)
        for level in self.attention_levels:
            if not 0 <= level < levels:
                raise ValueError(f"attention_levels must hold level indices in [0, {levels}); "
                                 f"got {self.attention_levels}")
            if self.level_channels[level] % self.num_heads:
                raise ValueError(f"attention level {level} has {self.level_channels[level]} channels, "
                                 f"not divisible by num_heads={self.num_heads}")
        if len(set(self.attention_levels)) != len(self.attention_levels):
            raise ValueError(f"attention_levels must not repeat a level; got {self.attention_levels}")
        if self.sample_size % 2 ** (levels - 1):
            raise ValueError(f"sample_size={self.sample_size} must be divisible by 2**(levels - 1) = "
                             f"{2 ** (levels - 1)} for {levels} levels")

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels at each level, from full resolution down."""
        return tuple(self.base_channels * mult for mult in self.channel_mults)

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Feature-map side in pixels at each level, from full resolution down."""
        return tuple(self.sample_size // 2**level for level in range(len(self.channel_mults)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetConfig:
        """Build a config from ``dataclasses.asdict(config)`` (or its JSON); unknown keys are an error."""
        allowed = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown UNetConfig keys {unknown}; allowed keys are {allowed}")
        return cls(**values)

    @classmethod
    def tiny(cls, **overrides: Any) -> UNetConfig:
        """A 16×16 toy (~0.19 M parameters) for tests and quick mode."""
        settings = dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), sample_size=16, num_groups=4)
        return cls(**{**settings, **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> UNetConfig:
        """A deeper 32×32 model: two ResBlocks per level (~1.7 M parameters), e.g. ``small(num_classes=10)``.

        The shipped ``scenes32`` and ``catdog32`` are not this one: they use the defaults, ``UNetConfig()``
        with one ResBlock per level (~1.2 M parameters); ``sd.pretrained.REGISTRY`` has their configs.
        """
        settings = dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(2,))
        return cls(**{**settings, **overrides})
