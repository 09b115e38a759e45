"""`init_from=<file>`: start a training run's generator (and its EMA) from another network's weights.

Two kinds of file:
* one of our training checkpoints (its config in `hyper_parameters['cfg']`, full last.ckpt or slim best.ckpt):
  the preset's generator is kept and takes the checkpoint's G weights (EMA when present: what that run
  validated and exported), e.g. SRGAN from a PSNR-trained SRResNet;
* a model file (a community .pth/.safetensors that spandrel reads, or our export with its sidecar): the
  network in the file becomes the generator, replacing `cfg.gen`, `cfg.scale`, `cfg.color` and
  `cfg.value_range` before anything is built, so the run's checkpoint stores a config that rebuilds that
  network (eval, upscale, export, resume). The rest of the preset (disc, loss, optimiser) stays.

The file is read once (`read_initial_generator`), before the config is validated; `load_initial_weights`
copies the weights into the built module.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sr_lightning.errors import UserError

log = logging.getLogger("sr_lightning.train")

# Files whose format says they are no training checkpoint: load_generator reads them (with their sidecar).
_MODEL_FILE_SUFFIXES = (".safetensors", ".onnx", ".pt")
_MISSING = object()


class SetupError(UserError, RuntimeError):
    """A problem found before the first training step (printed as one line)."""


@dataclass
class InitialGenerator:
    """Generator weights read from `init_from=path`: `state` fits G's state_dict."""

    path: Path
    state: dict[str, Any]
    used_ema: bool
    model_file: bool  # True: the file's network replaced cfg.gen (strict fit by construction)


def command_line_overrides() -> dict[str, str]:
    """The command line's `key=value` overrides (`++`/`+`/`~` prefixes dropped): what the user set explicitly."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = HydraConfig.get().overrides.task
    except ValueError:  # no Hydra run (a config composed by hand)
        return {}
    return {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in task if "=" in o}


def read_initial_generator(cfg: DictConfig, user_overrides: dict[str, str] | None = None) -> InitialGenerator | None:
    """Read `cfg.init_from` once; for a model file, make its network the run's generator (cfg changed in place).

    `user_overrides` (default: the Hydra command line) are what the user set explicitly: scale=, color=,
    value_range=, gen.arch= and gen.<argument>= must agree with a model file (one SetupError naming both).
    None when `init_from` is unset.
    """
    from sr_lightning.checkpoint import load_checkpoint_file
    from sr_lightning.loading import generator_state, is_bare_weights, sidecar_path

    if not cfg.get("init_from"):
        return None
    path = Path(str(cfg.init_from)).expanduser()
    if not path.is_file():  # before the model is built
        raise SetupError(f"init_from={cfg.init_from}: file not found (give init_from=<a run's checkpoint>, e.g. "
                         f"outputs/<date>/<time>/checkpoints/best.ckpt, or a model file .pth/.safetensors)")
    if path.suffix.lower() in _MODEL_FILE_SUFFIXES or sidecar_path(path).is_file():  # exports and model files
        return _adopt_model_file(cfg, path, _load_generator(path), user_overrides)
    contents = load_checkpoint_file(path, key="init_from")
    if isinstance(contents, dict) and (contents.get("hyper_parameters") or {}).get("cfg"):  # one of our runs
        state, used_ema = generator_state(contents, use_ema=True)
        if not state:
            raise SetupError(f"init_from={path}: no generator weights in this checkpoint")
        return InitialGenerator(path, state, used_ema, model_file=False)
    if not is_bare_weights(contents):
        raise SetupError(f"init_from={path}: no sr-lightning config (hyper_parameters['cfg']) and no model weights "
                         f"spandrel recognises; give a checkpoint of `python -m sr_lightning train` or a model file")
    return _adopt_model_file(cfg, path, _load_generator(path, contents), user_overrides)


def load_initial_weights(module, initial: InitialGenerator) -> None:
    """G and its EMA start from `initial`'s weights; a checkpoint of another generator config is one line."""
    try:
        module.gen.load_state_dict(initial.state)
        if module.gen_ema is not None:
            module.gen_ema.load_state_dict(initial.state)
    except RuntimeError as err:
        raise SetupError(f"init_from={initial.path}: weights do not fit gen={module.cfg['gen']['_target_']} "
                         f"({str(err).splitlines()[0]}); use a checkpoint of the same generator config") from err
    log.info("initialised G from %s (%s weights)", initial.path, "EMA" if initial.used_ema else "raw")


