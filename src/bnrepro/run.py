"""Builds a run from the composed config and trains it: what `python src/train.py` does.

Everything that can be wrong with the input is checked here, in the launching process, before
Lightning spawns DDP workers: config values, the data set's presence, the network's arguments, and
whether the run folder already holds a finished run.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import OmegaConf

from bnrepro.callbacks.data_errors import StopOnUnreadableImage
from bnrepro.callbacks.preemption import Preemption
from bnrepro.callbacks.rng_state import RNGState
from bnrepro.callbacks.summary import RunSummary
from bnrepro.checkpointing import (
    AtomicCheckpointIO,
    ConfigInCheckpoint,
    EvaluationCheckpoint,
    ResumeError,
    RowsInCheckpoint,
    checkpoint_step,
    select_resume,
)
from bnrepro.config import ConfigError
from bnrepro.config.build import build
from bnrepro.config.checks import validate
from bnrepro.config.loop import resolve_loop
from bnrepro.config.resume import config_differences, differences_from_run, flatten
from bnrepro.config.schema import SPEED_KEYS
from bnrepro.console import progress_bar
from bnrepro.launch_record import run_log, write_record
from bnrepro.launching import in_multirun, run_job_in_own_process
from bnrepro.lightning_compat import set_max_steps, starts_ranks_by_rerunning_command
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.multistep import MultiStepClassifier, resolve_steps_per_batch
from bnrepro.loggers import build_loggers, close_wandb, rows_up_to
from bnrepro.models import build_net
from bnrepro.provenance import write_text_atomic
from bnrepro.results.runs import COMPLETE
from bnrepro.runlock import RunLock
from bnrepro.speed import Speed, apply_to_net, is_convolutional, resolve_speed, threads_restored, use_threads
from bnrepro.speed import trainer_args as speed_trainer_args

# The run folder deliberately holds more than Lightning's CSV files (config, summary, checkpoints).
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


class RunExistsError(FileExistsError):
    pass


def build_module(cfg, net, speed: Speed | None = None, steps_per_batch: int = 1) -> ClassifierModule:
    """The LightningModule: the network, the optimizer group as a partial, the LR schedule. Lightning's
    automatic optimization, one step per batch; several steps per batch (MultiStepClassifier) when
    `steps_per_batch` > 1 or the steps are CUDA graphs (lit/multistep.py)."""
    kwargs = dict(
        num_classes=net.num_classes,
        batch_size=cfg.data.batch_size,
        optimizer=build(cfg.optimizer, "optimizer"),
        schedule=build(cfg.lr_schedule, "lr_schedule"),
        reference_batch=cfg.lr_scaling.reference_batch,
        lr_rule=cfg.lr_scaling.rule,
        aux_loss_weight=cfg.model.aux_loss_weight,
        decay_all_params=cfg.model.decay_all_params,
        fused_optimizer=bool(speed and speed.fused_optimizer),
        channels_last=bool(speed and speed.channels_last),
    )
    graphs = bool(speed and speed.cuda_graphs)
    if steps_per_batch > 1 or graphs:
        return MultiStepClassifier(net, **kwargs, cuda_graphs=graphs)
    return ClassifierModule(net, **kwargs)


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


def make_trainer(**kwargs) -> L.Trainer:
    """L.Trainer(**kwargs). What Lightning refuses in the trainer settings -- accelerator=gpu without a GPU,
    a device count, strategy or precision it does not know -- is a ConfigError naming the keys."""
    several = str(kwargs.get("devices")) not in ("1", "auto", "[0]", "None")
    if str(kwargs.get("accelerator")) == "auto" and several and not torch.cuda.is_available():
        # Lightning would start that many CPU processes instead: say that no GPU was found.
        raise ConfigError(
            f"trainer.devices={kwargs['devices']}: no GPU was found here (torch.cuda.is_available() is False). "
            f"Run it on a GPU machine; for CPU processes (tests, small runs) say so with trainer.accelerator=cpu."
        )
    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:
        accelerator = str(kwargs.get("accelerator"))
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator}, but no CUDA GPU is visible here (torch.cuda.is_available() "
                f"is False). Run it on a GPU machine, or on the CPU with trainer=cpu."
            ) from e
        keys = ("accelerator", "devices", "num_nodes", "strategy", "precision")
        settings = ", ".join(f"trainer.{k}={kwargs[k]}" for k in keys if k in kwargs)
        raise ConfigError(f"Lightning refuses these trainer settings ({settings}): {e}") from e


@dataclass
class RunDirPlan:
    """What a launch will do to its run folder; decided first, done only after every start-up check."""

    resume_from: Path | None = None  # the checkpoint to resume from; None: a fresh start
    resume_step: int | None = None  # its global step (metrics.csv keeps the rows up to it)
    corrupt: list[Path] = field(default_factory=list)  # unreadable checkpoints to set aside (resume_fallback)
    clear: bool = False  # overwrite=true: remove the previous run's outputs


def summary_status(path: Path) -> str | None:
    """The status a run folder's summary.json records; ResumeError naming a damaged file."""
    try:
        status = json.loads(path.read_text()).get("status")
    except (ValueError, AttributeError) as e:  # truncated, not JSON, not an object
        raise ResumeError(
            f"{path} is damaged ({type(e).__name__}: {e}). Nothing was changed. If the run had finished, "
            f"restore the file, or train it again with overwrite=true; if it had not, delete the file to "
            f"resume the run from its checkpoints."
        ) from e
    return status


