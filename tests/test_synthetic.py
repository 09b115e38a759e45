"""Dead-leaves images: seeded, scale-invariant, and served by the embedded sample source beside the photos."""
from __future__ import annotations

import numpy as np
import pytest

from sr_lightning.data import SampleSource, SRDataModule
from sr_lightning.data.errors import DatasetError
from sr_lightning.data.synthetic import dead_leaves


def test_dead_leaves_is_seeded_and_covers_the_canvas():
    a, again, other = dead_leaves(64, seed=3), dead_leaves(64, seed=3), dead_leaves(64, seed=4)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, again)
    assert (a != other).any()
    assert (a == 0).all(axis=2).mean() < 0.01  # painted until 99.9% covered: almost no background shows


def _spectrum_slope(grey: np.ndarray) -> float:
    """Slope of log power against log frequency, radially averaged (natural images: about -2)."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    n = grey.shape[0]
    y, x = np.indices(power.shape)
    radius = np.hypot(y - n // 2, x - n // 2).astype(int)
    freqs = np.arange(4, n // 2)
    mean_power = np.array([power[radius == f].mean() for f in freqs])
    return float(np.polyfit(np.log(freqs), np.log(mean_power), 1)[0])


def test_dead_leaves_power_spectrum_falls_like_a_natural_images():
    grey = dead_leaves(256, seed=0).astype(np.float64).mean(axis=2)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256)).astype(np.float64)
    big_discs_only = dead_leaves(256, seed=0, min_radius=20, max_radius=25).astype(np.float64).mean(axis=2)
    assert -2.6 < _spectrum_slope(grey) < -2.0  # scale invariant, like photographs (seeds 0-5: -2.25..-2.32)
    assert _spectrum_slope(big_discs_only) < -2.7  # the check can tell: one disc size is not scale invariant
    assert abs(_spectrum_slope(noise)) < 0.3    # and white noise is flat


def test_sample_source_adds_dead_leaves_after_the_photos():
    records = SampleSource(["chelsea"], dead_leaves=2).records(4)
    assert [r.name for r in records] == ["chelsea", "dead_leaves_0", "dead_leaves_1"]
    assert records[1].hr_size == (512, 512)
    np.testing.assert_array_equal(records[2].load_hr(), dead_leaves(512, seed=1))


def test_dead_leaves_alone_train_through_the_datamodule():
    dm = SRDataModule(SampleSource([], dead_leaves=2), SampleSource(["chelsea"]), scale=4, crop=32,
                      batch_size=4, patches_per_image=2, seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (4, 3, 32, 32) and batch["lr"].shape == (4, 3, 8, 8)
    assert set(batch["name"]) <= {"dead_leaves_0", "dead_leaves_1"}


@pytest.mark.parametrize("names, count", [(["chelsea"], -1), (["chelsea"], True), (["chelsea"], "7"), ([], 0)])
def test_bad_dead_leaves_values_name_the_key(names, count):
    with pytest.raises(DatasetError, match=r"data\.\*\.(dead_leaves|names)"):
        SampleSource(names, dead_leaves=count)


def test_the_quickstart_trains_on_the_photos_and_seven_dead_leaves_images():
    from hydra.utils import instantiate

    from helpers import compose_train

    dm = instantiate(compose_train(["experiment=quickstart"]).data)
    names = [r.name for r in dm.train_source.records(4)]
    assert names[:7] == ["astronaut", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
                         "immunohistochemistry"]
    assert names[7:] == [f"dead_leaves_{i}" for i in range(7)]
    assert dm.patches_per_image * len(names) == 7000  # the epoch length the quickstart's figures were taken with
