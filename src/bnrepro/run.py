"""Builds a run from the composed config and trains it: what `python src/train.py` does.

Everything that can be wrong with the input is checked here, in the launching process, before
Lightning spawns DDP workers: config values, the data set's presence, the network's arguments, and
whether the run folder already holds a finished run.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import lightning as L
import timm
import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

import bnrepro.models  # noqa: F401  (registers the networks with timm)
from bnrepro.callbacks.data_errors import StopOnUnreadableImage
from bnrepro.callbacks.divergence import DivergenceStop
from bnrepro.callbacks.percentiles import ActivationPercentiles, input_width
from bnrepro.callbacks.population import PopulationStatistics
from bnrepro.callbacks.summary import RunSummary
from bnrepro.config import ConfigError, resolve_loop, validate
from bnrepro.data import IMAGE_FOLDER_SETS, build_datamodule
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.loggers import build_loggers, close_wandb

# The run folder deliberately holds more than Lightning's CSV files (config, summary, checkpoints).
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


class RunExistsError(FileExistsError):
    pass


def build_net(cfg):
    kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    try:
        return timm.create_model(
            cfg.model.arch, norm=cfg.model.norm, act_layer=cfg.activation.name, init_seed=cfg.seed, **kwargs
        )
    except (TypeError, RuntimeError) as e:  # unknown architecture or a keyword it does not take
        raise ConfigError(f"model.arch={cfg.model.arch!r} with model.kwargs={kwargs}: {e}") from e


def build_module(cfg, net) -> ClassifierModule:
    return ClassifierModule(
        net,
        num_classes=net.num_classes,
        batch_size=cfg.data.batch_size,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        schedule=OmegaConf.to_container(cfg.lr_schedule, resolve=True),
        aux_loss_weight=cfg.model.aux_loss_weight,
    )


def check_percentiles(net, module: str, unit: int, input_shape, arch: str) -> None:
    try:
        width = input_width(net, module, input_shape)
    except AttributeError as e:
        raise ConfigError(f"callbacks.percentiles.module={module!r} is not in {arch}: {e}") from e
    if not 0 <= unit < width:
        raise ConfigError(f"callbacks.percentiles.unit={unit} is out of range: {module} has {width} inputs")


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuses a folder that holds a run's summary; with overwrite=true clears that run's outputs first.

    Clearing up front means a rerun that dies midway cannot leave the old summary.json beside new,
    partial curves, nor the old best checkpoint or W&B log beside the new ones.
    """
    summary = run_dir / "summary.json"
    if rank_zero_only.rank != 0 or not summary.exists():
        return
    if not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run ({summary}). Nothing was changed. "
            f"Choose another folder with run_name=<name>, or pass overwrite=true to train it again."
        )
    summary.unlink()
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(
        run_dir / "wandb", ignore_errors=True
    )  # else source=wandb_offline would still read the old run


def build_callbacks(cfg, run_dir: Path, info: dict) -> list[L.Callback]:
    c = cfg.callbacks
    callbacks = [
        RunSummary(run_dir, info),
        DivergenceStop(c.divergence.check_every_n_batches, c.divergence.inject_nan_at_step),
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc", mode="max"),
        # last.ckpt after every evaluation period. Not `save_last=True` of the checkpoint above: Lightning
        # 2.6 refreshes that one only at steps where `best` improved.
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
    ]  # fmt: skip
    if cfg.data.name in IMAGE_FOLDER_SETS:
        callbacks.append(StopOnUnreadableImage())
    if c.population_stats.enabled:
        callbacks.append(PopulationStatistics(c.population_stats.num_batches, run_dir / "checkpoints"))
    if c.percentiles.enabled:
        p = c.percentiles
        callbacks.append(ActivationPercentiles(f"net.{p.module}", p.unit, p.quantiles, out_dir=run_dir))
    return callbacks


def train(cfg, run_dir: Path) -> dict | None:
    """Trains the configured run into `run_dir`; returns the summary written there (None off rank 0).

    Raises TrainingDiverged (after writing summary.json with status "diverged") when the loss blows up.
    """
    validate(cfg)
    check_run_dir(run_dir, cfg.overwrite)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_net(cfg)
    module = build_module(cfg, net)

    info = {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed, "task": cfg.task,
            "run_name": cfg.run_name, "lr_multiplier": cfg.lr_multiplier.factor}  # fmt: skip
    p = cfg.callbacks.percentiles
    if p.enabled:
        info["percentile_unit"] = f"{p.module}[{p.unit}]"
    callbacks = build_callbacks(cfg, run_dir, info)
    summary = callbacks[0]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer_kwargs = {k: v for k, v in resolved["trainer"].items() if k != "max_steps"}
    trainer = L.Trainer(
        **trainer_kwargs,
        max_epochs=-1,  # training length: max_steps, set below once the world size is known
        check_val_every_n_epoch=1,  # one Lightning epoch = one evaluation period (see data/)
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, resolved),
        callbacks=callbacks,
    )
    # Lengths given in examples become steps at this run's global batch (devices x per-device batch).
    max_steps, eval_every = resolve_loop(cfg, cfg.data.batch_size * trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = max_steps
    summary.info["eval_every_steps"] = eval_every
    dm = build_datamodule(cfg, eval_every)
    if p.enabled:
        check_percentiles(net, p.module, p.unit, dm.input_shape, cfg.model.arch)
    dm.prepare_data()  # fails here, before any DDP process exists, when the data set is missing

    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        close_wandb(failed=summary.written is None or summary.written["status"] != "finished")
    return summary.written
