"""The schema of `python src/eval.py`: EvalConfig, registered in Hydra's ConfigStore as `eval_schema`.

conf/eval.yaml starts its defaults list with `eval_schema`; the `data` and `trainer` groups are the
training ones (config/schema.py), so data=imagenet|imagenette|fashion_mnist|... and
trainer.devices/accelerator/strategy mean what they mean for training. Without `data=<name>` a run is
evaluated on its own data set, the `data` node of its config.yaml (`ckpt`, or an ensemble's first
member). A misspelled key fails at composition with OmegaConf's message naming it (e.g. `Key 'crop' not
in 'EvalOptions' ... full_key: eval.crop`); validate_eval() checks what a type cannot say, before any
network is built, and validate_crops() what the crops need of an image-folder data set.

Of an image-folder `data`, evaluation uses the val folder (root, and variant / download for
Imagenette), image_size (the crop) and resize_size (the single crop's shorter side); the input
normalisation is each network's own run's data.mean/std (or the Caffe port's own preprocessing). A data
set held as tensors (synthetic, MNIST, Fashion-MNIST) is evaluated as training evaluates it: its
validation batches, single view only (the 144 crops are cut from image files).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import bnrepro.registry  # noqa: F401  (the data and trainer groups' schemas, shared with training)
from bnrepro.config.schema import AugmentConfig, DataConfig, TrainerConfig
from bnrepro.errors import ConfigError
from bnrepro.evaluation.crops import PAPER_SCALES
from bnrepro.evaluation.members import run_dir_of

PROTOCOLS = {1: "single crop", 144: "144 crops"}


@dataclass
class EvalOptions:
    crops: int = 1  # 1: shorter side data.resize_size, centre data.image_size; 144: GoogLeNet's crops
    # Checkpoints whose class probabilities are averaged (Figure 4's ensemble); instead of `ckpt`.
    ensemble: list[str] = field(default_factory=list)
    scales: list[int] = field(default_factory=lambda: list(PAPER_SCALES))  # 144 crops: shorter sides
    # Crops per forward pass and device, whatever the protocol: a batch holds batch_size // crops
    # images (at least one), so memory stays the same for 1 and 144 crops. 288 = 2 images of 144 crops.
    batch_size: int = 288
    num_workers: int = 8  # decoding and cropping processes per device
    pin_memory: bool = True
    limit: int | None = None  # evaluate only the first `limit` images of the sorted val list (smoke tests)


@dataclass
class EvalConfig:
    # One run's checkpoint, <run_dir>/checkpoints/<name>.ckpt; the network comes from <run_dir>/config.yaml.
    ckpt: str | None = None
    weights: str = "run"  # run: networks from checkpoints | caffe_port: the published BN-Inception weights
    weights_path: str | None = None  # caffe_port: a local weights file (default: the port's own source)
    eval: EvalOptions = field(default_factory=EvalOptions)
    data: DataConfig | None = None  # None (the default): each run's own data set, from its config.yaml
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # unused: the data files refer to it
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runs_root: str = "runs"
    # Output folder (eval.json, Hydra's .hydra/ and log); a stable name, so a rerun replaces its result.
    out: str = "${runs_root}/eval/${eval_data:}/${eval_name:${weights},${ckpt},${eval.ensemble},${eval.crops},${weights_path}}"  # fmt: skip


def eval_name(weights: str, ckpt: str | None, ensemble, crops: int, weights_path: str | None) -> str:
    """The default output folder's name, e.g. imagenet-bn_x30-best-144crops, caffe_port-1crop.

    A checkpoint is named by its run folder's parent (the task), the run folder and its own stem; an
    ensemble by its size and a hash of its sorted member paths (the same members give the same folder).
    """
    if weights == "caffe_port":
        stem = "caffe_port" + (f"-{Path(weights_path).stem}" if weights_path else "")
    elif ckpt or len(ensemble or []) == 1:
        path = Path(ckpt or ensemble[0])
        run_dir = run_dir_of(path)
        stem = f"{run_dir.parent.name}-{run_dir.name}-{path.stem}".lstrip("-")
    elif ensemble:
        digest = hashlib.sha1("\n".join(sorted(str(p) for p in ensemble)).encode()).hexdigest()[:8]
        stem = f"ensemble{len(ensemble)}-{digest}"
    else:
        stem = "none"
    return f"{stem}-{crops}crop{'s' if crops != 1 else ''}"


def eval_data(*, _root_) -> str:
    """The default output folder's data level: data.name, or without `data=` the run's own (from its
    config.yaml; "unknown" when that cannot be read -- evaluate() then says why, naming the file)."""
    if _root_.get("data") is not None:
        return str(_root_.data.name)
    paths = [_root_.ckpt] if _root_.ckpt else list(_root_.eval.ensemble)
    if _root_.weights != "run" or not paths:
        return "none"
    try:
        return str(yaml.safe_load((run_dir_of(Path(paths[0])) / "config.yaml").read_text())["data"]["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "unknown"


def validate_eval(cfg) -> None:
    """Checks the schema's types cannot express; raises ConfigError naming the key."""
    e = cfg.eval
    if e.crops not in PROTOCOLS:
        raise ConfigError(f"eval.crops={e.crops}: expected 1 (single crop) or 144 (GoogLeNet's 144 crops)")
    if cfg.weights not in ("run", "caffe_port"):
        raise ConfigError(f"weights={cfg.weights!r} is not one of run, caffe_port")
    if cfg.weights == "caffe_port" and (cfg.ckpt or e.ensemble):
        raise ConfigError(
            "weights=caffe_port evaluates the published weights: leave ckpt and eval.ensemble unset"
        )
    if cfg.weights == "caffe_port" and cfg.data is None:
        raise ConfigError(
            "weights=caffe_port has no run to take a data set from: choose its val set, e.g. "
            "data=imagenet data.root=<folder holding val/> (or data=imagenette)"
        )
    if cfg.weights == "run":
        if bool(cfg.ckpt) == bool(e.ensemble):
            raise ConfigError(
                "set one of ckpt=<run_dir>/checkpoints/best.ckpt or eval.ensemble=[ckptA,ckptB,...]"
            )
        if cfg.weights_path:
            raise ConfigError("weights_path is for weights=caffe_port; a run's weights come from ckpt")
    if not e.batch_size > 0:
        raise ConfigError(f"eval.batch_size={e.batch_size} must be positive")
    if e.limit is not None and e.limit <= 0:
        raise ConfigError(f"eval.limit={e.limit} must be positive (or null: every image)")
    if e.num_workers < 0:
        raise ConfigError(f"eval.num_workers={e.num_workers} must be >= 0")


def validate_crops(e, d) -> None:
    """What the crops need of an image-folder data set `d` (eval options `e`); ConfigError naming the key."""
    for key in ("image_size", "resize_size"):
        if not d[key] > 0:
            raise ConfigError(f"data.{key}={d[key]} must be positive")
    if d.resize_size < d.image_size:
        raise ConfigError(
            f"data.resize_size={d.resize_size} is smaller than the crop data.image_size={d.image_size}"
        )
    scales = list(e.scales)
    if e.crops == 144 and (len(scales) != 4 or min(scales) < d.image_size):
        raise ConfigError(
            f"eval.scales={scales}: 144 crops need 4 shorter sides, each >= data.image_size={d.image_size}"
        )


def register() -> None:
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
    OmegaConf.register_new_resolver("eval_name", eval_name, replace=True)
    OmegaConf.register_new_resolver("eval_data", eval_data, replace=True)


register()
