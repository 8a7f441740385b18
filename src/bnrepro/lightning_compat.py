"""Every use of Lightning's internals, one function each, so a Lightning upgrade fails here and only here.

Written against lightning 2.6 (tested with 2.6.6). Each function says which internal it needs and the
public alternative, if there is one; each checks that the internal is still there and otherwise raises
a RuntimeError naming the installed version and this module, instead of silently doing nothing (setting
an attribute that no longer exists would just create it). tests/test_lightning_compat.py exercises each
function on a real Trainer: run it first after an upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import lightning

WRITTEN_AGAINST = "2.6"


def _changed(what: str) -> RuntimeError:
    return RuntimeError(
        f"lightning {lightning.__version__} changed {what}; bnrepro/lightning_compat.py was written against "
        f"lightning {WRITTEN_AGAINST}: update bnrepro/lightning_compat.py"
    )


def _signal_connector(trainer):
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "received_sigterm"):
        raise _changed(
            "where the Trainer keeps its SIGTERM flag (trainer._signal_connector.received_sigterm)"
        )
    return connector


def _set_stop_flag(trainer, value: bool) -> None:
    _signal_connector(trainer).received_sigterm = value
    try:
        seen = trainer.received_sigterm
    except AttributeError:
        seen = None
    if seen is not value:
        raise _changed(
            "Trainer.received_sigterm (it no longer reads trainer._signal_connector.received_sigterm)"
        )


def request_stop(trainer) -> None:
    """Makes Lightning stop as if it had received SIGTERM: at its next check (end of the training batch,
    or of the epoch after an evaluation) it raises SIGTERMException, which run.py reports as preempted.

    Internal: sets `trainer._signal_connector.received_sigterm` (lightning 2.6; the public
    `Trainer.received_sigterm`, added in 2.0, only reads it). Public alternative: `trainer.should_stop =
    True`, but that ends the fit as finished (no SIGTERMException, and it waits for min_steps), which
    would make a preempted run look finished; the preemption callback needs Lightning's SIGTERM path.
    """
    _set_stop_flag(trainer, True)


def clear_stop_request(trainer) -> None:
    """Withdraws a SIGTERM Lightning has received (or request_stop), so it does not abandon the
    evaluation or the step under way; the preemption callback asks for the stop again afterwards.

    Internal: sets `trainer._signal_connector.received_sigterm = False` (lightning 2.6). Public
    alternative: none (`Trainer.received_sigterm` is read-only).
    """
    _set_stop_flag(trainer, False)


def count_optimizer_steps(optimizer, n: int) -> None:
    """Counts `n` optimizer steps that ran outside Lightning (the CUDA graph of lit/graphed.py replays
    the torch optimizer's step itself) in Lightning's step counter, so `trainer.global_step`, max_steps,
    checkpoints and resumes see them. Call it inside `training_step` under manual optimization with the
    LightningOptimizer from `self.optimizers()`.

    Internal: the hooks `LightningOptimizer._on_before_step` / `_on_after_step`, which the manual
    optimization loop points at its step-progress counter for the duration of training_step (lightning
    2.6); `LightningOptimizer.step` calls them around the real step. Public alternative: none --
    `optimizer.step()` counts a step but also runs one, and the graph has already run it.
    """
    from lightning.pytorch.core.optimizer import do_nothing_closure

    before = getattr(optimizer, "_on_before_step", None)
    after = getattr(optimizer, "_on_after_step", None)
    if before is None or after is None:
        raise _changed("LightningOptimizer's step hooks (_on_before_step / _on_after_step)")
    if before is do_nothing_closure or after is do_nothing_closure:
        raise _changed(
            "how LightningOptimizer counts steps (its _on_before_step / _on_after_step hooks are not "
            "connected to the loop's step counter; this must be called inside training_step under "
            "manual optimization)"
        )
    for _ in range(n):
        before()
        after()


def batches_done_in_epoch(trainer) -> int:
    """The training batches Lightning counts as done in its current epoch when it asks for the training
    loader: on a resumed run's first request, those its checkpoint recorded (a checkpoint written at an
    evaluation holds the whole ended epoch, a preemption's part of one); otherwise 0, a new epoch. The
    loader's length must then count that epoch's batches (data/device_loader.py): Lightning ends the
    epoch when the count reaches it, and evaluates there.

    Internal: `trainer.fit_loop.restarting` and `fit_loop.epoch_loop.batch_progress.current.processed`
    (lightning 2.6; `processed`, not `completed`: a preemption's checkpoint is written in
    on_train_batch_end, before the batch counts as completed). Public alternative: none.
    """
    loop = getattr(trainer, "fit_loop", None)
    try:
        restarting, done = loop.restarting, loop.epoch_loop.batch_progress.current.processed
    except AttributeError as e:
        raise _changed(
            "the fit loop's restart flag or batch counter (fit_loop.epoch_loop.batch_progress.current)"
        ) from e
    return done if restarting else 0


class Placement(NamedTuple):
    """Where and how `L.Trainer(**kwargs)` will train, known before it is built."""

    world_size: int  # processes over all nodes
    num_nodes: int
    global_rank: int  # this process's rank (0 in the launching process)
    cuda: bool  # the devices are CUDA GPUs
    precision: str  # Lightning's own name of the precision ("32" becomes "32-true", ...)
    reruns_command: bool  # the other local ranks are started by re-running sys.argv (launching.py)


def placement(**trainer_kwargs) -> Placement:
    """The devices, ranks and precision that `L.Trainer(**trainer_kwargs)` resolves, for the run plan
    (bnrepro/plan.py): the world size decides the global batch, and with it the loop's length, which
    `L.Trainer(max_steps=...)` then takes. Refuses what Lightning refuses (an unknown strategy, accelerator
    gpu without a GPU, ...) with Lightning's own exception.

    Internal: `lightning.pytorch.trainer.connectors.accelerator_connector._AcceleratorConnector`, the part of
    `L.Trainer.__init__` that parses accelerator, devices, num_nodes, strategy, precision and plugins and
    sets the strategy's ranks (lightning 2.6); the Trainer builds its own again from the same arguments.
    The launcher class `lightning.pytorch.strategies.launchers._SubprocessScriptLauncher` (Lightning's
    own trainer/call.py makes the same isinstance check). Public alternative: building a whole L.Trainer
    only to read these, and setting its loop length afterwards.
    """
    try:
        from lightning.pytorch.strategies import ParallelStrategy
        from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
        from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector
    except ImportError as e:
        raise _changed("the Trainer's accelerator connector or its launcher classes") from e
    names = ("devices", "num_nodes", "accelerator", "strategy", "plugins", "precision", "sync_batchnorm",
             "benchmark", "use_distributed_sampler", "deterministic")  # fmt: skip
    connector = _AcceleratorConnector(**{k: v for k, v in trainer_kwargs.items() if k in names})
    strategy = getattr(connector, "strategy", None)
    if strategy is None or not hasattr(strategy, "launcher") or not hasattr(strategy, "precision_plugin"):
        raise _changed("the accelerator connector's strategy (its launcher and precision_plugin)")
    # Trainer.num_devices: the parallel strategy's devices, or the one root device
    num_devices = len(strategy.parallel_devices) if isinstance(strategy, ParallelStrategy) else 1
    reruns = (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and num_devices > 1
        and not strategy.cluster_environment.creates_processes_externally
    )
    return Placement(
        world_size=getattr(strategy, "world_size", 1),  # as Trainer.world_size reads it
        num_nodes=getattr(strategy, "num_nodes", 1),
        global_rank=strategy.global_rank,
        cuda=strategy.root_device.type == "cuda",
        precision=str(strategy.precision_plugin.precision),
        reruns_command=reruns,
    )


def continue_csv(logger, rows: bytes) -> None:
    """Makes the run's CSV logger (run_csv_logger) continue a metrics.csv that holds `rows` (its header
    line first; b"": start a fresh file): later rows are appended under the same header. The file is
    replaced whole (a temporary file, then a rename), never emptied first. Call it on rank 0 (the only
    rank with a writer).

    Internals (lightning 2.6, since 2.1 for the appending): the writer appends rows as long as its
    `metrics_keys` (the columns it has written) cover them, so they are set to the file's header.
    Public alternative: none; CSVLogger cannot resume a file.
    """
    from bnrepro.provenance import write_bytes_atomic

    writer = logger.experiment
    keys, path = getattr(writer, "metrics_keys", None), getattr(writer, "metrics_file_path", None)
    if not isinstance(keys, list) or path is None:
        raise _changed("the CSV logger's writer (its metrics_keys list and metrics_file_path)")
    if rows:
        write_bytes_atomic(Path(path), rows)
        writer.metrics_keys = rows.decode().splitlines()[0].split(",")
    else:
        Path(path).unlink(missing_ok=True)
        writer.metrics_keys = []


def _atomic_csv_writer():
    """Lightning's CSV ExperimentWriter, changed where it would lose rows. Made, it leaves metrics.csv
    alone (Lightning's deletes it; continue_csv decides what the file keeps). A new column rewrites the
    file through a temporary file and a rename (Lightning's opens it with "w": a kill there -- at a
    run's end, when Alg. 2's columns arrive -- left an empty file). It remembers the rows of the last
    step it wrote (`last_rows`), which checkpointing.RowsInCheckpoint stores in each checkpoint.

    Internals (lightning 2.6): ExperimentWriter's `_check_log_dir_exists` (deletes the file),
    `_rewrite_with_new_header` (rewrites it) and `save` (writes the buffered `metrics`). Public
    alternative: none.
    """
    import csv
    import io

    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    from bnrepro.provenance import write_bytes_atomic

    for name in ("_check_log_dir_exists", "_rewrite_with_new_header", "save"):
        if not callable(getattr(ExperimentWriter, name, None)):
            raise _changed(f"the CSV logger's writer (ExperimentWriter.{name})")

    class AtomicCSVWriter(ExperimentWriter):
        def __init__(self, log_dir: str) -> None:
            super().__init__(log_dir)
            self.last_rows: list[dict] = []

        def _check_log_dir_exists(self) -> None:
            pass

        def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
            path = Path(self.metrics_file_path)
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            out = io.StringIO(newline="")
            writer = csv.DictWriter(out, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            write_bytes_atomic(path, out.getvalue().encode())

        def save(self) -> None:
            if self.metrics:  # what the next checkpoint stores: the rows of its own step
                step = self.metrics[-1].get("step")
                earlier = [r for r in self.last_rows if r.get("step") == step]
                self.last_rows = earlier + [dict(r) for r in self.metrics if r.get("step") == step]
            super().save()

    return AtomicCSVWriter


def run_csv_logger(run_dir):
    """Lightning's CSVLogger writing <run_dir>/metrics.csv with _atomic_csv_writer's writer (rank 0).

    Internals (lightning 2.6): CSVLogger keeps its writer in `_experiment`, made on first use by the
    `experiment` property; set first, ours is used. Public alternative: none.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(run_dir), name="", version="")
    if getattr(logger, "_experiment", False) is not None:
        raise _changed("where CSVLogger keeps its writer (CSVLogger._experiment)")
    if rank_zero_only.rank == 0:  # only rank 0 writes metrics.csv
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        logger._experiment = _atomic_csv_writer()(log_dir=logger.log_dir)
    return logger


def drop_wandb_anonymous(logger) -> None:
    """Removes `anonymous` from the arguments a WandbLogger will pass to wandb.init. Lightning 2.6 always
    passes it (None unless asked for), and W&B, whose setting is deprecated, then prints "The anonymous
    setting has no effect" for every run. Internal: WandbLogger._wandb_init (no public alternative)."""
    init = getattr(logger, "_wandb_init", None)
    if not isinstance(init, dict) or "anonymous" not in init:
        raise _changed(
            "the arguments WandbLogger keeps for wandb.init (WandbLogger._wandb_init['anonymous'])"
        )
    if init["anonymous"] is None:  # only the value Lightning sets when nobody asked for it
        del init["anonymous"]
