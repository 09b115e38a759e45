"""The model's value range <-> [0, 1], written once.

Generators with a tanh output train on [-1, 1] (`value_range: [-1, 1]`), the rest on [0, 1]. Metrics, the
perceptual loss, image files and the bicubic baseline work in [0, 1]; these two maps are the only place the
conversion is spelled out. Both return the input itself for [0, 1], so the common case costs nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

UNIT = (0.0, 1.0)


def _bounds(value_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = float(value_range[0]), float(value_range[1])
    return lo, hi


def to_unit(x: Tensor, value_range: Sequence[float]) -> Tensor:
    """Map `x` from `value_range` to [0, 1] (not clamped)."""
    lo, hi = _bounds(value_range)
    return x if (lo, hi) == UNIT else (x - lo) / (hi - lo)


def from_unit(x: Tensor, value_range: Sequence[float]) -> Tensor:
    """Map `x` from [0, 1] to `value_range` (not clamped)."""
    lo, hi = _bounds(value_range)
    return x if (lo, hi) == UNIT else x * (hi - lo) + lo
