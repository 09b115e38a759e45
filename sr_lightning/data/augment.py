"""`PairAugment`: random flips and 90-degree rotations applied identically to HR and LR."""
from __future__ import annotations

import numpy as np


class PairAugment:
    """Random flips and 90-degree rotations applied identically to HR and LR (albumentations).

    Flips and rot90 commute with the (symmetric) bicubic kernel, so the augmented LR is still the bicubic of
    the augmented HR. albumentations' Compose has its own RNG; it is reseeded per DataLoader worker (from
    torch's per-worker seed) so workers do not repeat each other's augmentations.
    """

    def __init__(self, hflip: bool = True, vflip: bool = True, rot90: bool = True):
        import albumentations as A

        ops = []
        if hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if vflip:
            ops.append(A.VerticalFlip(p=0.5))
        if rot90:
            ops.append(A.RandomRotate90(p=0.5))
        self.enabled = bool(ops)
        # LR and HR differ in size by design; albumentations would otherwise refuse them as one sample.
        self.compose = A.Compose(ops, additional_targets={"lr": "image"}, is_check_shapes=False, seed=0)

    def seed(self, seed: int) -> None:
        self.compose.set_random_seed(int(seed) % 2**32)

    def __call__(self, hr: np.ndarray, lr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.enabled:
            return hr, lr
        if lr is None:
            return self.compose(image=hr)["image"], None
        out = self.compose(image=hr, lr=lr)
        return out["image"], out["lr"]
