"""`python -m sr_lightning <command> [key=value ...]`: dispatch a command into Hydra.

Hydra commands compose `conf/<config>.yaml` and call `sr_lightning.commands.<module>.main(cfg)`;
argv commands (report, mos) take the same `key=value` form through `sr_lightning.cli_args` and call
`run(argv)`, which prints their own `--help`. When the first argument is not a command, `train` is meant, so
`python -m sr_lightning -m lr=1e-4,1e-5 gen.blocks=8,16,32` is a sweep.

`COMMAND --help` of a Hydra command is built here from the command's own primary config (composed, no job
run): its keys with their defaults and yaml comments, and only the config groups of its defaults list.
A `UserError` escaping any command is one `error: <message>` line and exit 2.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError, report_user_error
from sr_lightning.interrupt import TrainingInterrupted

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Command:
    module: str
    summary: str
    config: str | None = None  # Hydra primary config; None for argv commands
    package: str = "sr_lightning.commands"

    def import_module(self):
        return importlib.import_module(f"{self.package}.{self.module}")


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train a generator (and discriminator) — the default command", "train"),
    "eval": Command("evaluate", "PSNR/SSIM (Y, paper convention) of checkpoints or baselines on test sets", "eval"),
    "upscale": Command("upscale", "super-resolve an image or a folder with a checkpoint or exported weights", "upscale"),
    "export": Command("export", "export the generator as safetensors / ONNX / TorchScript with a sidecar", "export"),
    "report": Command("report", "collect a multirun's jobs into one table and plots: report <multirun dir>"),
    "download": Command("download", "download, verify and extract a dataset: download data=div2k", "download"),
    "prepare": Command("prepare", "cut a large dataset into sub-images once: prepare data=div2k", "prepare"),
    "mos": Command("mos", "blind mean-opinion-score study: mos prepare results=<eval dir> | mos score <files>"),
    "list": Command("spandrel_arch", "the spandrel architectures that train (model=spandrel gen.arch=<name>), "
                    "with parameters and licence", package="sr_lightning.models"),
}


HELP_FLAGS = ("-h", "--help")
SET_BY_THE_COMMAND = ("task_name", "model_name")  # primary-config keys a user never sets: not in --help


def _group_options(group: str) -> list[str]:
    group_dir = CONF_DIR / group
    return sorted(str(f.relative_to(group_dir).with_suffix("")) for f in group_dir.rglob("*.yaml"))


def _config_groups() -> dict[str, list[str]]:
    return {d.name: _group_options(d.name) for d in sorted(CONF_DIR.iterdir()) if d.is_dir() and d.name != "hydra"}


def usage() -> str:
    lines = [
        "usage: python -m sr_lightning [COMMAND] [-m] [key=value ...] [hydra flags]",
        "",
        "Commands (train is the default when the first argument is not a command):",
    ]
    lines += [f"  {name:<9} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Config groups (choose with group=option, e.g. model=srgan data=set5 trainer=gpu):"]
    for group, options in _config_groups().items():
        lines.append(f"  {group:<10} {', '.join(options)}")
    lines += [
        "",
        "Short keys: scale=4 crop=96 lr=2e-4 batch_size=16 gen.blocks=16 disc.blocks=8 color=rgb|y",
        "Examples:",
        "  python -m sr_lightning train experiment=quickstart",
        "  python -m sr_lightning train model=srgan crop=128",
        "  python -m sr_lightning -m lr=1e-4,1e-5 gen.blocks=8,16,32",
        "  python -m sr_lightning train --cfg job          # print the composed config",
        "  python -m sr_lightning eval model=bicubic data=set5",
        "  python -m sr_lightning list                     # spandrel architectures for model=spandrel gen.arch=<name>",
        "Hydra's own help: python -m sr_lightning train --hydra-help",
    ]
    return "\n".join(lines)


# --- COMMAND --help for Hydra commands -----------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*):(.*)$")
_GROUP_LINE = re.compile(r"^\s*-\s*(?:optional\s+)?/?([\w/]+):\s*\S+\s+#\s*(.*)$")


def yaml_comments(path: Path) -> dict[str, str]:
    """`dotted.key` -> its end-of-line comment (with the comment lines aligned under it), and
    `defaults/<group>` -> the comment of a defaults-list entry. A line reader, not a YAML parser: it is enough
    for our config files, whose comments follow `key: value` on the same line."""
    comments: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    last: tuple[str, int] | None = None  # (key, column of its '#') for comment lines continuing it
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if last is not None and indent >= last[1] - 2 and indent > 0:
                comments[last[0]] += " " + stripped.lstrip("#").strip()
            else:
                last = None
            continue
        last = None
        group = _GROUP_LINE.match(line)
        if group:
            comments[f"defaults/{group[1]}"] = group[2].strip()
            continue
        match = _KEY_LINE.match(line)
        if not match:
            continue
        while parents and parents[-1][0] >= indent:
            parents.pop()
        key = ".".join([k for _, k in parents] + [match[2]])
        parents.append((indent, match[2]))
        hash_at = match[3].find(" #")
        if hash_at >= 0:
            comments[key] = match[3][hash_at + 2:].strip()
            last = (key, len(line) - len(match[3]) + hash_at + 1)
    return comments


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the values a yaml mapping sets (a list or an empty mapping is one value)."""
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [key for k, v in node.items() for key in _leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))]