def plan_run_dir(cfg, run_dir: Path, resolved: dict) -> RunDirPlan:
    """Checks the run folder against the request; raises (changing nothing) when it cannot be honoured.

    A folder whose summary.json says the run is complete (finished or diverged) is refused unless
    overwrite=true, which clears that run's outputs (so a rerun that dies midway cannot leave the old
    summary, checkpoints or W&B log beside new, partial curves). Otherwise `resume` decides
    (checkpointing.select_resume); a resumed run must have the configuration it was started with.
    """
    summary = run_dir / "summary.json"
    if cfg.overwrite:
        if str(cfg.resume).lower() not in ("auto", "false"):
            raise ConfigError(
                f"overwrite=true starts {run_dir} again; it cannot be combined with resume={cfg.resume}"
            )
        return RunDirPlan(clear=True)
    if summary.is_file() and summary_status(summary) in COMPLETE:
        raise RunExistsError(
            f"{run_dir} already holds a run ({summary}). Nothing was changed. "
            f"Choose another folder with run_name=<name>, or pass overwrite=true to train it again."
        )
    ckpt, step, corrupt, in_checkpoint = select_resume(run_dir, cfg.resume, cfg.resume_fallback)
    metrics = run_dir / "metrics.csv"
    if ckpt is not None and metrics.is_file():  # damage a torn write cannot explain is refused here
        rows_up_to(metrics.read_bytes(), step, metrics)
    if ckpt is not None:
        check_same_config(run_dir, ckpt, in_checkpoint, resolved)
    return RunDirPlan(ckpt, step, corrupt)


def check_same_config(run_dir: Path, ckpt: Path, in_checkpoint: dict | None, resolved: dict) -> None:
    """A resumed run must have the configuration it was started with: the one in config.yaml, or, when
    config.yaml is gone, the copy its checkpoint holds (checkpointing.ConfigInCheckpoint)."""
    if (run_dir / "config.yaml").is_file():
        diff, where = differences_from_run(run_dir, flatten(resolved)), ""
    elif in_checkpoint is not None:
        diff = config_differences(flatten(in_checkpoint), flatten(resolved))
        where = f" (compared with the copy of its config in {ckpt}: config.yaml is missing)"
    else:
        return  # a checkpoint from before configs were kept in checkpoints: nothing to compare with
    if diff:
        raise ResumeError(
            f"{run_dir} holds a partial run of another configuration ({'; '.join(diff[:5])}){where}. "
            f"Nothing was changed. Resume it with its own settings, or pass overwrite=true or "
            f"run_name=<name>."
        )


