"""The schema of `python src/eval.py`: EvalConfig, registered in Hydra's ConfigStore as `eval_schema`.

conf/eval.yaml starts its defaults list with `eval_schema`; the `data` and `trainer` groups are the
training ones (config/schema.py), so data=imagenet|imagenette and trainer.devices/accelerator/strategy
mean what they mean for training; any data set whose data module reads image folders
(ImageFolderDataConfig) can be evaluated. A misspelled key fails at
composition with OmegaConf's message naming it (e.g. `Key 'crop' not in 'EvalOptions' ... full_key:
eval.crop`); validate_eval() checks what a type cannot say, before any network is built.

Of `data`, evaluation uses the data module's val folder (root, and variant / download for Imagenette),
image_size (the crop) and resize_size (the single crop's shorter side). The input normalisation is not taken from it:
each network uses its own run's data.mean/std (or the Caffe port its own preprocessing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import bnrepro.registry  # noqa: F401  (the data and trainer groups' schemas, shared with training)
from bnrepro.config.schema import AugmentConfig, DataConfig, TrainerConfig
from bnrepro.data.imagenet import ImageFolderDataConfig
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
    data: DataConfig = MISSING
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # unused: the data files refer to it
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runs_root: str = "runs"
    # Output folder (eval.json, Hydra's .hydra/ and log); a stable name, so a rerun replaces its result.
    out: str = "${runs_root}/eval/${data.name}/${eval_name:${weights},${ckpt},${eval.ensemble},${eval.crops},${weights_path}}"  # fmt: skip


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


def validate_eval(cfg) -> None:
    """Checks the schema's types cannot express; raises ConfigError naming the key."""
    e, d = cfg.eval, cfg.data
    if e.crops not in PROTOCOLS:
        raise ConfigError(f"eval.crops={e.crops}: expected 1 (single crop) or 144 (GoogLeNet's 144 crops)")
    if cfg.weights not in ("run", "caffe_port"):
        raise ConfigError(f"weights={cfg.weights!r} is not one of run, caffe_port")
    if not issubclass(OmegaConf.get_type(d), ImageFolderDataConfig):
        raise ConfigError(
            f"data={d.name!r}: evaluation reads the val/ folder of an image-folder data set "
            f"(data=imagenet | imagenette, or one whose schema extends ImageFolderDataConfig)"
        )
    if cfg.weights == "caffe_port" and (cfg.ckpt or e.ensemble):
        raise ConfigError(
            "weights=caffe_port evaluates the published weights: leave ckpt and eval.ensemble unset"
        )
    if cfg.weights == "run":
        if bool(cfg.ckpt) == bool(e.ensemble):
            raise ConfigError(
                "set one of ckpt=<run_dir>/checkpoints/best.ckpt or eval.ensemble=[ckptA,ckptB,...]"
            )
        if cfg.weights_path:
            raise ConfigError("weights_path is for weights=caffe_port; a run's weights come from ckpt")
    for key in ("eval.batch_size", "data.image_size", "data.resize_size"):
        if not OmegaConf.select(cfg, key) > 0:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} must be positive")
    if e.limit is not None and e.limit <= 0:
        raise ConfigError(f"eval.limit={e.limit} must be positive (or null: every image)")
    if e.num_workers < 0:
        raise ConfigError(f"eval.num_workers={e.num_workers} must be >= 0")
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


register()