def _yaml_value(value: Any) -> str:
    """A value as the user would type it: null, true, [0.0, 1.0], ${lr} (interpolations stay unresolved)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _defaults_groups(defaults: list[Any]) -> list[tuple[str, Any]]:
    """(group, default option) of a primary config's defaults list; Hydra's own groups are not ours to list."""
    groups = []
    for entry in defaults:
        if not isinstance(entry, dict):
            continue  # _self_
        for key, option in entry.items():
            key = key.removeprefix("optional ").lstrip("/")
            if key.startswith(("override ", "hydra")):
                continue
            groups.append((key, option))
    return groups


def _compose(config: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def hydra_command_help(name: str, command: Command, argv: list[str]) -> str:
    """What the command does, then only the keys its primary config sets and the groups its defaults list
    names, with the values these overrides give (defaults when there are none)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if command.module == "train":
        overrides = spandrel_arch_overrides(overrides)
    note = ""
    try:
        cfg = _compose(command.config, overrides)
    except HydraException as err:  # help is still wanted: show the defaults and say why
        cfg = _compose(command.config, [])
        note = f"(defaults shown: {' '.join(overrides)} did not compose: {str(err).splitlines()[0]})"
    path = CONF_DIR / f"{command.config}.yaml"
    primary = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    comments = yaml_comments(path)
    keys = [k for k in _leaf_keys({k: v for k, v in primary.items() if k not in ("defaults", "hydra")})
            if k not in SET_BY_THE_COMMAND]
    values = {key: _yaml_value(_raw_value(cfg, key)) for key in keys}
    width = min(max((len(f"{k}={v}") for k, v in values.items()), default=0), 36)
    lines = [f"{name}: {command.summary}", "", f"usage: python -m sr_lightning {name} [key=value ...]"]
    if note:
        lines += ["", note]
    lines += ["", f"Keys (conf/{command.config}.yaml):"]
    for key, value in values.items():
        lines += _aligned(f"{key}={value}", width, comments.get(key, ""))
    groups = _defaults_groups(primary.get("defaults") or [])
    if groups:
        choices = OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}
        gwidth = max(len(group) for group, _ in groups)
        lines += ["", "Config groups (group=option; the current choice, then the others):"]
        for group, default in groups:
            chosen = _yaml_value(choices.get(group, default))
            comment = comments.get(f"defaults/{group}", "").removeprefix("(").removesuffix(")")
            lines += _aligned(group, gwidth, chosen + (f"   ({comment})" if comment else ""))
            others = [o for o in _group_options(group) if o != chosen]
            if others:
                lines += _aligned("", gwidth, "also: " + ", ".join(others))
    lines += ["", (f"Hydra: `{name} --cfg job` prints the composed config, `-m key=a,b` sweeps, "
                   f"`{name} --hydra-help` shows Hydra's flags.")]
    return "\n".join(lines)


def _aligned(left: str, width: int, text: str, indent: int = 2, line_width: int = 116) -> list[str]:
    """`left` padded to `width`, then `text` wrapped into the column after it."""
    import textwrap

    column = indent + max(width, len(left)) + 2
    wrapped = textwrap.wrap(text, max(line_width - column, 40)) or [""]
    first = f"{' ' * indent}{left:<{width}}  {wrapped[0]}".rstrip()
    return [first, *(" " * column + rest for rest in wrapped[1:])]


