"""The embedded default data set: real photographs that ship inside the scikit-image wheel.

All fourteen load offline from files inside the installed package (checked with scikit-image 0.26: astronaut,
coffee, chelsea from PNG; rocket, hubble_deep_field, retina from JPEG; immunohistochemistry from `ihc.png`;
stereo_motorcycle from `motorcycle_left.png`; six greyscale photos camera, moon, coins, grass, gravel, brick), so
`python -m sr_lightning train` works on a fresh machine without a download. They are few and small (about 20 MB
decoded in all), so they are always cached in memory.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from sr_lightning.config import is_int
from sr_lightning.data.errors import DatasetError
from sr_lightning.data.imageio import ImageReadError, to_rgb_uint8
from sr_lightning.data.records import ImageRecord
from sr_lightning.data.synthetic import dead_leaves_records

# name -> (H, W) of the bundled file, and a note of what it shows (to choose splits).
SAMPLE_IMAGES: dict[str, tuple[tuple[int, int], str]] = {
    "astronaut": ((512, 512), "portrait, fabric, flag"),
    "coffee": ((400, 600), "cup on a table"),
    "chelsea": ((300, 451), "cat fur"),
    "rocket": ((427, 640), "launch pad, sky"),
    "stereo_motorcycle": ((500, 741), "motorcycle, left view of the stereo pair"),
    "hubble_deep_field": ((872, 1000), "galaxies on black"),
    "retina": ((1411, 1411), "fundus photograph"),
    "immunohistochemistry": ((512, 512), "stained tissue"),
    # Greyscale photographs, served as RGB with three equal channels (`data.train.names=[..., camera, brick]`).
    "camera": ((512, 512), "grey: man with a camera, grass, sky"),
    "moon": ((512, 512), "grey: lunar surface"),
    "coins": ((303, 384), "grey: coins on a table"),
    "grass": ((512, 512), "grey: grass texture"),
    "gravel": ((512, 512), "grey: gravel texture"),
    "brick": ((512, 512), "grey: brick wall"),
}
DEFAULT_TRAIN = ("astronaut", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
                 "immunohistochemistry")
DEFAULT_VAL = ("chelsea",)


def load_sample(name: str) -> np.ndarray:
    """One bundled photo as (H, W, 3) uint8."""
    if name not in SAMPLE_IMAGES:
        raise DatasetError(f"data.*.names: unknown sample image {name!r}; choose from {', '.join(SAMPLE_IMAGES)}")
    try:
        import skimage.data

        image = getattr(skimage.data, name)()
    except Exception as exc:  # a stripped install (or a future skimage that fetches it) must say so clearly
        raise ImageReadError(
            f"skimage.data.{name}", f"the bundled sample photo cannot be loaded ({type(exc).__name__}: {exc})",
            "Reinstall scikit-image (`pip install --force-reinstall scikit-image`), or train on your own images "
            "with `data=folder data.hr_dir=PATH`",
        ) from exc
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    return to_rgb_uint8(np.asarray(image), f"skimage.data.{name}")


class SampleSource:
    """Records for scikit-image's bundled photos (`names` chooses the split), plus `dead_leaves` synthetic images.

    `dead_leaves=N` adds N procedural dead-leaves images (`synthetic.dead_leaves`, seeds 0..N-1, 512 px), which
    need no file either; the quickstart trains on the photos and 7 of them (why: conf/experiment/quickstart.yaml).
    """

    paired = False

    def __init__(self, names: Sequence[str] = DEFAULT_TRAIN, dead_leaves: int = 0):
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in SAMPLE_IMAGES]
        if unknown:
            raise DatasetError(f"data.*.names: unknown sample image(s) {unknown}; choose from {', '.join(SAMPLE_IMAGES)}")
        if not is_int(dead_leaves) or dead_leaves < 0:
            raise DatasetError(f"data.*.dead_leaves: got {dead_leaves!r}; allowed: an integer >= 0 (0: none)")
        if not names and not dead_leaves:
            raise DatasetError(f"data.*.names is empty; choose from {', '.join(SAMPLE_IMAGES)}")
        self.names, self.dead_leaves = names, dead_leaves
        self.dataset = "sample"

    def __repr__(self) -> str:
        extra = f", dead_leaves={self.dead_leaves}" if self.dead_leaves else ""
        return f"SampleSource(names={self.names}{extra})"

    def records(self, scale: int, split: str = "train") -> list[ImageRecord]:
        photos = [ImageRecord(name, functools.partial(load_sample, name), None, SAMPLE_IMAGES[name][0])
                  for name in self.names]
        return photos + dead_leaves_records(self.dead_leaves)
