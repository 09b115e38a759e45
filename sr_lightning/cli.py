"""`python -m sr_lightning <command> [overrides...]`: dispatch a command into Hydra.

Hydra commands compose `conf/<config>.yaml` and call `sr_lightning.commands.<module>.main(cfg)`;
argv commands (report, mos) take plain arguments and call `run(argv)`. When the first argument is not a
command, `train` is meant, so `python -m sr_lightning -m lr=1e-4,1e-5 gen.blocks=8,16,32` is a sweep.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

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


def _config_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group_dir in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(
            str(f.relative_to(group_dir).with_suffix("")) for f in group_dir.rglob("*.yaml")
        )
        groups[group_dir.name] = options
    return groups


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
        result = module.main(cfg)
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
        from sr_lightning.commands.train import SweepSummaryCallback

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
    if name == "train" and {"-m", "--multirun"} & set(argv) and not any(a.startswith("logger=") for a in argv):
        # Sweeps log to W&B (offline unless WANDB_MODE says otherwise) so the dashboard can compare the jobs.
        argv = [*argv, "logger=wandb"]
    try:
        if command.config is None:
            return int(command.import_module().run(argv) or 0)
        return _run_hydra(command, argv)
    except KeyboardInterrupt:  # Ctrl-C in eval, upscale, ...: one line, not a traceback (train handles its own)
        print(f"\n{name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
