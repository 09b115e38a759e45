"""The one base class for mistakes a user can fix, and the exit code every command gives for them.

A `UserError` is a bad key or value, a missing or unreadable file, weights that are not where they were
asked for: the CLI prints it as one line, `error: <message>`, and exits with `EXIT_USER_ERROR`. Anything
else is a bug and keeps its traceback. Library errors subclass it next to their builtin base
(`class ConfigError(UserError, ValueError)`), so `except ValueError` in callers keeps working.
"""
from __future__ import annotations

import sys

EXIT_USER_ERROR = 2  # argparse's and Hydra's code for a usage error; every command uses it


class UserError(Exception):
    """A problem the user can fix; the message names the key or the file and what would work."""


def report_user_error(err: BaseException, stream=None) -> int:
    """Print `error: <message>` (one line per line of the message) and return the exit code."""
    print(f"error: {err}", file=stream or sys.stderr, flush=True)
    return EXIT_USER_ERROR
