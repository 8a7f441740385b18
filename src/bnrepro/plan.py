"""The run plan: every value `python src/train.py` decides, from the config, the machine and the run
folder, before anything is built (run.py then builds each object with its values and never changes it).

    plan(cfg, run_dir)   devices and ranks (as L.Trainer will resolve them), global batch, loop length and
                         evaluation steps, steps per Lightning batch, the fast paths, the config.yaml
                         to store, the facts summary.json starts from
    plan_folder(run)     what the launch does to its run folder: a fresh start, a resume (from which
                         checkpoint, at which step), or a refusal; read under the folder's lock (run.py)

Both change nothing and raise (ConfigError, ResumeError, RunExistsError) naming the key or file.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from bnrepro.checkpointing import select_resume
from bnrepro.config.loop import Loop, resolve_loop
from bnrepro.config.resume import config_differences, differences_from_run, flatten
from bnrepro.errors import ConfigError, ReproError, ResumeError
from bnrepro.lightning_compat import Placement, placement
from bnrepro.lit.multistep import resolve_steps_per_batch
from bnrepro.loggers import rows_up_to
from bnrepro.models import build_net
from bnrepro.run_status import COMPLETE
from bnrepro.speed import Speed, is_convolutional, resolve_speed, trainer_args


class RunExistsError(ReproError, FileExistsError):
    """The run folder holds a finished run; nothing was changed."""


@dataclass(frozen=True)
class RunPlan:
    cfg: object  # the composed config (validated: config/checks.py)
    run_dir: Path
    placement: Placement  # world size, ranks, CUDA or not, precision
    trainer_kwargs: dict  # L.Trainer's arguments from trainer.*, "auto" resolved, max_steps the plan's
    global_batch: int  # data.batch_size x world size: the LR scaling's, the schedule's and the sampler's
    loop: Loop  # length, regular evaluation period, every evaluation step (config/loop.py)
    steps_per_batch: int  # optimizer steps per Lightning batch (lit/multistep.py); 1: one per batch
    speed: Speed
    resolved: dict  # config.yaml: the config with what "auto" became on this machine
    info: dict  # summary.json's facts from the plan (callbacks add theirs: run.py build_callbacks)

    @property
    def multistep(self) -> bool:
        """Several steps per Lightning batch, or CUDA graphs: lit/multistep.py's module, and the data
        module's [K, B] chunks (K = steps_per_batch)."""
        return self.steps_per_batch > 1 or self.speed.cuda_graphs


@dataclass(frozen=True)
class FolderPlan:
    """What a launch will do to its run folder; done only after every start-up check (run.py)."""

    resume_from: Path | None = None  # the checkpoint to resume from; None: a fresh start
    resume_step: int | None = None  # its global step (metrics.csv keeps the rows up to it)
    corrupt: list[Path] = field(default_factory=list)  # unreadable checkpoints to set aside (resume_fallback)
    clear: bool = False  # overwrite=true: remove the previous run's outputs


def is_convolutional_net(cfg) -> bool:
    """Whether the network has convolutions (speed.py: bf16 and all cores by default), read from a build
    on the meta device: no memory, no weights, and the run's own build after seeding is unaffected. It
    also refuses an argument the architecture does not take (model.net), before anything else."""
    with torch.device("meta"):
        return is_convolutional(build_net(cfg.model.net))


