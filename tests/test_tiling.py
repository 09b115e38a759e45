"""Tiled inference: equal to the untiled result inside every tile, no seam, bounded memory."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sr_lightning.inference import tiling
from sr_lightning.inference.tiling import auto_tile_size, iter_tiled_rows, plan_axis, tiled_forward
from sr_lightning.models import final_output
from sr_lightning.models.lapsrn import LapSRN
from sr_lightning.models.rrdbnet import RRDBNet
from sr_lightning.models.srresnet import SRResNet

GREY_LEVEL = 1.0 / 255.0


def _tiny_srresnet(scale: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SRResNet(scale=scale, blocks=1, channels=8).eval()


def _single_coverage(plan, scale: int) -> torch.Tensor:
    """Output pixels (along one axis) that exactly one tile covers: the tiles' interiors."""
    count = torch.zeros(plan.length * scale, dtype=torch.int64)
    for start in plan.starts:
        count[start * scale:(start + plan.size) * scale] += 1
    return count == 1


@pytest.mark.parametrize("length,tile,overlap", [(70, 32, 8), (100, 40, 19), (512, 256, 16), (33, 32, 4),
                                                 (97, 24, 10), (10, 64, 4)])
def test_plan_covers_the_axis_with_at_least_the_overlap(length, tile, overlap):
    plan = plan_axis(length, tile, overlap)
    assert plan.size <= max(tile, 1) or plan.starts == (0,)
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.size == length
    for i in range(1, len(plan.starts)):
        assert plan.overlap_before(i) >= overlap
    if len(plan.starts) > 1:
        # evenly spread: no tile is clamped onto its neighbour (the waste this planner avoids)
        steps = [b - a for a, b in zip(plan.starts, plan.starts[1:])]
        assert max(steps) - min(steps) <= 1
        assert len(plan.starts) == math.ceil((length - overlap) / (tile - overlap))


def test_windows_are_a_partition_of_unity():
    """A network without border effects (nearest upsampling) must come out identical everywhere."""
    net = nn.Upsample(scale_factor=3, mode="nearest")
    x = torch.rand(1, 3, 41, 57)
    for window in ("cosine", "linear"):
        out = tiled_forward(net, x, 3, tile=16, tile_overlap=4, window=window)
        assert torch.allclose(out, net(x), atol=1e-6), window


@pytest.mark.parametrize("make_net,scale,channels", [
    (lambda: _tiny_srresnet(2), 2, 3),
    (lambda: (torch.manual_seed(1), RRDBNet(scale=4, blocks=1, channels=8, growth=4).eval())[1], 4, 3),
    (lambda: (torch.manual_seed(2), LapSRN(scale=4, in_channels=1, channels=8, blocks=1).eval())[1], 4, 1),
])
def test_tiled_equals_untiled_inside_every_tile(make_net, scale, channels):
    net = make_net()
    torch.manual_seed(3)
    x = torch.rand(1, channels, 61, 75)
    tile, overlap = 32, 12
    with torch.inference_mode():
        reference = final_output(net(x))
    out = tiled_forward(net, x, scale, tile=tile, tile_overlap=overlap)
    assert out.shape == reference.shape
    rows, cols = plan_axis(61, tile, overlap), plan_axis(75, tile, overlap)
    assert len(rows.starts) > 1 and len(cols.starts) > 1  # really tiled in both directions
    interior = _single_coverage(rows, scale)[:, None] & _single_coverage(cols, scale)[None, :]
    diff = (out - reference).abs().amax(dim=(0, 1))
    assert interior.float().mean() > 0.2
    assert diff[interior].max() <= GREY_LEVEL
    # In the cross-fades only small weights fall on pixels near a cut: still close everywhere.
    assert diff.max() < 10 * GREY_LEVEL


