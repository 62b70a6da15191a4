"""Errors meant for people: one line naming what is at fault and what to do."""

from __future__ import annotations

import warnings

# exit codes of the command line
EXIT_USAGE = 2  # a user mistake (the one-line SplitcError)
EXIT_CHECK_FAILED = 3  # a check ran and failed: splitc run's comparison, splitc bench --check
EXIT_INTERNAL = 70  # a bug in splitc


class SplitcError(Exception):
    """A user-facing error. ``str(err)`` is the one line the CLI prints."""


class SplitcWarning(UserWarning):
    """A user-facing warning (the CLI prints it as one line)."""


def warn(message: str) -> None:
    warnings.warn(message, SplitcWarning, stacklevel=2)
