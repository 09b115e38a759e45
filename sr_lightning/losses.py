"""Training losses: pixel, perceptual (VGG19 features) and adversarial, and how `loss:` becomes terms.

Contract (docs/ARCHITECTURE.md, "Losses"): `loss:` is a named mapping; each entry is a Hydra target plus a
``weight`` that belongs to the sum, not to the loss (:func:`build_term` removes it before building). A loss
is any callable ``f(sr, hr)`` returning the *unweighted* scalar, e.g. ``torch.nn.MSELoss``; the module adds
``weight * value`` and logs the value as ``train/g_<name>``. Two optional class attributes tell the module
what a loss wants instead of the final output in the model's value range:

* ``accepts_pyramid = True``: gets the generator's raw output (LapSRN's list of pyramid levels);
* ``expects_unit_range = True``: gets ``sr`` and ``hr`` mapped to [0, 1] (the VGG saw ImageNet in [0, 1]).

The entry ``adversarial`` is the one exception: an :class:`AdversarialLoss` that also trains D.

All losses are computed in float32 even when the networks run under bf16/fp16 autocast: the
reductions are cheap and low-precision sums of many small squared errors lose digits.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr_lightning.errors import UserError
from sr_lightning.ops.imresize import imresize
from sr_lightning.ops.value_range import to_unit

__all__ = [
    "AdversarialLoss",
    "MissingWeightsError",
    "PerceptualLoss",
    "PixelLoss",
    "WeightedTerm",
    "build_term",
    "generator_terms",
    "vgg19_layer_names",
    "vgg19_weights_url",
]

log = logging.getLogger(__name__)

# Seconds a download may wait for the server; an offline machine must fail fast, not hang a run.
DOWNLOAD_TIMEOUT_S = 30.0


class MissingWeightsError(UserError, RuntimeError):
    """Pretrained weights a loss needs are unavailable or unreadable (raised at construction)."""


# --------------------------------------------------------------------------------------------------
# Pixel loss
# --------------------------------------------------------------------------------------------------
class PixelLoss(nn.Module):
    """L1, MSE or Charbonnier distance between ``sr`` and ``hr`` (mean over all elements).

    Charbonnier (LapSRN): ``sqrt((sr - hr)^2 + eps^2)``, a differentiable L1; ``eps`` = 1e-3 as in
    the paper. ``eps`` is ignored by the other criteria.

    ``sr`` may be a list of pyramid outputs (LapSRN returns x2, x4, ... up to the full scale). Each
    level is compared with ``hr`` downscaled to that level's size by MATLAB-compatible bicubic
    ``imresize`` (how LapSRN builds its multi-scale targets) and the per-level means are **summed**,
    as LapSRN sums its loss over pyramid levels: every level counts equally, whatever its pixel count.
    """

    CRITERIA = ("l1", "mse", "charbonnier")
    accepts_pyramid = True  # the module passes LapSRN's list of levels, not only the last one

    def __init__(self, criterion: str = "l1", eps: float = 1e-3) -> None:
        super().__init__()
        if criterion not in self.CRITERIA:
            raise ValueError(f"PixelLoss criterion must be one of {self.CRITERIA}, got {criterion!r}")
        if criterion == "charbonnier" and not eps > 0:
            raise ValueError(f"PixelLoss eps must be > 0 for the Charbonnier criterion, got {eps}")
        self.criterion = criterion
        self.eps = float(eps)

    def forward(self, sr: Tensor | Sequence[Tensor], hr: Tensor) -> Tensor:
        if isinstance(sr, (list, tuple)):
            if not sr:
                raise ValueError("PixelLoss got an empty list of pyramid outputs")
            return sum(self.distance(level, self._target_for(level, hr)) for level in sr)
        return self.distance(sr, hr)

    def distance(self, sr: Tensor, hr: Tensor) -> Tensor:
        """The criterion between two tensors of the same shape."""
        if sr.shape != hr.shape:
            raise ValueError(f"PixelLoss: output shape {tuple(sr.shape)} != target shape {tuple(hr.shape)}")
        sr, hr = sr.float(), hr.float()
        if self.criterion == "l1":
            return F.l1_loss(sr, hr)
        if self.criterion == "mse":
            return F.mse_loss(sr, hr)
        return torch.sqrt((sr - hr).square() + self.eps**2).mean()

    @staticmethod
    def _target_for(level: Tensor, hr: Tensor) -> Tensor:
        size = tuple(level.shape[-2:])
        if size == tuple(hr.shape[-2:]):
            return hr
        if size[0] > hr.shape[-2] or size[1] > hr.shape[-1]:
            raise ValueError(
                f"PixelLoss: pyramid level of size {size} is larger than the target {tuple(hr.shape[-2:])}"
            )
        # The target is data, not a function of the parameters: no gradient through the resize.
        with torch.no_grad():
            return imresize(hr.float(), size=size)


# --------------------------------------------------------------------------------------------------
# Perceptual loss (VGG19 features)
# --------------------------------------------------------------------------------------------------
def vgg19_weights_url() -> str:
    """Where torchvision downloads VGG19 ImageNet weights from. Tests monkeypatch this function."""
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1.url


def _vgg19_cfg() -> list:
    from torchvision.models.vgg import cfgs

    return list(cfgs["E"])  # 64, 64, 'M', 128, 128, 'M', 256 x4, 'M', 512 x4, 'M', 512 x4, 'M'


def vgg19_layer_names() -> list[str]:
    """Names of ``vgg19().features[i]`` in order: conv{block}_{i}, relu{block}_{i}, pool{block}."""
    names, block, conv = [], 1, 0
    for entry in _vgg19_cfg():
        if entry == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def _vgg19_features_up_to(last_index: int) -> nn.Sequential:
    """torchvision's ``vgg19().features[: last_index + 1]`` with the same layer indices (so torchvision
    state dict keys load as-is), built without the deeper layers and the 100M-parameter classifier."""
    from torchvision.models.vgg import make_layers

    cfg, layers = [], 0
    for entry in _vgg19_cfg():
        if layers > last_index:
            break
        cfg.append(entry)
        layers += 1 if entry == "M" else 2  # conv + ReLU per channel entry
    return make_layers(cfg, batch_norm=False)[: last_index + 1]


def _init_like_torchvision(features: nn.Sequential) -> None:
    # torchvision's VGG initialisation (He, fan-out): unlike nn.Conv2d's default it keeps activations
    # from vanishing 16 layers deep, so random features still give losses and gradients of usable size.
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


# ImageNet statistics the torchvision VGG19 weights were trained with (inputs in [0, 1]).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torchvision names its files <name>-<sha256 prefix>.pth


def _drop_feature_params_from_state_dict(module, state_dict, prefix, local_metadata) -> None:
    # The VGG is a frozen, externally sourced network: keeping its ~80 MB out of every checkpoint
    # (last/best/EMA) is what makes checkpoints of perceptual-loss runs as small as the others.
    for key in [k for k in state_dict if k.startswith(prefix + "features.")]:
        del state_dict[key]


def _fill_feature_params_on_load(module, state_dict, prefix, *args) -> None:
    # Counterpart of the hook above: checkpoints do not carry the VGG, so loading one must neither
    # report its parameters as missing nor overwrite the pretrained weights loaded at construction.
    for key, value in module.features.state_dict(prefix=prefix + "features.").items():
        state_dict.setdefault(key, value)


class PerceptualLoss(nn.Module):
    """Distance between VGG19 feature maps of ``sr`` and ``hr`` (inputs in ``[0, 1]``).

    Args:
        layers: ``{layer name: weight}``; the loss is the weighted sum of the per-layer distances.
            ``conv5_4`` is the last conv *before* its ReLU (ESRGAN: denser, signed features);
            ``relu5_4`` is after it (SRGAN's "VGG54"). The network is cut after the deepest layer.
        criterion: ``l1`` or ``mse`` (mean over the feature map).
        weights: ``imagenet`` (torchvision's VGG19_Weights.IMAGENET1K_V1: read from the torch hub
            cache, downloaded there when missing), a path to a VGG19 state dict (torchvision's
            ``vgg19-*.pth``, or just its ``features``), or ``random`` (tests only; never a fallback).
            Unavailable weights raise :class:`MissingWeightsError` here, before any training.
        use_input_norm: normalise inputs with the ImageNet mean/std the weights expect.
        rescale: factor applied to both feature maps before the distance. SRGAN divides VGG
            features by 12.75 so that the VGG loss has the scale of the pixel MSE:
            ``rescale=0.0784313725`` (= 1/12.75; the MSE then shrinks by 12.75^2).
        weights_url: download URL for ``imagenet`` (default :func:`vgg19_weights_url`); the cache
            file name is the URL's last path component.
        weights_path: alias of ``weights=<path>`` (``loss.perceptual.weights_path=...``); wins when set.

    One-channel inputs (Y-channel models) are repeated to three channels. The feature network is
    frozen: no parameter requires grad and it stays in eval mode whatever ``train()`` is called with.
    Its parameters are not part of ``state_dict()`` (see the hooks above).
    """

    CRITERIA = ("l1", "mse")
    expects_unit_range = True  # ImageNet statistics: the module maps sr/hr from the model's range first

    def __init__(
        self,
        layers: Mapping[str, float],
        criterion: str = "l1",
        weights: str = "imagenet",
        use_input_norm: bool = True,
        rescale: float = 1.0,
        weights_url: str | None = None,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        if criterion not in self.CRITERIA:
            raise ValueError(f"PerceptualLoss criterion must be one of {self.CRITERIA}, got {criterion!r}")
        layers = {str(name): float(w) for name, w in dict(layers or {}).items()}
        if not layers:
            raise ValueError("PerceptualLoss needs at least one layer, e.g. layers={conv5_4: 1.0}")

        names = vgg19_layer_names()
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise ValueError(f"PerceptualLoss: unknown VGG19 layer(s) {unknown}; valid names: {', '.join(names)}")
        deepest = max(names.index(name) for name in layers)
        features = _vgg19_features_up_to(deepest)
        for layer in features:
            if isinstance(layer, nn.ReLU):
                # torchvision's ReLUs are in-place: they would overwrite a tapped conv output (conv5_4).
                layer.inplace = False

        state_dict, source = _resolve_vgg19_weights(weights_path or weights, weights_url)
        if state_dict is None:
            _init_like_torchvision(features)
        else:
            _load_feature_weights(features, state_dict, source)

        self.features = features.requires_grad_(False).eval()
        self.layer_weights = layers
        self._taps = {names.index(name): name for name in layers}
        self.criterion = criterion
        self.use_input_norm = bool(use_input_norm)
        self.rescale = float(rescale)
        self.weights_source = source
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_state_dict_post_hook(_drop_feature_params_from_state_dict)
        self.register_load_state_dict_pre_hook(_fill_feature_params_on_load)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # a fixed feature extractor: never switch to training behaviour
        return self

    def extract(self, x: Tensor) -> dict[str, Tensor]:
        """Feature maps of the requested layers for an image batch in ``[0, 1]``."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"PerceptualLoss expects (N, 3, H, W) or (N, 1, H, W) images, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                out[self._taps[index]] = x
        return out

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        sr_features = self.extract(sr)
        with torch.no_grad():  # the target side needs no graph
            hr_features = self.extract(hr.detach())
        distance = F.l1_loss if self.criterion == "l1" else F.mse_loss
        total = sr.new_zeros((), dtype=torch.float32)
        for name, layer_weight in self.layer_weights.items():
            f_sr = sr_features[name].float() * self.rescale
            f_hr = hr_features[name].float() * self.rescale
            total = total + layer_weight * distance(f_sr, f_hr)
        return total


def _cache_file_for(url: str) -> Path:
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _resolve_vgg19_weights(weights, url: str | None) -> tuple[dict | None, str]:
    """``(state_dict or None for random init, description of the source)``."""
    if weights == "random":
        return None, "random"
    if weights == "imagenet":
        url = url or vgg19_weights_url()
        cache = _cache_file_for(url)
        if not cache.is_file():
            try:
                _download(url, cache)
            except Exception as exc:  # no network, refused, unwritable cache, bad checksum, ...
                raise MissingWeightsError(
                    f"Pretrained VGG19 weights for the perceptual loss are missing: {cache} does not exist "
                    f"and downloading {url} failed ({_short(exc)}). Either copy torchvision's VGG19 file "
                    f"there (it is downloaded automatically when online), or pass a local copy with "
                    f"`loss.perceptual.weights=/path/to/vgg19.pth`, or train without a perceptual loss, "
                    f"e.g. `model=srgan_mse` (or `loss=srgan_mse`)."
                ) from exc
        return _read_state_dict(cache), str(cache)
    if isinstance(weights, (str, os.PathLike)) and str(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"VGG19 weights file {path} (loss.perceptual.weights) does not exist. Point "
                f"`loss.perceptual.weights=` at a torchvision VGG19 state dict, use `weights=imagenet` "
                f"(torch hub cache / download), or train without a perceptual loss, e.g. `model=srgan_mse`."
            )
        return _read_state_dict(path), str(path)
    raise ValueError(f"PerceptualLoss weights must be 'imagenet', 'random' or a file path, got {weights!r}")


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` into ``dst`` atomically; verify the sha256 prefix in torchvision file names."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")  # one per process: DDP ranks may race
    log.info("Downloading VGG19 weights %s -> %s", url, dst)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(part, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        expected = _HASH_IN_NAME.search(dst.name)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise RuntimeError(
                f"checksum mismatch: sha256 starts with {digest.hexdigest()[:len(expected.group(1))]}, "
                f"file name says {expected.group(1)}"
            )
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)


def _read_state_dict(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MissingWeightsError(
            f"VGG19 weights file {path} cannot be read ({_short(exc)}): it is corrupt or not a PyTorch "
            f"state dict. Delete it (weights=imagenet downloads it again when online) or point "
            f"`loss.perceptual.weights=` at a good copy."
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise MissingWeightsError(f"VGG19 weights file {path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def _load_feature_weights(features: nn.Sequential, state_dict: dict, source: str) -> None:
    """Load ``features.N.*`` (a full torchvision VGG19) or ``N.*`` (features only) keys."""
    stripped = {k.removeprefix("features."): v for k, v in state_dict.items()}
    wanted = features.state_dict().keys()
    missing = [k for k in wanted if k not in stripped]
    if missing:
        raise MissingWeightsError(
            f"VGG19 weights file {source} lacks {len(missing)} parameter(s) the perceptual loss needs "
            f"(first: features.{missing[0]}); it is not a torchvision VGG19 state dict."
        )
    try:
        features.load_state_dict({k: stripped[k] for k in wanted})
    except RuntimeError as exc:
        raise MissingWeightsError(
            f"VGG19 weights file {source} does not fit torchvision's VGG19 ({_short(exc)})."
        ) from exc


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Adversarial loss
# --------------------------------------------------------------------------------------------------
class AdversarialLoss(nn.Module):
    """GAN objectives for the generator and the discriminator.

    ``kind``:
      * ``vanilla`` (SRGAN): binary cross-entropy; D: real -> 1, fake -> 0; G: fake -> 1
        (the non-saturating form).
      * ``lsgan``: squared error to the same targets (LSGAN's a=0, b=c=1; its 1/2 factors are left
        to the weight).
      * ``ragan`` (ESRGAN, relativistic average): with ``C_r = real - mean(fake)`` and
        ``C_f = fake - mean(real)``, D: BCE(C_r, 1) and BCE(C_f, 0); G the reverse, BCE(C_r, 0) and
        BCE(C_f, 1), so G also learns from the real images. Each returns the mean of its two terms
        (ESRGAN's code, which the 5e-3 weight was tuned with). G uses detached real logits, as ESRGAN.
      * ``hinge``: D: mean(relu(1 - real)) + mean(relu(1 + fake)); G: -mean(fake).

    ``label_smoothing`` (one-sided, Salimans et al. 2016): D's real target becomes ``1 - s``
    (vanilla, lsgan, ragan). ``logits=False`` is for a discriminator whose output already went
    through a sigmoid (the seed-000 D): BCE is then taken on clamped probabilities (vanilla, lsgan).
    The ``weight`` of ``loss.adversarial`` weighs the generator's loss only; D's loss is not weighted.
    For logging, :meth:`discriminator_terms` gives the real and fake parts of D's loss.
    """

    KINDS = ("vanilla", "lsgan", "ragan", "hinge")
    _PROB_EPS = 1e-7  # clamps probabilities away from 0/1 so log() stays finite

    def __init__(
        self,
        kind: str = "vanilla",
        label_smoothing: float = 0.0,
        logits: bool = True,
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"AdversarialLoss kind must be one of {self.KINDS}, got {kind!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"AdversarialLoss label_smoothing must be in [0, 1), got {label_smoothing}")
        if kind == "hinge" and label_smoothing:
            raise ValueError("AdversarialLoss: label_smoothing has no meaning for the hinge loss; set it to 0")
        if not logits and kind in ("ragan", "hinge"):
            raise ValueError(f"AdversarialLoss kind={kind!r} needs raw logits; a probability-output D "
                             f"(logits=false) works with kind=vanilla or lsgan")
        self.kind = kind
        self.label_smoothing = float(label_smoothing)
        self.logits = bool(logits)

    @property
    def needs_real_for_generator(self) -> bool:
        """Whether :meth:`generator_loss` reads the real logits (only the relativistic ``ragan``): the others
        let the training step skip D's forward pass on the HR batch during G's update."""
        return self.kind == "ragan"

    def forward(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        """Same as :meth:`generator_loss` (G's adversarial term, unweighted)."""
        return self.generator_loss(real_logits, fake_logits)

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        """Unweighted adversarial loss of G. ``real_logits`` is only used (detached) by ``ragan``."""
        fake = fake_logits.float()
        if self.kind == "vanilla":
            return self._bce(fake, 1.0)
        if self.kind == "lsgan":
            return self._squared(fake, 1.0)
        if self.kind == "hinge":
            return -fake.mean()
        if real_logits is None:
            raise ValueError("AdversarialLoss(kind='ragan').generator_loss needs the real logits")
        real = real_logits.detach().float()
        return 0.5 * (self._bce(real - fake.mean(), 0.0) + self._bce(fake - real.mean(), 1.0))

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Unweighted loss of D (real part + fake part)."""
        real_term, fake_term = self.discriminator_terms(real_logits, fake_logits)
        return real_term + fake_term

    def discriminator_terms(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(real part, fake part)`` of D's loss; their sum is :meth:`discriminator_loss`."""
        real, fake = real_logits.float(), fake_logits.float()
        real_target = 1.0 - self.label_smoothing
        if self.kind == "vanilla":
            return self._bce(real, real_target), self._bce(fake, 0.0)
        if self.kind == "lsgan":
            return self._squared(real, real_target), self._squared(fake, 0.0)
        if self.kind == "hinge":
            return F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()
        # ragan: the paper's D_Ra differentiates through both means (no detaching inside D's loss).
        return (0.5 * self._bce(real - fake.mean(), real_target), 0.5 * self._bce(fake - real.mean(), 0.0))

    def _bce(self, x: Tensor, target: float) -> Tensor:
        if self.logits:
            return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))
        # logits=False paired with a logit D would be silently wrong after the clamp below.
        if bool((x < 0).any() or (x > 1).any()):
            raise ValueError(
                "AdversarialLoss(logits=False) got discriminator outputs outside [0, 1]: the discriminator "
                "returns logits. Set loss.adversarial.logits=true, or give the discriminator a sigmoid output."
            )
        # Probabilities: written out rather than F.binary_cross_entropy, which autocast rejects.
        p = x.clamp(self._PROB_EPS, 1.0 - self._PROB_EPS)
        return -(target * torch.log(p) + (1.0 - target) * torch.log1p(-p)).mean()

    @staticmethod
    def _squared(x: Tensor, target: float) -> Tensor:
        return (x - target).square().mean()


# --------------------------------------------------------------------------------------------------
# `loss:` entries -> weighted terms
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightedTerm:
    """One entry of `loss:`: the built loss and the weight the module multiplies its value by."""

    name: str
    fn: Callable[..., Tensor]
    weight: float

    def __call__(self, out: Tensor | Sequence[Tensor], sr: Tensor, hr: Tensor,
                 value_range: Sequence[float]) -> Tensor:
        """The unweighted value for the generator's raw output `out`, its final output `sr` and the target."""
        pred = out if getattr(self.fn, "accepts_pyramid", False) else sr
        if getattr(self.fn, "expects_unit_range", False):
            pred, hr = to_unit(pred, value_range), to_unit(hr, value_range)
        return self.fn(pred, hr)


def build_term(name: str, entry: Mapping[str, Any]) -> WeightedTerm:
    """Build `loss.<name>` with Hydra after taking out its `weight` (checked by config.check_loss)."""
    from hydra.utils import instantiate

    entry = dict(entry)
    weight = float(entry.pop("weight"))
    return WeightedTerm(name, instantiate(entry, _convert_="all"), weight)


def generator_terms(loss: Mapping[str, Any]) -> dict[str, WeightedTerm]:
    """Every entry of `loss:` but `adversarial`, built; null entries and weight-0 ones are left out (a weight-0
    perceptual term loads no VGG). Terms are fixed functions of (sr, hr): their parameters are frozen."""
    terms = {name: build_term(name, entry) for name, entry in loss.items()
             if name != "adversarial" and entry is not None and entry["weight"]}
    for term in terms.values():
        if isinstance(term.fn, nn.Module):
            term.fn.requires_grad_(False).eval()
    return terms
