"""Procedural training images: the dead-leaves model, generated offline from a seed.

A dead-leaves image is a stack of opaque discs whose radii follow a power law (p(r) ~ r^-3, the scale
invariance of natural images), each in one flat colour drawn uniformly from RGB. It is sharp edges at every
scale and orientation, which the embedded photos have too few of: on them alone every training knob of the
quickstart lands within 0.1 dB on Set5/Set14, and held-out PSNR falls with more steps; mixed 1:1 with them
(`SampleSource(dead_leaves=7)`) the quickstart gains ~0.15 dB at 8 blocks and ~0.3 dB at 16 (measured in
conf/experiment/quickstart.yaml). The model: Achddou et al., "Synthetic images as a regularity prior for
image restoration neural networks" (SSVM 2021).
"""
from __future__ import annotations

import functools

import numpy as np

from sr_lightning.data.records import ImageRecord


def dead_leaves(size: int = 512, seed: int = 0, min_radius: float = 1.0, max_radius: float = 150.0,
                supersample: int = 2) -> np.ndarray:
    """One (size, size, 3) uint8 dead-leaves image; the same seed always gives the same pixels.

    Discs are painted front to back onto the still-uncovered pixels until 99.9% are covered (the last few
    pixels stay black). Rendering at `supersample`x and box-averaging down anti-aliases the edges, so the
    HR image has no staircase the LR could not explain.
    """
    rng = np.random.default_rng(seed)
    side = size * supersample
    image = np.zeros((side, side, 3), np.float32)
    uncovered = np.ones((side, side), bool)
    rows, cols = np.arange(side, dtype=np.float64)[:, None], np.arange(side, dtype=np.float64)[None, :]
    left = side * side
    a, b = min_radius ** -2, max_radius ** -2
    while left > 0.001 * side * side:
        radius = (a - rng.random() * (a - b)) ** -0.5 * supersample  # inverse CDF of p(r) ~ r^-3
        cy, cx = rng.uniform(-radius, side + radius, 2)
        y0, y1 = max(0, int(cy - radius)), min(side, int(cy + radius) + 1)
        x0, x1 = max(0, int(cx - radius)), min(side, int(cx + radius) + 1)
        colour = rng.integers(0, 256, 3)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = rows[y0:y1] - cy, cols[:, x0:x1] - cx
        disc = (dy * dy + dx * dx <= radius * radius) & uncovered[y0:y1, x0:x1]
        painted = np.count_nonzero(disc)
        if painted:
            image[y0:y1, x0:x1][disc] = colour
            uncovered[y0:y1, x0:x1][disc] = False
            left -= painted
    image = image.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)


def dead_leaves_records(count: int, size: int = 512, seed: int = 0) -> list[ImageRecord]:
    """`count` dead-leaves images of `size` px (seeds `seed`, `seed + 1`, ...), generated when first loaded."""
    return [ImageRecord(f"dead_leaves_{seed + i}", functools.partial(dead_leaves, size, seed + i), None, (size, size))
            for i in range(count)]
