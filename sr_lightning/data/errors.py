"""What the data code raises and warns: every message names the folder/file and the remedy."""
from __future__ import annotations

from sr_lightning.errors import UserError


class DatasetError(UserError, ValueError):
    """A data set that cannot be used as configured; the message names the folder/file and the remedy."""


class DatasetMissingError(DatasetError):
    """The files of a data set are not where the config says; the message says where to put them."""


class DataWarning(UserWarning):
    """A file was skipped or changed to make the data set usable."""
