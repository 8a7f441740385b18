"""evaluate(cfg): what `python src/eval.py` does -- one Figure 4 number, written to <out>/eval.json.

Everything that can be wrong with the input (config, checkpoints, run configs, the val folder) is
checked here in the launching process, before Lightning starts DDP workers. The workers re-run the same
script (Lightning's subprocess launcher) and come to the same members and image list.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
from omegaconf import OmegaConf

from bnrepro.callbacks.data_errors import StopOnUnreadableImage
from bnrepro.callbacks.progress import progress_bar
from bnrepro.config import ConfigError
from bnrepro.config.build import build
from bnrepro.data.imagenet import ImageFolderDataModule
from bnrepro.evaluation.config import PROTOCOLS, validate_crops, validate_eval
from bnrepro.evaluation.crops import crop_transform
from bnrepro.evaluation.data import EvalDataModule, val_dataset
from bnrepro.evaluation.ensemble import EnsembleClassifier
from bnrepro.evaluation.members import CheckpointError, load_members
from bnrepro.provenance import git_sha, hardware, versions, write_json_atomic
from bnrepro.speed import trainer_args as speed_trainer_args

# Trainer arguments of the training schema that mean nothing for one validation pass.
TRAIN_ONLY = ("max_steps", "num_sanity_val_steps", "enable_checkpointing", "use_distributed_sampler")


def build_trainer(cfg, out_dir: Path) -> L.Trainer:
    kwargs = {
        k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in TRAIN_ONLY
    }
    kwargs.update(speed_trainer_args(cfg))  # cudnn benchmark "auto", as for training
    if cfg.trainer.precision == "auto":
        kwargs["precision"] = "32-true"  # Figure 4's numbers in float32 unless asked (trainer.precision=...)
    return L.Trainer(
        **kwargs,
        logger=False,  # the result is eval.json
        enable_checkpointing=False,
        use_distributed_sampler=False,  # ours shards without padding; Lightning's would duplicate images
        default_root_dir=str(out_dir),
        callbacks=[StopOnUnreadableImage(), *progress_bar(kwargs.get("enable_progress_bar", True))],
    )


def own_data(member):
    """The `data` node of a member's run (config.yaml), as a config to build; CheckpointError without one."""
    if member.data is None:
        raise CheckpointError(
            f"{member.source}: its run's config.yaml has no `data` node to evaluate on; choose a data set, "
            f"e.g. data=imagenet data.root=<folder holding val/>"
        )
    return OmegaConf.create(member.data)


def evaluate(cfg, out_dir: Path) -> dict | None:
    """Evaluates the configured network(s); returns the eval.json record (None off global rank 0)."""
    validate_eval(cfg)
    members = load_members(cfg)
    e = cfg.eval
    d = cfg.data if cfg.data is not None else own_data(members[0])
    data = build(d, "data", seed=members[0].seed)  # synthetic: the validation set the run made
    if isinstance(data, ImageFolderDataModule):  # image files: 1 or 144 crops cut here
        validate_crops(e, d)
        transform = crop_transform(e.crops, d.image_size, d.resize_size, list(e.scales))
        samples = val_dataset(data, members[0].num_classes, transform, e.limit)
        dm = EvalDataModule(samples, max(1, e.batch_size // e.crops), e.num_workers, e.pin_memory)
        module, expected = EnsembleClassifier(members), lambda: len(samples)
    else:  # a set held as tensors: its own validation batches, as training evaluates
        if e.crops != 1:
            raise ConfigError(
                f"eval.crops={e.crops}: the 144 crops are cut from image files, and data={d.name} is held as "
                f"tensors; evaluate it with eval.crops=1 (or pick an image-folder set, data=imagenet ...)"
            )
        if e.limit:
            data.num_val_examples = min(e.limit, data.num_val_examples)
        data.prepare_data()  # a missing data set is refused here (DatasetNotFoundError), as in training
        dm, module = data, EnsembleClassifier(members, ready_inputs=True)
        expected = lambda: len(data.val_y)  # noqa: E731  (what setup() loaded: MNIST's first N test images)
    trainer = build_trainer(cfg, out_dir)
    trainer.validate(module, datamodule=dm, verbose=False)

    r = module.result
    if r["num_images"] != expected():  # the sampler's promise; a wrong number must never be written
        raise RuntimeError(
            f"counted {r['num_images']} images of {expected()} across {trainer.world_size} ranks"
        )
    if not trainer.is_global_zero:
        return None
    top5 = r["top5_acc"]
    root = d.get("prepared") or d.get("root")
    record = {
        "protocol": PROTOCOLS[e.crops],
        "crops": e.crops,
        "members": len(members),
        "checkpoints": [m.source for m in members],
        "weights": cfg.weights,
        "data": d.name,
        "data_root": root and str(root),  # a prepared set: its folder or URL; null: made, not read
        "num_images": r["num_images"],
        "top1_acc": r["top1_acc"],
        "top5_acc": top5,
        "top1_err": 1.0 - r["top1_acc"],
        "top5_err": None if top5 is None else 1.0 - top5,  # null below 6 classes
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
        "hardware": hardware(trainer.strategy.root_device),
        "git_sha": git_sha(),
        "versions": versions(),
        "command": " ".join(["python", *sys.argv]),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": "+".join(dict.fromkeys(m.model for m in members)),  # distinct names, in member order
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "eval.json", record)
    top5_text = "n/a" if top5 is None else f"{1 - top5:.2%}"
    print(
        f"{record['model']} ({len(members)} member{'s' if len(members) > 1 else ''}), {record['protocol']}, "
        f"{record['num_images']} images of {d.name}: top-1 error {1 - r['top1_acc']:.2%}, top-5 error "
        f"{top5_text} -> {out_dir / 'eval.json'}",
        flush=True,
    )
    return record
