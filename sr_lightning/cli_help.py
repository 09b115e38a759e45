"""`COMMAND --help` of a Hydra command, built from the command's own primary config (composed, no job run).

It lists the keys the primary config sets, with the values the given overrides compose (the defaults when
there are none) and their yaml comments, and only the config groups of its defaults list. The config folder
lives here too, so `sr_lightning.cli` imports it from this module and this module never imports the CLI.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HELP_FLAGS = ("-h", "--help")  # every command, Hydra or not, answers either with its own help

SET_BY_THE_COMMAND = ("task_name", "model_name")  # primary-config keys a user never sets: not in --help

_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*):(.*)$")
_GROUP_LINE = re.compile(r"^\s*-\s*(?:optional\s+)?/?([\w/]+):\s*\S+\s+#\s*(.*)$")


def asks_for_help(argv: list[str]) -> bool:
    """Whether `-h` or `--help` is among the arguments."""
    return bool(set(HELP_FLAGS) & set(argv))


def group_options(group: str) -> list[str]:
    """The options of a config group: its yaml files under conf/<group>/, nested ones as `sub/name`."""
    group_dir = CONF_DIR / group
    return sorted(str(f.relative_to(group_dir).with_suffix("")) for f in group_dir.rglob("*.yaml"))


def config_groups() -> dict[str, list[str]]:
    """Every config group a user can choose from (Hydra's own `hydra/` group is not ours)."""
    return {d.name: group_options(d.name) for d in sorted(CONF_DIR.iterdir()) if d.is_dir() and d.name != "hydra"}


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


def hydra_command_help(name: str, summary: str, config: str, overrides: list[str]) -> str:
    """What the command does, then only the keys its primary config `config` sets and the groups its defaults
    list names, with the values these overrides give (defaults when there are none)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    note = ""
    try:
        cfg = _compose(config, overrides)
    except HydraException as err:  # help is still wanted: show the defaults and say why
        cfg = _compose(config, [])
        note = f"(defaults shown: {' '.join(overrides)} did not compose: {str(err).splitlines()[0]})"
    path = CONF_DIR / f"{config}.yaml"
    primary = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    comments = yaml_comments(path)
    keys = [k for k in _leaf_keys({k: v for k, v in primary.items() if k not in ("defaults", "hydra")})
            if k not in SET_BY_THE_COMMAND]
    values = {key: _yaml_value(_raw_value(cfg, key)) for key in keys}
    width = min(max((len(f"{k}={v}") for k, v in values.items()), default=0), 36)
    lines = [f"{name}: {summary}", "", f"usage: python -m sr_lightning {name} [key=value ...]"]
    if note:
        lines += ["", note]
    lines += ["", f"Keys (conf/{config}.yaml):"]
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
            others = [o for o in group_options(group) if o != chosen]
            if others:
                lines += _aligned("", gwidth, "also: " + ", ".join(others))
    lines += ["", (f"Hydra: `{name} --cfg job` prints the composed config, `-m key=a,b` sweeps, "
                   f"`{name} --hydra-help` shows Hydra's flags.")]
    return "\n".join(lines)


def _compose(config: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


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


def _aligned(left: str, width: int, text: str, indent: int = 2, line_width: int = 116) -> list[str]:
    """`left` padded to `width`, then `text` wrapped into the column after it."""
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


def user_error_from_hydra(err: BaseException) -> UserError:
    """A Hydra composition or override error as one line: what Hydra said, with an `Available options` list
    as `a, b, c` and the first line of the OmegaConf error behind it, without the config search path.

    `In 'train': Could not find 'model/nosuch'` + the option list, `Could not override 'nosuch'. To append to
    your config use +nosuch=1 (Key 'nosuch' is not in struct)`, `lr=[1: no viable alternative at input '[1'`.
    """
    from omegaconf.errors import OmegaConfBaseException

    text = str(err).split("\nConfig search path:")[0]  # where Hydra looked: noise for a wrong option name
    parts: list[tuple[str, list[str]]] = []  # (line, the tab-indented options listed under it)
    for line in text.splitlines():
        if line.startswith("\t") and parts:
            parts[-1][1].append(line.strip())
        elif line.strip():
            parts.append((line.strip(), []))
    message = ""
    for head, options in parts:
        if message:
            message += " " if message.endswith(".") else "; "  # Hydra's own sentences stay sentences
        message += head + (" " + ", ".join(options) if options else "")
    override = getattr(err, "override", None)  # OverrideParseException: which argument did not parse
    if override and override not in message:
        message = f"{override}: {message}"
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        message += f" ({str(cause).strip().splitlines()[0]})"
    return UserError(message)