def plan(cfg, run_dir: Path) -> RunPlan:
    """Decides the run from its validated config; changes nothing."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    convolutional = is_convolutional_net(cfg)
    # precision and cudnn benchmark with "auto" resolved; max_steps is the loop's, below
    trainer_kwargs = {k: v for k, v in resolved["trainer"].items() if k != "max_steps"}
    trainer_kwargs.update(trainer_args(cfg, convolutional=convolutional))
    where = placement_of(trainer_kwargs)
    # The one place the global batch is computed: lengths given in examples or epochs become steps of it.
    global_batch = cfg.data.batch_size * where.world_size
    loop = resolve_loop(cfg, global_batch)
    data_class = get_class(cfg.data._target_)
    speed = resolve_speed(
        cfg, cuda=where.cuda, world_size=where.world_size, num_nodes=where.num_nodes, precision=where.precision,
        data_on_device=data_class.holds_on_device(cfg.data), convolutional=convolutional,
    )  # fmt: skip
    k = resolve_steps_per_batch(
        cfg.loop.steps_per_batch, (loop.eval_every, *loop.extra_eval_steps), where.world_size, speed.precision,
        data_class.can_chunk_steps,
    )  # fmt: skip
    # config.yaml stores what "auto" became on this machine, so a resume on other hardware that would
    # train differently (bf16 vs float32, ...) is refused naming the key, not silently mixed.
    for node, values in speed.config_values().items():
        resolved[node].update(values)
    info = {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed, "task": cfg.task,
            "run_name": cfg.run_name, "lr_multiplier": cfg.lr_multiplier.factor, "speed": speed.asdict(),
            "eval_every_steps": loop.eval_every, "eval_steps": list(loop.eval_steps), "steps_per_batch": k}  # fmt: skip
    return RunPlan(cfg=cfg, run_dir=run_dir, placement=where,
                   trainer_kwargs={**trainer_kwargs, "max_steps": loop.max_steps}, global_batch=global_batch,
                   loop=loop, steps_per_batch=k, speed=speed,
                   resolved=resolved, info=info)  # fmt: skip


def placement_of(trainer_kwargs: dict) -> Placement:
    """lightning_compat.placement; what Lightning refuses in the trainer settings -- accelerator=gpu
    without a GPU, a device count, strategy or precision it does not know -- is a ConfigError naming
    the keys."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    several = str(trainer_kwargs.get("devices")) not in ("1", "auto", "[0]", "None")
    if str(trainer_kwargs.get("accelerator")) == "auto" and several and not torch.cuda.is_available():
        # Lightning would start that many CPU processes instead: say that no GPU was found.
        raise ConfigError(
            f"trainer.devices={trainer_kwargs['devices']}: no GPU was found here (torch.cuda.is_available() is "
            f"False). Run it on a GPU machine; for CPU processes (tests, small runs) say so with "
            f"trainer.accelerator=cpu."
        )
    try:
        # Quiet: the Trainer built from the same arguments (run.py) reports them again.
        with contextlib.redirect_stdout(io.StringIO()), _lightning_info_off():
            return placement(**trainer_kwargs)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:
        accelerator = str(trainer_kwargs.get("accelerator"))
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator}, but no CUDA GPU is visible here (torch.cuda.is_available() "
                f"is False). Run it on a GPU machine, or on the CPU with trainer=cpu."
            ) from e
        keys = ("accelerator", "devices", "num_nodes", "strategy", "precision")
        settings = ", ".join(f"trainer.{k}={trainer_kwargs[k]}" for k in keys if k in trainer_kwargs)
        raise ConfigError(f"Lightning refuses these trainer settings ({settings}): {e}") from e


@contextlib.contextmanager
def _lightning_info_off():
    import logging

    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


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


def plan_folder(run: RunPlan) -> FolderPlan:
    """Checks the run folder against the request; raises (changing nothing) when it cannot be honoured.

    A folder whose summary.json says the run is complete (finished or diverged) is refused unless
    overwrite=true, which clears that run's outputs (so a rerun that dies midway cannot leave the old
    summary, checkpoints or W&B log beside new, partial curves). Otherwise `resume` decides
    (checkpointing.select_resume); a resumed run must have the configuration it was started with.
    """
    cfg, run_dir = run.cfg, run.run_dir
    summary = run_dir / "summary.json"
    if cfg.overwrite:
        if str(cfg.resume).lower() not in ("auto", "false"):
            raise ConfigError(
                f"overwrite=true starts {run_dir} again; it cannot be combined with resume={cfg.resume}"
            )
        return FolderPlan(clear=True)
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
        check_same_config(run_dir, ckpt, in_checkpoint, run.resolved)
    return FolderPlan(ckpt, step, corrupt)


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
