"""uint8 image arrays -> float tensors in the model's value range."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_tensor(image: np.ndarray, value_range: Sequence[float] = (0.0, 1.0)) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 in value_range.

    The one value-range map outside `ops.value_range`: uint8 -> range is fused into one in-place scale and
    shift per worker item, instead of `from_unit(t / 255)` and its two extra full-size tensors.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if (lo, hi) == (0.0, 1.0):
        return t.div_(255.0)
    return t.mul_((hi - lo) / 255.0).add_(lo)