def apply_plan(run_dir: Path, plan: RunDirPlan) -> None:
    """Rank 0, after every check: clear for overwrite, set corrupt checkpoints aside (renamed, kept),
    drop temporary files a killed write left behind (metrics.csv is trimmed by loggers.py)."""
    if rank_zero_only.rank != 0:
        return
    if plan.clear:
        for name in ("summary.json", "wandb_id", "metrics.csv", "unit_percentiles.npz"):
            (run_dir / name).unlink(missing_ok=True)
        for folder in ("checkpoints", "wandb"):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    for path in plan.corrupt:
        path.rename(path.with_name(path.name + ".corrupt"))
    for tmp in (run_dir / "checkpoints").glob(".*.partial"):
        tmp.unlink(missing_ok=True)


def build_callbacks(cfg, run_dir: Path, info: dict) -> list[L.Callback]:
    """The run folder's own callbacks, then every optional one the `callbacks` config turns on."""
    optional = [build(node, f"callbacks.{key}") for key, node in cfg.callbacks.items() if node is not None]
    for callback in optional:
        info.update(getattr(callback, "summary_info", dict)())
    return [
        RunSummary(run_dir, info),
        RNGState(),
        StopOnUnreadableImage(),  # only image-folder data sets carry such batches; a no-op for the rest
        # Before the checkpoints: a batch that diverged stops the run as diverged and is never
        # checkpointed (DivergenceStop), a preempted one saves first (Preemption).
        *optional,
        EvaluationCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc", mode="max"),
        # last.ckpt after every evaluation period. Not `save_last=True` of the checkpoint above: Lightning
        # 2.6 refreshes that one only at steps where `best` improved.
        EvaluationCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
        *progress_bar(cfg.trainer.enable_progress_bar),  # tqdm on a terminal, plain lines in a log
    ]  # fmt: skip


def train(cfg, run_dir: Path) -> dict | None:
    """Trains the configured run into `run_dir`; returns the summary written there (None off rank 0).

    Raises TrainingDiverged (after writing summary.json with status "diverged") when the loss blows up.
    """
    with threads_restored():  # trainer.num_threads applies to this run only
        return _train(cfg, run_dir)


