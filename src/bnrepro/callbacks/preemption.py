"""Preemption: SIGTERM or SIGUSR1 -> checkpoints/last.ckpt at the end of the current step, clean exit.

Lightning turns SIGTERM into `trainer.received_sigterm` and stops with SIGTERMException at the end of
the training batch; this callback saves last.ckpt just before that, at a step boundary (a checkpoint
taken inside a signal handler could catch a step half done). SIGUSR1 -- what SLURM sends ahead of a
time limit with `#SBATCH --signal=SIGUSR1@90` -- is handled the same way and, under SLURM, requeues
the job (`scontrol requeue`), whose relaunch resumes from last.ckpt in the same run folder. SIGUSR2,
what submitit (hydra/launcher=slurm) asks with, is handled as SIGUSR1 while training runs: submitit's
own handler would requeue and exit from inside the signal handler, mid-step. Lightning's
own SLURM requeue handler is off (trainer: SLURMEnvironment(auto_requeue=False)) because it saves from
inside the signal handler. SIGINT (Ctrl-C) while training runs is a user's stop, handled like SIGTERM
(saved, recorded as preempted, relaunch to continue) instead of Lightning's KeyboardInterrupt exit,
which recorded the run as failed; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from bnrepro.lightning_compat import clear_stop_request, request_stop


class Preemption(L.Callback):
    """`checkpoint`: where the preemption save goes; None: <run folder>/checkpoints/last.ckpt (the
    trainer's default_root_dir). `stop_at_step`: a test's stand-in for a SIGTERM at that step."""

    def __init__(self, requeue: bool, stop_at_step: int | None, checkpoint: str | Path | None = None):
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.requeue, self.stop_at_step = requeue, stop_at_step
        self.sigusr1 = self.sigint = self.sigterm = self.pending = False
        self.saved_at: int | None = None  # the step of the preemption checkpoint, once written
        self._previous = None

    def _on_sigusr1(self, signum, frame) -> None:
        self.sigusr1 = True

    def _on_sigint(self, signum, frame) -> None:
        self.sigint = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: KeyboardInterrupt
        print("\nCtrl-C: saving at the end of this step, then stopping (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)  # fmt: skip

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.checkpoint is None:
            self.checkpoint = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_fit_start(self, trainer, pl_module):
        self.sigint = self.sigterm = False
        if hasattr(signal, "SIGUSR1"):  # POSIX
            self._previous = {s: signal.signal(s, self._on_sigusr1) for s in (signal.SIGUSR1, signal.SIGUSR2)}
        if threading.current_thread() is threading.main_thread():  # only there can Python set handlers
            lightnings = signal.getsignal(signal.SIGTERM)

            def on_sigterm(signum, frame):
                # Lightning's handler forwards the signal to its child processes and raises its flag; the
                # flag is withdrawn at once and raised again by this callback at the next step boundary,
                # after last.ckpt is saved. Left raised, Lightning would stop at the end of the batch under
                # way -- after this callback's on_train_batch_end had looked -- with no checkpoint there.
                if callable(lightnings):
                    lightnings(signum, frame)
                clear_stop_request(trainer)
                self.sigterm = True

            self._previous = {
                **(self._previous or {}),
                signal.SIGINT: signal.signal(signal.SIGINT, self._on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        injected = self.stop_at_step is not None and trainer.global_step >= self.stop_at_step
        stop = self.sigint or self.sigterm or trainer.received_sigterm
        asked = self.sigusr1 or stop or injected
        # One decision for all ranks: each must take part in the checkpoint's barrier, or none.
        if not trainer.strategy.reduce_boolean_decision(asked, all=False):
            return
        if trainer.global_step >= trainer.max_steps or batch_idx + 1 == trainer.num_training_batches:
            # The period's last step: evaluate first, as the uninterrupted run does (Lightning would stop
            # before its evaluation, and a checkpoint from there replays the period); then stop with
            # the period's regular last.ckpt. At the run's last step, nothing stops: the final
            # evaluation and Alg. 2 are next, and then the run is finished anyway.
            self._defer(trainer)
            return
        self._stop(trainer, save=True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        # Lightning would abandon the evaluation on SIGTERM and lose the period: finish it, stop after.
        if (trainer.received_sigterm or self.sigterm) and not trainer.sanity_checking:
            self._defer(trainer)

    def _defer(self, trainer) -> None:
        clear_stop_request(trainer)
        self.pending = True

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        pending = trainer.strategy.reduce_boolean_decision(self.pending, all=False)
        self.pending = False
        if pending and trainer.global_step < trainer.max_steps:
            self._stop(trainer, save=False)  # ModelCheckpoint writes last.ckpt right after this hook

    def _stop(self, trainer, save: bool) -> None:
        if save:
            trainer.save_checkpoint(self.checkpoint)
        self.saved_at = trainer.global_step
        rank_zero_info(f"preempted: {self.checkpoint} at step {trainer.global_step}; relaunch to resume")
        request_stop(trainer)  # Lightning stops at its next check, as on SIGTERM

    def _requeue(self) -> None:
        """Under SLURM after SIGUSR1, once every checkpoint is written (requeueing kills this job)."""
        job = os.environ.get("SLURM_JOB_ID")
        if self.sigusr1 and self.requeue and job and self.saved_at is not None:
            result = subprocess.call(["scontrol", "requeue", job])
            if result != 0:
                rank_zero_warn(f"`scontrol requeue {job}` failed ({result}); relaunch the job by hand")

    def _restore(self) -> None:
        for s, handler in (self._previous or {}).items():
            signal.signal(s, handler)
        self._previous = None

    def on_fit_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()
        if trainer.is_global_zero:
            self._requeue()
