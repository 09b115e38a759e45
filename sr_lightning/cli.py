"""`python -m sr_lightning <command> [key=value ...]`: dispatch a command into Hydra.

Hydra commands compose `conf/<config>.yaml` and call `sr_lightning.commands.<module>.main(cfg)`;
argv commands (report, mos) take the same `key=value` form through `sr_lightning.cli_args` and call
`run(argv)`, which prints their own `--help`. When the first argument is not a command, `train` is meant, so
`python -m sr_lightning -m lr=1e-4,1e-5 gen.blocks=8,16,32` is a sweep.

`COMMAND --help` of a Hydra command is built by `sr_lightning.cli_help` from the command's own primary config
(composed, no job run). A `UserError` escaping any command, and a Hydra composition error of a run (an unknown
group option or key), is one `error: <message>` line and exit 2; other exceptions keep their traceback.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sr_lightning.cli_help import (
    CONF_DIR,
    HELP_FLAGS,
    asks_for_help,
    config_groups,
    hydra_command_help,
    user_error_from_hydra,
)
from sr_lightning.errors import UserError, report_user_error
from sr_lightning.interrupt import TrainingInterrupted


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
    "list": Command("architectures", "the spandrel architectures that train (model=spandrel gen.arch=<name>), "
                    "with parameters and licence: list [scale=4]"),
}


FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra's switch between a short report + exit 1 and raising the exception


def usage() -> str:
    lines = [
        "usage: python -m sr_lightning [COMMAND] [-m] [key=value ...] [hydra flags]",
        "",
        "Commands (train is the default when the first argument is not a command):",
    ]
    lines += [f"  {name:<9} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Config groups (choose with group=option, e.g. model=srgan data=set5 trainer=gpu):"]
    for group, options in config_groups().items():
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
    from hydra.errors import ConfigCompositionException, OverrideParseException

    module = command.import_module()
    if command.module == "train":
        argv = spandrel_arch_overrides(argv)
    rewrite = getattr(module, "rewrite_argv", None)
    if rewrite is not None:
        argv = rewrite(argv)
    # Hydra reads sys.argv itself; give it exactly the overrides and flags meant for it.
    sys.argv = [f"sr_lightning {command.config}", *argv]
    exit_code: list[int] = [0]
    # Hydra prints a composition error (an unknown group option or key, an override that does not parse) over
    # many lines with a search path and a hint, and exits 1. HYDRA_FULL_ERROR=1 makes it raise instead: set
    # until the first job starts, a bad config becomes one `error:` line and exit 2 here. The job gets the
    # user's own setting back, so its exception keeps Hydra's trimmed traceback and exit 1, and the processes
    # it starts (DDP, W&B) do not inherit ours. A user's HYDRA_FULL_ERROR=1 keeps every full traceback.
    users_full_error = os.environ.get(FULL_ERROR)
    shorten_config_errors = users_full_error != "1"

    def task(cfg):
        _set_env(FULL_ERROR, users_full_error)
        try:
            result = module.main(cfg)
        except UserError as err:  # the safety net: commands report their own, this catches what escapes
            result = report_user_error(err)  # returned, not raised: Hydra would print it as exit 1
        if isinstance(result, int) and result != 0:
            exit_code[0] = result
        return result

    task.__module__ = module.__name__
    try:
        if shorten_config_errors:
            os.environ[FULL_ERROR] = "1"
        hydra.main(config_path=str(CONF_DIR), config_name=command.config, version_base="1.3")(task)()
    except (ConfigCompositionException, OverrideParseException) as err:  # raised before any job ran
        if not shorten_config_errors:
            raise
        return report_user_error(user_error_from_hydra(err))
    except TrainingInterrupted as stop:  # raised out of a sweep's job: the sweep stops there
        if stop.sweep_dir is not None:
            print(f"sweep interrupted; resume it with: {_sweep_resume_command(argv, stop.sweep_dir)}",
                  file=sys.stderr, flush=True)
        return stop.exit_code
    finally:
        _set_env(FULL_ERROR, users_full_error)
    if command.module == "train":
        from sr_lightning.sweep import SweepSummaryCallback

        if SweepSummaryCallback.failed_jobs:  # jobs of a parallel launcher fail in other processes
            return 1
    return exit_code[0]


def _set_env(name: str, value: str | None) -> None:
    """Set `name` to `value`, or unset it for None (as it was before we set it)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


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
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
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
        if command.config is not None and asks_for_help(argv):
            overrides = [a for a in argv if "=" in a and not a.startswith("-")]
            if command.module == "train":
                overrides = spandrel_arch_overrides(overrides)
            print(hydra_command_help(name, command.summary, command.config, overrides))
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
