"""A run folder is owned by one launch at a time, and a refused launch leaves it as it was."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from bnrepro.run import train
from bnrepro.runlock import LOCK_NAME, STALE_AFTER_S, RunLock, RunLockedError
from conftest import ROOT, compose_train, files, train_main

HOLD = (
    "import sys; from pathlib import Path; from bnrepro.runlock import RunLock\n"
    "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); sys.stdin.read()\n"
)


@pytest.fixture
def holder():
    """Starts a process that takes a run folder's lock and keeps it until the test ends."""
    procs = []

    def hold(run_dir):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.communicate(input="", timeout=30)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_record(run_dir, **record):
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None, "since": "then",
            "command": "python src/train.py", "slurm_job_id": None, "slurm_restart_count": 0}  # fmt: skip
    (run_dir / LOCK_NAME).write_text(json.dumps({**base, **record}))


def test_a_second_launch_is_refused_while_the_first_holds_the_run_folder(partial_run, holder, capsys):
    overrides, run_dir = partial_run
    assert not (run_dir / LOCK_NAME).exists()  # released when the launch ended
    owner = holder(run_dir)
    kept = files(run_dir)
    with pytest.raises(RunLockedError, match=f"in use by another launch of this run \\(pid {owner.pid} on "):
        train(compose_train(*overrides), run_dir)
    assert files(run_dir) == kept
    # src/train.py's main: exit status 2 and the owner named.
    status, err = train_main(*overrides), capsys.readouterr().err
    assert status == 2, err[-2000:]
    assert f"error: {run_dir} is in use by another launch of this run (pid {owner.pid}" in err
    assert files(run_dir) == kept  # not even Hydra's record of the launch or its log file


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released_at_the_end(partial_run, capfd):
    overrides, run_dir = partial_run
    pid = dead_pid()
    write_record(run_dir, pid=pid)
    summary = train(compose_train(*overrides), run_dir)
    assert summary["status"] == "finished" and summary["resumed_at_steps"] == [10]
    assert f"took over {run_dir / LOCK_NAME} of pid {pid}" in capfd.readouterr().err
    assert not (run_dir / LOCK_NAME).exists()


def test_who_may_take_over_a_lock(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    # The same host: a live owner holds it, also where the record lock is not seen (a pid of its own).
    write_record(run_dir, pid=os.getppid())
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()} on {socket.gethostname()}"):
        RunLock(run_dir).acquire()
    # ... but a reused pid (another start time) is not the owner.
    write_record(run_dir, pid=os.getppid(), pid_start="1")
    with RunLock(run_dir) as lock:
        assert "has exited" in lock.took_over
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run_dir / LOCK_NAME).exists()
    # Another host with a recent heartbeat: refused; its heartbeat stopped long ago: taken over.
    write_record(run_dir, host="node-17", pid=12345)
    with pytest.raises(RunLockedError, match="pid 12345 on node-17.*last heartbeat 0 s ago"):
        RunLock(run_dir).acquire()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(run_dir / LOCK_NAME, (old, old))
    with RunLock(run_dir) as lock:
        assert "heartbeat stopped 11 minutes ago" in lock.took_over
    # A requeue of the same SLURM job on another node takes it over at once; another job does not.
    write_record(run_dir, host="node-17", pid=12345, slurm_job_id="991", slurm_restart_count=0)
    monkeypatch.setenv("SLURM_JOB_ID", "992")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RunLockedError, match="SLURM job 991"):
        RunLock(run_dir).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    with RunLock(run_dir) as lock:
        assert "earlier instance of this SLURM job 991" in lock.took_over
    # An empty or half-written record: its owner died while writing it.
    (run_dir / LOCK_NAME).write_text('{"host": "node-1')
    with RunLock(run_dir) as lock:
        assert lock.took_over is None


def test_a_lock_refused_launch_creates_no_folder_and_a_new_folder_is_removed_again(tmp_path, holder):
    run_dir = tmp_path / "runs" / "task" / "r"
    holder(run_dir)
    with pytest.raises(RunLockedError):
        RunLock(run_dir).acquire()
    lock = RunLock(tmp_path / "other" / "task" / "r")
    lock.acquire()
    lock.release()  # nothing was written beside the lock: the folders it made go with it
    assert not (tmp_path / "other").exists()


def test_a_refused_launch_writes_nothing_and_an_accepted_one_its_record_and_log(partial_run, tmp_path):
    overrides, run_dir = partial_run
    kept = files(run_dir)
    assert train_main(*overrides, f"data.root={tmp_path / 'nowhere'}") == 2  # refused at start-up
    assert files(run_dir) == kept  # no .hydra/<time>/, no train.log line
    # A new run refused: no folder is left, nor the task's folder Hydra made for it.
    assert train_main(*overrides, f"data.root={tmp_path / 'nowhere'}", "run_name=new", "task=t") == 2
    assert sorted(p.name for p in run_dir.parent.parent.iterdir()) == ["mnist"]
    assert train_main(*overrides, f"data.root={tmp_path / 'nowhere'}", f"runs_root={tmp_path / 'new'}") == 2
    assert not (tmp_path / "new").exists()

    assert train_main(*overrides) == 0  # accepted: resumes, and records the launch as Hydra would
    records = [p for p in (run_dir / ".hydra").iterdir() if p.is_dir()]
    assert len(records) == 1 and {p.name for p in records[0].iterdir()} == {"config.yaml", "hydra.yaml",
                                                                            "overrides.yaml"}  # fmt: skip
    assert "- run_name=r" in (records[0] / "overrides.yaml").read_text()
    assert (run_dir / "train.log").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_damaged_and_older_lock_records_and_a_live_owner_on_another_host(tmp_path, holder, capsys):
    run_dir = tmp_path / "r"
    # A pid that is not a number (edited by hand, another program's file): taken over, saying why.
    for pid in ("abc", None, -3, 1.5):
        write_record(run_dir, pid=pid)
        with RunLock(run_dir) as lock:
            assert f"its record is damaged (its pid {pid!r} is not a process id)" in lock.took_over
        assert f"took over {run_dir / LOCK_NAME} of pid {pid}" in capsys.readouterr().err
    # A record of an older version (no start time, no SLURM fields): a live pid is the owner; a dead one
    # is not.
    older = {"host": socket.gethostname(), "since": "then", "command": "python src/train.py"}
    (run_dir / LOCK_NAME).write_text(json.dumps({**older, "pid": os.getppid()}))
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()} on "):
        RunLock(run_dir).acquire()
    (run_dir / LOCK_NAME).write_text(json.dumps({**older, "pid": dead_pid()}))
    with RunLock(run_dir) as lock:
        assert "has exited" in lock.took_over
    # A live owner on another host whose record lock the shared file system passes on: refused, however
    # old its heartbeat.
    holder(run_dir)
    write_record(run_dir, host="node-17", pid=12345)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(run_dir / LOCK_NAME, (old, old))
    with pytest.raises(RunLockedError, match="pid 12345 on node-17.*last heartbeat 66\\d s ago"):
        RunLock(run_dir).acquire()
