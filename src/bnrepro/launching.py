"""How the processes of a Hydra multirun job are started under DDP.

Lightning starts the other DDP ranks of a one-node run by re-running the command line
(`_SubprocessScriptLauncher`; `lightning_compat.starts_ranks_by_rerunning_command` tells when). In a
Hydra multirun the command line is the whole sweep (`-m a=1,2`), so rank 1 re-ran every job: a 2-job
sweep with 2 processes left four job folders (the trouble spot in Lightning's and Hydra's issue
trackers). Here a multirun job that would start its own ranks runs as one single-run command of its
own -- `python src/train.py <the job's overrides>` in a fresh process -- and Lightning starts that
command's ranks as it does for any single run. Every job then also starts from a clean process: no
environment variables (MASTER_PORT, LOCAL_RANK, ...) or process group left over from the previous job.
Launchers that start the ranks themselves (torchrun, srun, and so hydra-submitit-launcher) are not
affected: Lightning does not re-run the command there.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

from hydra.utils import get_original_cwd

from bnrepro.callbacks.divergence import TrainingDiverged
from bnrepro.errors import ConfigError


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_command(run_dir: Path) -> list[str]:
    """The single-run command of the current multirun job: its own overrides, its own folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    import __main__

    hc = HydraConfig.get()
    script = to_absolute_path(sys.argv[0]) if __main__.__spec__ is None else None
    command = [sys.executable, script] if script else [sys.executable, "-m", __main__.__spec__.name]
    # The job writes its own record (.hydra/<time>/) once accepted (launch_record.py), as every run does.
    # hydra.mode=RUN: an experiment file may set MULTIRUN itself (experiment=mnist_figure1), which would
    # make the child a one-job sweep that hands itself off again.
    return [*command, *hc.overrides.task, f'hydra.run.dir="{run_dir}"', "hydra.output_subdir=null",
            "hydra.mode=RUN"]  # fmt: skip


def run_job_in_own_process(run_dir: Path) -> dict | None:
    """Runs the current multirun job as its own command; returns its summary.json like train() does.

    The child's exit status is mapped back to what train() would have raised, so the sweep treats the
    job as before: bad input stops the sweep (exit 2), a divergence is reported and the sweep goes on,
    a preemption stops it. SIGTERM / SIGUSR1 sent to the sweep's process are passed on to the job.
    """
    command = job_command(run_dir)
    print(f"[multirun + DDP] job in its own process: {' '.join(command[1:])}", flush=True)
    summary_path = run_dir / "summary.json"
    before = _identity(summary_path)
    proc = subprocess.Popen(command, cwd=get_original_cwd())
    forwarded = (signal.SIGTERM, signal.SIGUSR1)
    previous = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum)) for s in forwarded}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    # The run's own record decides; a summary.json left from before this launch is not it (compared by
    # file identity, not clocks: the folder may be on a network file system).
    summary = None
    if summary_path.is_file() and _identity(summary_path) != before:
        summary = json.loads(summary_path.read_text())
    status = (summary or {}).get("status")
    if status in ("finished", "preempted"):
        return summary
    if status == "diverged" or rc == 3:
        raise TrainingDiverged(
            (summary or {}).get("error", "see above"), (summary or {}).get("diverged_at_step")
        )
    if rc == 2:
        raise ConfigError(f"the job {run_dir.name} was refused at start-up (its message is above)")
    if rc == 4:  # src/train.py's status for a full disk
        raise OSError(errno.ENOSPC, f"the job {run_dir.name} ran out of disk space (its message is above)")
    raise RuntimeError(f"the job {run_dir.name} ({' '.join(command)}) exited with status {rc}")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns
