"""What `python src/train.py` does with the composed config: plan the run, then build it and train it.

    train(cfg, run_dir)
      validate(cfg)                    config/checks.py: what a type cannot express
      plan(cfg, run_dir)               plan.py: devices, global batch, loop, fast paths; changes nothing
      with the run folder's lock:      runlock.py: one launch at a time per folder
        plan_folder(run)               plan.py: fresh start, resume from a checkpoint, or a refusal
        execute(run, folder)           below: build each object with its values, check, then fit

Everything that can be wrong with the input is found before Lightning spawns DDP workers and before
the run folder changes: config values, the data set's presence, the network's arguments and inputs,
and whether the run folder already holds a finished run.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from bnrepro.callbacks.data_errors import StopOnUnreadableImage
from bnrepro.callbacks.preemption import Preemption
from bnrepro.callbacks.progress import progress_bar
from bnrepro.callbacks.rng_state import RNGState
from bnrepro.callbacks.summary import RunSummary
from bnrepro.checkpointing import (
    AtomicCheckpointIO,
    ConfigInCheckpoint,
    EvaluationCheckpoint,
    RowsInCheckpoint,
    checkpoint_step,
)
from bnrepro.config.build import build
from bnrepro.config.checks import validate
from bnrepro.errors import ConfigError
from bnrepro.launch_record import run_log, write_record
from bnrepro.launching import in_multirun, run_job_in_own_process
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.multistep import MultiStepClassifier
from bnrepro.loggers import build_loggers, close_wandb
from bnrepro.models import build_net
from bnrepro.plan import FolderPlan, RunExistsError, RunPlan, placement_of, plan, plan_folder
from bnrepro.provenance import write_text_atomic
from bnrepro.runlock import RunLock
from bnrepro.speed import apply_to_net, threads_restored, use_threads

__all__ = ["RunExistsError", "train"]

# The run folder deliberately holds more than Lightning's CSV files (config, summary, checkpoints).
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


def train(cfg, run_dir: Path) -> dict | None:
    """Trains the configured run into `run_dir`; returns the summary written there (None off rank 0).

    Raises TrainingDiverged (after writing summary.json with status "diverged") when the loss blows up.
    """
    validate(cfg)
    if in_multirun():  # decided before "auto" is resolved: checking bf16 support would start CUDA here
        launch = {k: cfg.trainer[k] for k in ("accelerator", "devices", "num_nodes", "strategy")}
        if placement_of(launch).reruns_command:
            return run_job_in_own_process(run_dir)  # see launching.py: rank 1 would re-run the whole sweep
    run = plan(cfg, run_dir)
    # One launch at a time per run folder (runlock.py): taken before the folder's state is read, by global
    # rank 0 only (the other ranks are this launch's own), and held until this launch ends.
    lock = RunLock(run_dir) if run.placement.global_rank == 0 else contextlib.nullcontext()
    with threads_restored(), lock:  # speed.num_threads applies to this run only
        return execute(run, plan_folder(run))


def build_module(run: RunPlan, net) -> ClassifierModule:
    """The LightningModule: the network, the optimizer group as a partial, the LR schedule. Lightning's
    automatic optimization, one step per batch; several steps per batch (MultiStepClassifier) when the
    plan's steps_per_batch > 1 or the steps are CUDA graphs (lit/multistep.py)."""
    cfg, speed = run.cfg, run.speed
    kwargs = dict(
        num_classes=net.num_classes,
        global_batch=run.global_batch,
        optimizer=build(cfg.optimizer, "optimizer"),
        schedule=build(cfg.lr_schedule, "lr_schedule"),
        reference_batch=cfg.lr_scaling.reference_batch,
        lr_rule=cfg.lr_scaling.rule,
        aux_loss_weight=cfg.model.aux_loss_weight,
        decay_all_params=cfg.model.decay_all_params,
        fused_optimizer=speed.fused_optimizer,
        channels_last=speed.channels_last,
    )
    if run.multistep:
        return MultiStepClassifier(net, **kwargs, cuda_graphs=speed.cuda_graphs)
    return ClassifierModule(net, **kwargs)


def build_callbacks(run: RunPlan) -> list[L.Callback]:
    """The trainer's callbacks, in the order Lightning calls them (the list's order; asserted below):

    1. RunSummary first: summary.json sees every later callback's failure. Built last, with its final
       facts: the plan's and every optional callback's own (summary_info).
    2. The optional ones the `callbacks` config turns on, in the schema's order (divergence, preemption,
       population_stats, percentiles), before the checkpoints: a batch that diverged stops the run and
       is never checkpointed (DivergenceStop); a preempted one saves first (Preemption); Alg. 2's
       evaluation restores BN's moving averages before last.ckpt is written (PopulationStatistics).
    3. The checkpoints: best.ckpt, then last.ckpt after every evaluation period (not `save_last=True`:
       Lightning 2.6 refreshes that one only at steps where `best` improved); then the config copy that
       goes into every checkpoint, and the rows of the checkpoint's own step; then the progress bar.
    """
    cfg, run_dir = run.cfg, run.run_dir
    optional = [build(node, f"callbacks.{key}") for key, node in cfg.callbacks.items() if node is not None]
    info = dict(run.info)
    for callback in optional:
        info.update(getattr(callback, "summary_info", dict)())
    checkpoints = [
        EvaluationCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc", mode="max"),
        EvaluationCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
    ]  # fmt: skip
    callbacks = [
        RunSummary(run_dir, info),
        RNGState(),
        StopOnUnreadableImage(),  # only image-folder data sets carry such batches; a no-op for the rest
        *optional,
        *checkpoints,
        ConfigInCheckpoint(run.resolved),
        RowsInCheckpoint(),  # each checkpoint keeps its own step's metrics.csv rows (a torn row is rewritten)
        *progress_bar(cfg.trainer.enable_progress_bar),  # tqdm on a terminal, plain lines in a log
    ]
    first_checkpoint = callbacks.index(checkpoints[0])
    assert all(callbacks.index(c) < first_checkpoint for c in optional), "optional callbacks go first"
    return callbacks