class SmoothSR(nn.Module):
    """Bilinear x2 then two Gaussian blurs with zero padding: a smooth image gives a smooth output, while every
    tile border darkens (strong border effects, receptive field larger than the tiles' context margin)."""

    def __init__(self, scale: int = 2, size: int = 9, sigma: float = 2.0):
        super().__init__()
        self.up = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)
        g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma ** 2))
        kernel = (g[:, None] * g[None, :]) / g.sum() ** 2
        self.blurs = nn.ModuleList()
        for _ in range(2):
            conv = nn.Conv2d(3, 3, size, padding=size // 2, groups=3, bias=False)
            conv.weight.data[:] = kernel
            self.blurs.append(conv)

    def forward(self, x):
        x = self.up(x)
        for blur in self.blurs:
            x = blur(x)
        return x


def _naive_tiles(net, x, tile):
    """Hard-stitched tiles without overlap: what seams look like (the test below must be able to fail)."""
    rows = []
    for y in range(0, x.shape[2], tile):
        rows.append(torch.cat([final_output(net(x[:, :, y:y + tile, c:c + tile]))
                               for c in range(0, x.shape[3], tile)], dim=3))
    return torch.cat(rows, dim=2)


def _step_sizes(img: torch.Tensor, axis: int) -> torch.Tensor:
    """Largest |difference between neighbouring pixels| across each position of the axis, over the rest."""
    d = img.diff(dim=axis).abs()
    other = tuple(i for i in range(img.ndim) if i != axis)
    return d.amax(dim=other)


def _ramp_image(height: int, width: int) -> torch.Tensor:
    """A smooth image whose gradient is the same everywhere, so "a larger step at a cut" is well defined."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([0.15 + 0.35 * xx + 0.3 * yy + 0.05 * c for c in range(3)])[None]


def test_no_seam_on_a_smooth_image():
    scale, tile, overlap, size = 2, 32, 10, 64
    net = SmoothSR(scale).eval()
    x = _ramp_image(size, size)
    with torch.inference_mode():
        naive = _naive_tiles(net, x, tile)
    tiled = tiled_forward(net, x, scale, tile=tile, tile_overlap=overlap)
    plan = plan_axis(size, tile, overlap)
    assert len(plan.starts) == 3

    def grey_steps(img, axis):  # in 8-bit grey levels, as the written file shows it
        return _step_sizes((img.clamp(0, 1) * 255).round(), axis)

    margin = 8 * scale  # the image's own border (zero padding) is neither a cut nor "elsewhere"
    for axis in (2, 3):
        near_cut = torch.zeros(size * scale - 1, dtype=torch.bool)
        for i in range(1, len(plan.starts)):  # the whole overlap around every cut
            near_cut[plan.starts[i] * scale - 1:(plan.starts[i - 1] + plan.size) * scale] = True
        elsewhere = ~near_cut
        elsewhere[:margin] = elsewhere[-margin:] = False
        steps = grey_steps(tiled, axis)
        assert steps[near_cut].max() <= steps[elsewhere].max(), f"seam along axis {axis}"
        # The same measure flags hard-stitched tiles (cut at `tile`), so the assertion above is not vacuous.
        naive_steps = grey_steps(naive, axis)
        away = torch.ones_like(elsewhere)
        away[tile * scale - margin:tile * scale + margin] = False
        away[:margin] = away[-margin:] = False
        at_cut = naive_steps[tile * scale - margin:tile * scale + margin]
        assert at_cut.max() > 3 * naive_steps[away].max()


def test_rows_are_streamed_and_no_layer_sees_the_whole_image():
    """Memory: output comes out in strips, and every activation is the size of one tile, not of the image."""
    scale, tile, overlap = 2, 24, 6
    net = _tiny_srresnet(scale)
    largest = [0]

    def hook(_m, _i, out):
        largest[0] = max(largest[0], out.shape[-2] * out.shape[-1])

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    x = torch.rand(1, 3, 80, 90)
    try:
        blocks = list(iter_tiled_rows(net, x, scale, tile, overlap))
    finally:
        for h in handles:
            h.remove()
    plan = plan_axis(80, tile, overlap)
    assert len(blocks) == len(plan.starts) > 2
    assert all(b.shape[2] <= tile * scale for _, b in blocks)
    assert [r for r, _ in blocks] == sorted(r for r, _ in blocks)
    assert sum(b.shape[2] for _, b in blocks) == 80 * scale
    assert largest[0] <= (tile * scale) ** 2 < (80 * scale) * (90 * scale) // 4


def test_auto_tile_follows_free_memory(monkeypatch):
    net = _tiny_srresnet(2)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda device="cpu": 64 << 20)
    small = auto_tile_size(net, 3, 2, overlap=8)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda device="cpu": 64 << 30)
    large = auto_tile_size(net, 3, 2, overlap=8)
    assert tiling.AUTO_TILE_MIN <= small < large <= tiling.AUTO_TILE_MAX
    assert small % 8 == 0 and large % 8 == 0
    # and tile='auto' runs end to end with it
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda device="cpu": 1 << 20)
    x = torch.rand(1, 3, 150, 40)
    out = tiled_forward(net, x, 2, tile="auto", tile_overlap=8)
    assert out.shape == (1, 3, 300, 80)


def test_auto_tile_on_cpu_is_capped_whatever_the_free_memory(monkeypatch):
    """Tiles share host memory with the full-size result: plenty of free memory must not mean huge tiles."""
    torch.manual_seed(0)
    net = SRResNet(scale=4, blocks=1, channels=64).eval()  # 64 maps at 4x: the cap bites below AUTO_TILE_MAX
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda device="cpu": 256 << 30)
    plenty = auto_tile_size(net, 3, 4, overlap=16)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda device="cpu": 2 * tiling.AUTO_CPU_BUDGET_BYTES)
    assert plenty == auto_tile_size(net, 3, 4, overlap=16) < tiling.AUTO_TILE_MAX


def test_available_memory_reads_proc_meminfo():
    assert tiling.available_memory_bytes("cpu") > 16 << 20


@pytest.mark.parametrize("kwargs,match", [
    ({"tile": 20, "tile_overlap": 10}, "tile"),
    ({"tile": "big"}, "tile"),
    ({"tile_overlap": -1}, "tile_overlap"),
    ({"window": "hann"}, "window"),
])
def test_bad_arguments_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiled_forward(_tiny_srresnet(2), torch.rand(1, 3, 40, 40), 2, **kwargs)


def test_wrong_scale_is_reported():
    with pytest.raises(ValueError, match="scale"):
        tiled_forward(_tiny_srresnet(2), torch.rand(1, 3, 40, 40), 4, tile=24, tile_overlap=4)
