"""`python -m sr_lightning list [scale=4]`: the spandrel architectures that train (model=spandrel gen.arch=<name>),
with parameters and licence, and the ones that do not, with the reason."""
from __future__ import annotations

from sr_lightning.cli_args import Option, keys_help, parse_key_values
from sr_lightning.cli_help import asks_for_help
from sr_lightning.config import ConfigError

OPTIONS = {"scale": Option(4, "scale the parameter counts are given at")}


def run(argv: list[str]) -> int:
    if asks_for_help(argv):
        print(f"{__doc__.strip()}\n\nusage: python -m sr_lightning list [scale=4]\n\n{keys_help(OPTIONS)}")
        return 0
    values, positional = parse_key_values(argv, OPTIONS)
    if positional:
        raise ConfigError(positional[0], "unexpected argument; usage: python -m sr_lightning list [scale=4]")
    from sr_lightning.models.spandrel_arch import format_table  # spandrel's import is the slow part

    print(format_table(values["scale"]))
    return 0
