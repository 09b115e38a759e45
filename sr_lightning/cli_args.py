"""`key=value` arguments for the commands that are not Hydra apps (report, mos, list), typed like their defaults.

Hydra commands (train, eval, upscale, export, download, prepare) get `key=value` from Hydra; these take
the same form through `parse_key_values`, so every command reads `python -m sr_lightning CMD key=value ...`.
Unknown keys and badly typed values raise `ConfigError` naming the key and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sr_lightning.config import ConfigError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class Option:
    default: Any
    help: str = ""


def _typed(key: str, value: str, default: Any) -> Any:
    if isinstance(default, bool):
        if value.lower() not in _TRUE + _FALSE:
            raise ConfigError(key, f"got {value!r}; expected true or false")
        return value.lower() in _TRUE
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(key, f"got {value!r}; expected an integer") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(key, f"got {value!r}; expected a number") from None
    return value


def parse_key_values(argv: list[str], options: dict[str, Option]) -> tuple[dict[str, Any], list[str]]:
    """(values by key, with defaults filled in; plain positional arguments, in order)."""
    values = {key: option.default for key, option in options.items()}
    positional: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            positional.append(arg)
            continue
        key = key.lstrip("+")  # `+key=value` as Hydra users type it
        if key not in options:
            raise ConfigError(key, f"unknown key; allowed: {', '.join(options)}")
        values[key] = _typed(key, value, options[key].default)
    return values, positional


def keys_help(options: dict[str, Option]) -> str:
    """One line per key: `  key=<default>   help`, for `COMMAND --help`."""
    width = max((len(f"{k}={v.default}") for k, v in options.items()), default=0)
    return "\n".join(f"  {f'{k}={v.default}':<{width}}  {v.help}".rstrip() for k, v in options.items())
