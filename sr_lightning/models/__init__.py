"""Generator and discriminator backbones: plain ``nn.Module``s selected by ``conf/gen`` and ``conf/disc``.

Configs name classes directly (``_target_: sr_lightning.models.srresnet.SRResNet``): there is no registry.

* ``count_parameters(module)`` -> number of trainable parameters (what the CLI prints for G and D)
* ``final_output(out)`` -> the full-scale image of a generator's output (LapSRN returns every pyramid level)
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .dcgan_sr import DCGANSRGenerator
from .discriminators import PatchGANDiscriminator, UNetDiscriminatorSN, VGGStyleDiscriminator
from .interpolation import Bicubic, Bilinear, Nearest, NeighbourAverage
from .lapsrn import LapSRN
from .rrdbnet import RRDBNet
from .srresnet import MSRResNet, SRResNet

__all__ = [
    "count_parameters", "final_output",
    "SRResNet", "MSRResNet", "RRDBNet", "SpandrelGenerator", "LapSRN", "DCGANSRGenerator",
    "Bicubic", "Bilinear", "Nearest", "NeighbourAverage",
    "VGGStyleDiscriminator", "PatchGANDiscriminator", "UNetDiscriminatorSN",
]

def __getattr__(name: str):
    # spandrel imports every architecture it knows (~2 s, ~170 MB): only the runs that use one pay for it, not
    # every eval/upscale of our own nets (upscale's peak memory counts).
    if name == "SpandrelGenerator":
        from .spandrel_arch import SpandrelGenerator

        return SpandrelGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def count_parameters(module: nn.Module | None) -> int:
    """Number of trainable parameters (0 for ``None`` and for the interpolation baselines)."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def final_output(out: Tensor | Sequence[Tensor]) -> Tensor:
    """The full-scale result of a generator: the last pyramid level of a list/tuple, else the tensor."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Sequence) and len(out) > 0 and isinstance(out[-1], Tensor):
        return out[-1]
    raise TypeError(f"final_output: expected a Tensor or a non-empty list/tuple of Tensors, got {type(out).__name__}")
