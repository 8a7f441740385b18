"""What the entry points (src/train.py, src/eval.py) share: their exit statuses, and Hydra's own errors
reported as what they are.

Hydra composes the config before it calls the task function; a misspelled key, a wrong type or an
unknown choice is printed by Hydra (naming the key) and ends the process with status 1. That is bad
input, refused before anything ran, so `run_command` turns it into status 2 like every other refusal.
A multirun composes every job before it launches the first (Hydra's sweeper checks the batch), so this
holds for sweeps too. Status 1 is left to a run that failed while it ran (an error the project does
not foresee; train.py's summary.json then says `failed` with the error).
"""

from __future__ import annotations

import errno
import sys

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_NO_SPACE = 1, 2, 3, 4
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, an exhausted quota

_task_started = False


def task_started() -> None:
    """Called first thing by a @hydra.main task function: from here on, status 1 is a failed run."""
    global _task_started
    _task_started = True


def run_command(main) -> None:
    """Runs a @hydra.main function as the command; Hydra's errors before its task started exit 2."""
    global _task_started
    _task_started = False
    try:
        main()
    except SystemExit as e:
        if e.code == EXIT_FAILED and not _task_started:
            sys.exit(EXIT_BAD_INPUT)
        raise