def _load_generator(path: Path, contents: Any = None):
    """The generator in a model file (`contents`: the file already read, not read again)."""
    from sr_lightning.checkpoint import CheckpointError
    from sr_lightning.loading import load_generator, load_model_file_generator

    try:
        return load_generator(path) if contents is None else load_model_file_generator(path, contents=contents)
    except CheckpointError as err:
        raise SetupError(f"init_from={err}" if str(err).startswith(str(path)) else f"init_from={path}: {err}") from err


def _adopt_model_file(cfg: DictConfig, path: Path, loaded, user_overrides: dict[str, str] | None) -> InitialGenerator:
    gen = loaded.cfg.get("gen") if isinstance(loaded.cfg, dict) else None
    if loaded.meta.get("format") in ("onnx", "torchscript") or not isinstance(gen, dict):
        raise SetupError(f"init_from={path}: a {loaded.meta.get('format')} export holds a fixed graph, not trainable "
                         f"weights; give its .safetensors export or the run's checkpoint")
    gen = OmegaConf.to_container(OmegaConf.create(gen), resolve=True)
    user = command_line_overrides() if user_overrides is None else user_overrides
    _check_user_choices(cfg, path, loaded, gen, user)
    with open_dict(cfg):
        cfg.gen = gen
        cfg.scale = int(loaded.scale)
        cfg.color = str(loaded.color)
        cfg.value_range = [float(v) for v in loaded.value_range]
    what = loaded.meta.get("arch") or str(gen.get("_target_", "?")).rsplit(".", 1)[-1]
    print(f"init_from={path}: {what} x{loaded.scale} detected; it is this run's generator (gen config from the "
          f"file), starting from its weights", flush=True)
    return InitialGenerator(path, loaded.net.state_dict(), loaded.used_ema, model_file=True)


def _check_user_choices(cfg: DictConfig, path: Path, loaded, gen: dict[str, Any], user: dict[str, str]) -> None:
    """scale=, color=, value_range=, gen.arch= and gen.<argument>= given on the command line must fit the file."""
    label = f"init_from={path}"
    what = loaded.meta.get("arch") or str(gen.get("_target_", "?")).rsplit(".", 1)[-1]
    if "scale" in user and int(cfg.scale) != int(loaded.scale):
        raise SetupError(f"scale={cfg.scale} but {label} is a x{loaded.scale} {what} model; drop scale= (the file "
                         f"decides) or give a x{cfg.scale} model file")
    if "color" in user and str(cfg.color) != str(loaded.color):
        raise SetupError(f"color={cfg.color} but {label} is a {loaded.net.in_channels}-channel model "
                         f"(color={loaded.color}); drop color=")
    if "value_range" in user and [float(v) for v in cfg.value_range] != [float(v) for v in loaded.value_range]:
        raise SetupError(f"value_range={list(cfg.value_range)} but {label} works in {list(loaded.value_range)}; "
                         f"drop value_range=")
    user_arch = OmegaConf.select(cfg, "gen.arch", default=None) if "gen.arch" in user else None
    if user_arch is not None and user_arch != gen.get("arch"):
        raise SetupError(f"gen.arch={user_arch} but {label} holds a {what} model; drop gen.arch= (the file "
                         f"decides the architecture) or give a {user_arch} file")
    # an architecture argument given on the command line is checked against the file's network, not dropped
    from sr_lightning.models.spandrel_arch import plain_value as plain  # tuples and lists compare equal

    hyper = dict(getattr(getattr(loaded.net, "net", None), "hyperparameters", None) or {})
    for key in sorted(k[len("gen."):] for k in user if k.startswith("gen.") and k.count(".") == 1):
        if key in ("arch", "_target_", "scale"):
            continue
        wanted = plain(OmegaConf.to_container(cfg.gen, resolve=True).get(key))
        theirs = gen[key] if key in gen else hyper.get(key, _MISSING)
        if theirs is _MISSING:
            raise SetupError(f"gen.{key}={wanted}: the generator is {label}'s {what} model, which has no {key}; "
                             f"drop gen.{key}=")
        if plain(theirs) != wanted:
            raise SetupError(f"gen.{key}={wanted} but {label}'s {what} model has {key}={plain(theirs)}; drop "
                             f"gen.{key}= (the file decides the network's size)")