def _raw_value(cfg, key: str) -> Any:
    """The composed value at `key` as written: an interpolation stays `${...}` (it says what the key follows)."""
    from omegaconf import OmegaConf

    node = cfg
    for part in key.split("."):
        node = node._get_node(part) if OmegaConf.is_dict(node) else None
        if node is None:  # a preset replaced the mapping this key was in
            return None
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=False)
    return node._value()


def _run_hydra(command: Command, argv: list[str]) -> int:
    import hydra

    module = command.import_module()
    if command.module == "train":
        argv = spandrel_arch_overrides(argv)
    rewrite = getattr(module, "rewrite_argv", None)
    if rewrite is not None:
        argv = rewrite(argv)
    # Hydra reads sys.argv itself; give it exactly the overrides and flags meant for it.
    sys.argv = [f"sr_lightning {command.config}", *argv]
    exit_code: list[int] = [0]

    def task(cfg):
        try:
            result = module.main(cfg)
        except UserError as err:  # the safety net: commands report their own, this catches what escapes
            result = report_user_error(err)  # returned, not raised: Hydra would print it as exit 1
        if isinstance(result, int) and result != 0:
            exit_code[0] = result
        return result

    task.__module__ = module.__name__
    try:
        hydra.main(config_path=str(CONF_DIR), config_name=command.config, version_base="1.3")(task)()
    except TrainingInterrupted as stop:  # raised out of a sweep's job: the sweep stops there
        if stop.sweep_dir is not None:
            print(f"sweep interrupted; resume it with: {_sweep_resume_command(argv, stop.sweep_dir)}",
                  file=sys.stderr, flush=True)
        return stop.exit_code
    if command.module == "train":
        from sr_lightning.sweep import SweepSummaryCallback

        if SweepSummaryCallback.failed_jobs:  # jobs of a parallel launcher fail in other processes
            return 1
    return exit_code[0]


SPANDREL_GEN_KEYS = ("_target_", "arch", "scale", "in_channels", "out_channels")


def spandrel_arch_overrides(argv: list[str]) -> list[str]:
    """With model=spandrel (or gen=spandrel), `gen.<argument>=v` sets an argument of the chosen architecture.

    conf/gen/spandrel.yaml cannot list every architecture's arguments, and Hydra refuses a key the config
    lacks unless it is written `++gen.<argument>=v`; that prefix is added here so users write the plain form.
    """
    if not {"model=spandrel", "gen=spandrel"} & set(argv):
        return argv
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if sep and key.startswith("gen.") and key.count(".") == 1 and key[4:] not in SPANDREL_GEN_KEYS:
            arg = "++" + arg
        out.append(arg)
    return out


def _sweep_resume_command(argv: list[str], sweep_dir: Path) -> str:
    """The same sweep into the same folder: finished jobs are skipped, the interrupted one continues."""
    import shlex

    kept = [a for a in argv if not a.startswith(("hydra.sweep.dir=", "resume="))]
    return shlex.join(["python", "-m", "sr_lightning", *kept, f"hydra.sweep.dir={sweep_dir}", "resume=auto"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0]
    if name in COMMANDS:
        argv = argv[1:]
    elif name.startswith("-") or "=" in name:
        name = "train"
    else:
        close = [c for c in COMMANDS if c.startswith(name[:2])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"error: unknown command '{name}'{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        if command.config is not None and set(HELP_FLAGS) & set(argv):
            print(hydra_command_help(name, command, argv))
            return 0
        if name == "train" and {"-m", "--multirun"} & set(argv) and not any(a.startswith("logger=") for a in argv):
            # Sweeps log to W&B (offline unless WANDB_MODE says otherwise) so the dashboard can compare the jobs.
            argv = [*argv, "logger=wandb"]
        if command.config is None:
            return _run_argv_command(command, argv)
        return _run_hydra(command, argv)
    except UserError as err:  # escaped a command (or its argv rewrite): one line, exit 2
        return report_user_error(err)
    except KeyboardInterrupt:  # Ctrl-C in eval, upscale, ...: one line, not a traceback (train handles its own)
        print(f"\n{name}: interrupted", file=sys.stderr)
        return 130


def _run_argv_command(command: Command, argv: list[str]) -> int:
    try:
        return int(command.import_module().run(argv) or 0)
    except SystemExit as exit_:  # an argparse-based command (list): --help is 0, a usage error 2
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


if __name__ == "__main__":
    raise SystemExit(main())