def _train(cfg, run_dir: Path) -> dict | None:
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer_kwargs = {k: v for k, v in resolved["trainer"].items() if k not in ("max_steps", *SPEED_KEYS)}
    if in_multirun():  # decided before "auto" is resolved: checking bf16 support would start CUDA here
        probe = make_trainer(**{k: trainer_kwargs[k] for k in ("accelerator", "devices", "num_nodes", "strategy")},
                             logger=False, enable_checkpointing=False)  # fmt: skip
        if starts_ranks_by_rerunning_command(probe):
            return run_job_in_own_process(run_dir)  # see launching.py: rank 1 would re-run the whole sweep
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_net(cfg.model.net)
    dm = build(cfg.data, "data", seed=cfg.seed)

    info = {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed, "task": cfg.task,
            "run_name": cfg.run_name, "lr_multiplier": cfg.lr_multiplier.factor}  # fmt: skip
    # The config goes into every checkpoint; `resolved` gets what "auto" became below, before any is saved.
    callbacks = [*build_callbacks(cfg, run_dir, info), ConfigInCheckpoint(resolved), RowsInCheckpoint()]
    # precision / cudnn benchmark with "auto" resolved
    convolutional = is_convolutional(net)  # an image network: bf16 and all cores by default (speed.py)
    trainer_kwargs.update(speed_trainer_args(cfg, convolutional=convolutional))
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # requeue on SIGUSR1 is callbacks/preemption.py's, at a step boundary
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = make_trainer(
        **trainer_kwargs,
        max_epochs=-1,  # training length: max_steps, set below once the world size is known
        check_val_every_n_epoch=1,  # one Lightning epoch = one evaluation period (see data/)
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
        logger=False,  # set below, after the checks: creating the CSV logger touches metrics.csv
        callbacks=callbacks,
        plugins=plugins,
    )
    # One launch at a time per run folder (runlock.py): taken before the folder's state is read, by global
    # rank 0 only (the other ranks are this launch's own), and held until this launch ends.
    lock = RunLock(run_dir) if trainer.global_rank == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_locked(cfg, run_dir, resolved, trainer, net, dm, callbacks, convolutional)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg, run_dir: Path, resolved: dict, trainer: L.Trainer, net, dm, callbacks,
                  convolutional: bool) -> dict | None:  # fmt: skip
    summary = callbacks[0]
    speed = resolve_speed(cfg, trainer, data_on_device=dm.holds_data_on_device, convolutional=convolutional)
    use_threads(speed.num_threads)  # before the data set is read: its conversion uses them too
    summary.info["speed"] = speed.asdict()
    # config.yaml stores what "auto" became on this machine, so a resume on other hardware that would
    # train differently (bf16 vs float32, ...) is refused naming the key, not silently mixed.
    resolved["trainer"].update(speed.config_values())
    plan = plan_run_dir(cfg, run_dir, resolved)
    ckpt = plan.resume_from
    # Lengths given in examples become steps at this run's global batch (devices x per-device batch).
    max_steps, eval_every = resolve_loop(cfg, cfg.data.batch_size * trainer.world_size)
    set_max_steps(trainer, max_steps)
    summary.info["eval_every_steps"] = eval_every
    dm.eval_every_steps = eval_every  # one Lightning epoch = one evaluation period
    k = resolve_steps_per_batch(
        cfg.loop.steps_per_batch, eval_every, trainer.world_size, speed.precision, dm.can_chunk_steps
    )
    summary.info["steps_per_batch"] = k
    module = build_module(cfg, net, speed, steps_per_batch=k)
    if isinstance(module, MultiStepClassifier):
        dm.steps_per_batch = k  # its sampler yields [K, B] chunks, the batches the module takes
    check_input(net, dm.input_shape, cfg)
    for callback in callbacks:  # e.g. the percentiles' module and unit exist in this network
        if hasattr(callback, "check"):
            callback.check(net, dm.input_shape)
    apply_to_net(net, speed)  # after the checks' forward passes: compiling is lazy, on the first step
    dm.prepare_data()  # fails here, before any DDP process exists, when the data set is missing

    # Every check has passed: only now does anything in the run folder change.
    run_dir.mkdir(parents=True, exist_ok=True)
    apply_plan(run_dir, plan)
    if rank_zero_only.rank == 0:
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        write_record(run_dir, cfg)  # Hydra's record of this launch, .hydra/<time>/
    with run_log(run_dir):  # train.log, Hydra's job log, from here on
        trainer.loggers = build_loggers(cfg, run_dir, resolved, resume_step=plan.resume_step)
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        except SIGTERMException:  # preempted: summary.json says so; callbacks/preemption.py saved last.ckpt
            saved = next((c.saved_at for c in callbacks if isinstance(c, Preemption)), None)
            last = run_dir / "checkpoints" / "last.ckpt"
            if saved is None and last.is_file() and checkpoint_step(last) == trainer.global_step:
                # The signal came after the period's own last.ckpt was written (Lightning checks for it
                # after the checkpoint callbacks): that checkpoint is where the run stopped.
                saved = trainer.global_step
            if rank_zero_only.rank == 0:
                where = (
                    f"saved at step {saved}"
                    if saved is not None
                    else "stopped before its checkpoint (last.ckpt is older)"
                )
                print(f"preempted: {run_dir} {where}; relaunch the same command to resume")
        finally:
            close_wandb(failed=summary.written is None or summary.written["status"] != "finished")
    return summary.written
