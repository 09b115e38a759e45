"""What the data code raises and warns: every message names the folder/file and the remedy."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sr_lightning.errors import UserError


class DatasetError(UserError, ValueError):
    """A data set that cannot be used as configured; the message names the folder/file and the remedy."""


class DatasetMissingError(DatasetError):
    """The files of a data set are not where the config says; the message says where to put them."""


class DataWarning(UserWarning):
    """A file was skipped or changed to make the data set usable."""


@contextmanager
def config_checks() -> Iterator[None]:
    """Run `sr_lightning.config.check_*` calls; a failure comes out as `DatasetError` with config's own message.

    The data module and datasets can be built without a composed config (library use), so they call the
    same checks `train` runs, and a value gets one message whichever way it arrives; callers of the data
    code (eval, prepare) catch `DatasetError`.
    """
    from sr_lightning.config import ConfigError  # here: a light FolderSource import does not load OmegaConf

    try:
        yield
    except ConfigError as err:
        raise DatasetError(str(err)) from None
