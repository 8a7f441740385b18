"""The base of the project's refusals, and the exit status each kind gives the command.

A bottom-level module: it imports nothing of the project, so every module may raise a subclass of
ReproError without importing upward. The entry points (src/train.py, src/eval.py) catch ReproError in
one place (bnrepro/entry.py) and exit with its `exit_status`; anything else is a failed run (status 1).
"""

from __future__ import annotations

import errno

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_NO_SPACE = 1, 2, 3, 4
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, an exhausted quota


class ReproError(Exception):
    """A refusal the project foresees: its message names the key, file or folder and the fix.

    `exit_status`: what the command exits with. 2 (bad input, nothing trained) unless a subclass says
    otherwise; subclasses also derive from the builtin error they were before (ValueError, ...), so
    code that catches those still does."""

    exit_status = EXIT_BAD_INPUT


class ConfigError(ReproError, ValueError):
    """A configuration value that composes but cannot be run; the message names the key."""


class ResumeError(ReproError, ValueError):
    """Nothing (loadable) to resume from where the command asks to resume; the message says what to do."""
