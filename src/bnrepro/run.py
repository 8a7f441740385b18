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
from bnrepro.callbacks.percentiles import ActivationPercentiles, input_width
from bnrepro.callbacks.summary import RunSummary
from bnrepro.config import ConfigError, validate
from bnrepro.data.mnist import MNISTDataModule
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


def build_datamodule(cfg) -> MNISTDataModule:
    d = cfg.data
    return MNISTDataModule(
        name=d.name, root=d.root, system_dirs=list(d.system_dirs), download=d.download,
        batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, binarize_threshold=d.binarize_threshold,
        device_resident=d.device_resident, eval_every_steps=cfg.loop.eval_every_steps,
        steps_per_batch=cfg.loop.steps_per_batch, seed=cfg.seed,
    )  # fmt: skip


def build_module(cfg, net) -> ClassifierModule:
    return ClassifierModule(
        net,
        num_classes=net.num_classes,
        batch_size=cfg.data.batch_size,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        lr_multiplier=cfg.lr_multiplier.factor,
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
    partial curves, nor the old best checkpoint beside the new ones.
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


def train(cfg, run_dir: Path) -> dict | None:
    """Trains the configured run into `run_dir`; returns the summary written there (None off rank 0)."""
    validate(cfg)
    check_run_dir(run_dir, cfg.overwrite)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_net(cfg)
    dm = build_datamodule(cfg)
    p = cfg.callbacks.percentiles
    if p.enabled:
        check_percentiles(net, p.module, p.unit, dm.input_shape, cfg.model.arch)
    module = build_module(cfg, net)
    dm.prepare_data()  # fails here, before any DDP process exists, when the data set is missing

    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    info = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "task": cfg.task,
        "run_name": cfg.run_name,
    }
    if p.enabled:
        info["percentile_unit"] = f"{p.module}[{p.unit}]"
    summary = RunSummary(run_dir, info)
    callbacks = [summary, ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/acc",
                                          mode="max", save_last=True)]  # fmt: skip
    if p.enabled:
        callbacks.append(ActivationPercentiles(f"net.{p.module}", p.unit, p.quantiles, out_dir=run_dir))

    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_epochs=-1,  # training length is trainer.max_steps
        check_val_every_n_epoch=1,  # one Lightning epoch = one evaluation period (see data/)
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, resolved),
        callbacks=callbacks,
    )
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        close_wandb(failed=summary.written is None or summary.written["status"] != "finished")
    return summary.written
