"""One launch at a time per run folder: `<run_dir>/.lock`.

The run folder is the run's key, so two launches of the same command (a double submission, a requeue
while the first job still runs) target the same folder; both would append rows to metrics.csv, save
checkpoints and resume side by side. The launch's global rank 0 takes the lock before it reads the
folder's state and holds it until it exits (the other DDP ranks belong to the same launch); a second
launch is refused (exit status 2) and changes nothing.

The rule (docs/reliability.md, "One launch per run folder"):

- The lock file holds its owner: host, pid, the process's start time (so a reused pid is not taken for
  the owner), SLURM job id and restart count, the command. Its modification time is the owner's
  heartbeat, refreshed every HEARTBEAT_S seconds.
- Taking it is serialized by a POSIX record lock (fcntl) on the file: the kernel drops it when its
  process dies, and NFS (and Lustre mounted with `flock`) pass it between hosts. Under that lock the
  record decides:
  - empty or unreadable record: free (its owner died while writing it);
  - the same host: held while the pid lives with the recorded start time; a dead owner's lock is taken
    over;
  - another host (a shared file system): taken over when the record names this launch's SLURM job with
    a lower restart count (SLURM runs one instance of a job at a time: a requeued job's earlier
    instance is gone), or when its heartbeat is older than STALE_AFTER_S (the owner's node died or lost
    the file system). Otherwise refused, naming the owner and the age of its heartbeat.
- Released on exit: the file is removed while the record lock is still held, so a launch that opened
  the old file re-opens the path instead of locking a removed file.

Standard library only: a test holds a lock from a bare subprocess.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bnrepro.errors import ReproError

LOCK_NAME = ".lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 10 * 60.0  # another host's lock without a heartbeat for this long is taken over
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunLockedError(ReproError, RuntimeError):
    """The run folder is in use by another launch; nothing was changed."""


class RunFolderNotWritable(ReproError, PermissionError):
    """The run folder (or the folder that would hold it) cannot be written; nothing was changed."""


def not_writable(path: Path, e: OSError) -> RunFolderNotWritable:
    return RunFolderNotWritable(
        f"cannot write in {path} ({e.strerror or e}). Nothing was changed. The runs folder must be "
        f"writable: check its permissions and mount, or choose another one with runs_root=<folder>."
    )


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat, field 22); None where
    /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


def _slurm_restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def owner_record() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": _slurm_restarts(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def damaged_because(record: dict) -> str | None:
    """Why a record cannot be an owner's (no launch writes it so: edited by hand, or another program's), or
    None. A record of an older version lacks fields, which take their cautious defaults instead: no
    pid_start (a live pid counts as the owner), no SLURM fields (no requeue rule)."""
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return f"its pid {pid!r} is not a process id"
    if not isinstance(record.get("host"), str):
        return f"its host {record.get('host')!r} is not a host name"
    return None


def stale_because(record: dict, heartbeat_age_s: float) -> str | None:
    """Why a lock held by `record` may be taken over, or None while its owner may still run."""
    if (damage := damaged_because(record)) is not None:
        # Only reached while the record lock is free: no live launch on a file system with record locks
        # holds this file.
        return f"its record is damaged ({damage})"
    if record.get("host") == socket.gethostname():
        if not _alive(int(record["pid"]), record.get("pid_start")):
            return f"its process {record['pid']} on this host has exited"
        return None
    job = os.environ.get("SLURM_JOB_ID")
    restarts = record.get("slurm_restart_count") or 0
    if (
        job
        and record.get("slurm_job_id") == job
        and isinstance(restarts, int)
        and restarts < _slurm_restarts()
    ):
        return f"it is an earlier instance of this SLURM job {job}, which was requeued"
    if heartbeat_age_s > STALE_AFTER_S:
        return f"its heartbeat stopped {heartbeat_age_s / 60:.0f} minutes ago"
    return None


class RunLock:
    """`with RunLock(run_dir):` or acquire() / release(). acquire() raises RunLockedError when another live
    launch holds the folder, RunFolderNotWritable when it cannot be written."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.took_over: str | None = None  # why an earlier owner's lock was taken over, if it was
        self._created: list[Path] = []  # folders acquire() created: removed again on release if empty
        self._stop = threading.Event()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._created = missing
            for _ in range(100):  # only repeated while owners come and go between open and lock
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    if self._try(fd):
                        break
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
            else:
                raise RunLockedError(f"{self.run_dir}: could not take {self.path}: it keeps changing owners")
        except OSError as e:
            self.release()
            if e.errno in NOT_WRITABLE:
                raise not_writable(self.run_dir, e) from e
            raise
        except BaseException:
            self.release()
            raise
        threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True).start()

    def _try(self, fd: int) -> bool:
        """True: `fd` holds the lock now. False: the file was removed meanwhile, open it again."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_elsewhere = False
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            held_elsewhere = True
        try:
            same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            return False
        record = _read_record(fd)
        age = time.time() - os.fstat(fd).st_mtime
        if held_elsewhere:
            raise RunLockedError(self._refusal(record, age))
        if record is not None:
            why = stale_because(record, age)
            if why is None:  # alive, though the record lock did not say so (a file system without it)
                raise RunLockedError(self._refusal(record, age))
            self.took_over = (
                f"took over {self.path} of pid {record.get('pid')!s} on {record.get('host')!s}: {why}"
            )
            print(f"warning: {self.took_over}", file=sys.stderr)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner_record()).encode(), 0)
            os.fsync(fd)
        except OSError:  # a full disk: no empty or half-written lock left behind (this launch holds it)
            self.path.unlink(missing_ok=True)
            raise
        self.fd = fd
        return True

    def _refusal(self, record: dict | None, age: float) -> str:
        who = (
            f"pid {record.get('pid')} on {record.get('host')}"
            + (f" (SLURM job {record['slurm_job_id']})" if record.get("slurm_job_id") else "")
            + f", since {record.get('since')}, last heartbeat {age:.0f} s ago: {record.get('command')}"
            if record
            else "another process"
        )
        return (
            f"{self.run_dir} is in use by another launch of this run ({who}). Nothing was changed. Wait "
            f"for it to end, or give this launch its own folder with run_name=<name>. If that launch is "
            f"gone, its lock ({self.path}) is taken over by itself: at once on the same host, by a requeue "
            f"of the same SLURM job, or after {STALE_AFTER_S / 60:.0f} minutes without a heartbeat from "
            f"another host; delete the file to take it over now."
        )

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            fd = self.fd
            if fd is None:
                return
            try:
                os.utime(fd)
            except OSError:
                pass  # a missed beat; the owner only looks gone after STALE_AFTER_S of them

    def release(self) -> None:
        """Removes the lock file (when it is this launch's), and the folders acquire() created if they
        are still empty (a refused launch leaves the runs folder as it found it)."""
        self._stop.set()
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)  # drops the record lock, after the unlink
        for folder in self._created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: it holds the run now
        self._created = []


def _read_record(fd: int) -> dict | None:
    size = os.fstat(fd).st_size
    if not size:
        return None
    try:
        record = json.loads(os.pread(fd, size, 0))
    except ValueError:
        return None  # its owner died while writing it
    return record if isinstance(record, dict) and "pid" in record else None
