"""``RunError``: what the command line reports as a user error (one line, exit status 2) rather than a bug."""

from __future__ import annotations


class RunError(ValueError):
    """A run's settings, model or data are wrong; the message names the problem and the fix in one line.

    Raised by ``RunConfig`` and ``revmux.checks`` before any training starts. ``revmux.train.data.DataError`` (a
    malformed or missing data file) is a user error too; any other exception is a bug and keeps its traceback.
    """
