"""What the entry points (src/train.py, src/eval.py) share: the one place where the project's refusals
(bnrepro/errors.py ReproError) become exit statuses, and Hydra's own errors reported as what they are.

Hydra composes the config before it calls the task function; a misspelled key, a wrong type or an
unknown choice is printed by Hydra (naming the key) and ends the process with status 1. That is bad
input, refused before anything ran, so `run_command` turns it into status 2 like every other refusal.
A multirun composes every job before it launches the first (Hydra's sweeper checks the batch), so this
holds for sweeps too. Status 1 is left to a run that failed while it ran (an error the project does
not foresee; train.py's summary.json then says `failed` with the error).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only

from bnrepro.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_FAILED, EXIT_NO_SPACE, NO_SPACE, ReproError

_task_started = False


def task_started() -> None:
    """Called first thing by a @hydra.main task function: from here on, status 1 is a failed run."""
    global _task_started
    _task_started = True


@contextlib.contextmanager
def refusals_exit(label: str = "", multirun: bool = False, run_dir: Path | None = None):
    """A ReproError raised inside ends the command with its `exit_status` and its message on stderr.

    A diverged run (status 3) is a result: "diverged: <label>: ...", and a multirun goes on with its other
    jobs. Refusals raised on every rank together (data_errors.py, divergence.py) are reported by rank 0,
    which owns the exit status: another rank exiting non-zero would make Lightning's child-process
    observer kill rank 0 while it writes summary.json. With `run_dir`, a full disk is status 4.
    """
    try:
        yield
    except ReproError as e:
        if rank_zero_only.rank != 0:
            return
        if e.exit_status == EXIT_DIVERGED:
            print(f"diverged: {label}: {str(e).rstrip()}", file=sys.stderr)
            if multirun:
                return
        else:
            print(f"error: {str(e).rstrip()}", file=sys.stderr)  # one message, no stray blank line
        sys.exit(e.exit_status)
    except OSError as e:
        if run_dir is None or e.errno not in NO_SPACE:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: out of disk space{where} ({e.strerror}). {run_dir} keeps its last checkpoint (every "
              f"file is written whole or not at all; metrics.csv's last row may be torn, and is written "
              f"again on resume): free space, then relaunch the same command to resume.", file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_NO_SPACE)


def override_keys(args: list[str]) -> list[str]:
    """The keys of command-line overrides (`+key=v`, `~key`, `key=v` -> key)."""
    return [arg.lstrip("+~").split("=", 1)[0] for arg in args]


def moved_key_refusal(args: list[str]) -> str | None:
    """The message for an override of a key that moved (config/schema.py MOVED_KEYS: the fast paths left
    `trainer` for their own node), which Hydra would refuse as a key not in TrainerConfig without saying
    where it went; None when no argument sets one."""
    from bnrepro.config.schema import MOVED_KEYS

    for key in override_keys(args):
        if key in MOVED_KEYS:
            return f"{key} is now {MOVED_KEYS[key]} (the fast paths have a node of their own): pass {MOVED_KEYS[key]}=..."
    return None


def data_node_refusal(args: list[str]) -> str | None:
    """src/eval.py: `data.<key>=...` without `data=<name>`. The eval config's `data` is null until a data
    set is named (a run is evaluated on its own data set by default), and OmegaConf would fail on setting
    a key of null with an assertion traceback."""
    keys = override_keys(args)
    given = next((k for k in keys if k.startswith("data.")), None)
    if given is None or "data" in keys:
        return None
    return (
        f"{given}=... needs the data set it belongs to: add data=<name> (e.g. data=imagenet). Without "
        f"data=, a run is evaluated on its own data set, as its config.yaml stores it."
    )


def run_command(main, *checks) -> None:
    """Runs a @hydra.main function as the command; Hydra's errors before its task started exit 2.
    `checks`: functions of the arguments returning a refusal's message (or None), tried first."""
    global _task_started
    _task_started = False
    refusal = next(
        (m for check in (moved_key_refusal, *checks) if (m := check(sys.argv[1:])) is not None), None
    )
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        main()
    except SystemExit as e:
        if e.code == EXIT_FAILED and not _task_started:
            sys.exit(EXIT_BAD_INPUT)
        raise
