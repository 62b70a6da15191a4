"""Errors meant for people: one line naming what is at fault and what to do."""

from __future__ import annotations

import warnings


class SplitcError(Exception):
    """A user-facing error. ``str(err)`` is the one line the CLI prints."""


class SplitcWarning(UserWarning):
    """A user-facing warning (the CLI prints it as one line)."""


def warn(message: str) -> None:
    warnings.warn(message, SplitcWarning, stacklevel=2)