def check_input(net, input_shape: tuple[int, ...], cfg) -> None:
    """One forward pass of a zero example in eval mode: a network that cannot take the data set's inputs
    (the MNIST MLP on images, a too small image for BN-Inception) is refused here, not at step 1."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise ConfigError(
            f"model={cfg.model.name} (model.net.model_name={cfg.model.net.get('model_name')}) cannot take "
            f"data={cfg.data.name}'s inputs of shape {tuple(input_shape)}: {str(e).splitlines()[0]}"
        ) from e
    finally:
        net.train(was_training)


def execute(run: RunPlan, folder: FolderPlan) -> dict | None:
    """Builds every object with the plan's values, runs the checks that need them, then -- only then --
    changes the run folder and trains."""
    cfg, run_dir = run.cfg, run.run_dir
    use_threads(run.speed.num_threads)  # before the data set is read: its conversion uses them too
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_net(cfg.model.net)
    dm = build(cfg.data, "data", seed=cfg.seed, eval_every_steps=run.loop.eval_every,
               extra_eval_steps=run.loop.extra_eval_steps,
               steps_per_batch=run.steps_per_batch if run.multistep else None)  # fmt: skip
    module = build_module(run, net)
    callbacks = build_callbacks(run)
    check_input(net, dm.input_shape, cfg)
    for callback in callbacks:  # e.g. the percentiles' module and unit exist in this network
        if hasattr(callback, "check"):
            callback.check(net, dm.input_shape)
    apply_to_net(net, run.speed)  # after the checks' forward passes: compiling is lazy, on the first step
    dm.prepare_data()  # fails here, before any DDP process exists, when the data set is missing

    # Every check has passed: only now does anything in the run folder change.
    run_dir.mkdir(parents=True, exist_ok=True)
    if run.placement.global_rank == 0:
        apply_folder_plan(run_dir, folder)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(run.resolved, sort_keys=False))
        write_record(run_dir, cfg)  # Hydra's record of this launch, .hydra/<time>/
    with run_log(run_dir):  # train.log, Hydra's job log, from here on
        plugins = [AtomicCheckpointIO()]
        if SLURMEnvironment.detect():  # requeue on SIGUSR1 is callbacks/preemption.py's, at a step boundary
            plugins.append(SLURMEnvironment(auto_requeue=False))
        trainer = L.Trainer(
            **run.trainer_kwargs,  # max_steps: the plan's training length
            max_epochs=-1,
            check_val_every_n_epoch=1,  # one Lightning epoch = one evaluation period (data/device_loader.py)
            # Periods of different lengths (dense early evaluation, a short last one): Lightning reads a
            # loader's length once, so it asks for the loaders again each period. Not otherwise: an image
            # folder's persistent workers (and their random streams) live on from period to period.
            reload_dataloaders_every_n_epochs=1 if run.loop.extra_eval_steps else 0,
            log_every_n_steps=1,
            default_root_dir=str(run_dir),
            logger=build_loggers(cfg, run_dir, run.resolved, resume_step=folder.resume_step),
            callbacks=callbacks,
            plugins=plugins,
        )
        summary = callbacks[0]
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=folder.resume_from)
        except SIGTERMException:  # preempted: summary.json says so; callbacks/preemption.py saved last.ckpt
            report_preemption(trainer, run_dir, callbacks)
        finally:
            close_wandb(failed=summary.written is None or summary.written["status"] != "finished")
    return summary.written


def apply_folder_plan(run_dir: Path, folder: FolderPlan) -> None:
    """Rank 0, after every check: clear for overwrite, set corrupt checkpoints aside (renamed, kept),
    drop temporary files a killed write left behind (metrics.csv is trimmed by loggers.py)."""
    if folder.clear:
        for name in ("summary.json", "wandb_id", "metrics.csv", "unit_percentiles.npz"):
            (run_dir / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "wandb"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    for path in folder.corrupt:
        path.rename(path.with_name(path.name + ".corrupt"))
    for tmp in (run_dir / "checkpoints").glob(".*.partial"):
        tmp.unlink(missing_ok=True)


def report_preemption(trainer: L.Trainer, run_dir: Path, callbacks: list[L.Callback]) -> None:
    saved = next((c.saved_at for c in callbacks if isinstance(c, Preemption)), None)
    last = run_dir / "checkpoints" / "last.ckpt"
    if saved is None and last.is_file() and checkpoint_step(last) == trainer.global_step:
        # The signal came after the period's own last.ckpt was written (Lightning checks for it after
        # the checkpoint callbacks): that checkpoint is where the run stopped.
        saved = trainer.global_step
    if trainer.is_global_zero:
        where = (
            f"saved at step {saved}"
            if saved is not None
            else "stopped before its checkpoint (last.ckpt is older)"
        )
        print(f"preempted: {run_dir} {where}; relaunch the same command to resume")
