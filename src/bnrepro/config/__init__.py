"""Configuration: one module per concern.

schema.py   the structured configs (types, the defaults every file of a group shares, `_target_`s) and
            the @schema decorator that registers a kind's schema for its group's YAML files
checks.py   what a type cannot express (allowed strings, positive numbers, options that would break a run)
loop.py     lengths in steps / examples / epochs -> optimizer steps at the run's global batch
resume.py   which keys of a stored config.yaml must match for a run folder to be resumed or reused
build.py    components from their config nodes (hydra.utils.instantiate, the project's errors kept)
slurm.py    the resolvers of conf/hydra/launcher/slurm.yaml

Importing this package registers the schemas and resolvers with Hydra: the top-level TrainConfig, the
optimizer and LR-schedule kinds (schema.py), every data module's schema, found by importing each
module of bnrepro.data (a new data set's file registers itself; nothing lists it), and
`${figure3_variants:}`, the sweep of conf/experiment/*_figure3.yaml (bnrepro/variants.py).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from bnrepro.config.errors import ConfigError
from bnrepro.config.schema import TrainConfig
from bnrepro.config.slurm import register_resolvers
from bnrepro.variants import figure3_variants

__all__ = ["ConfigError", "register"]


def register() -> None:
    import bnrepro.data  # noqa: F401  (imports every data module: their @schema registrations)

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_resolvers()
    if not OmegaConf.has_resolver("figure3_variants"):
        OmegaConf.register_new_resolver("figure3_variants", figure3_variants)
    if not OmegaConf.has_resolver("times"):  # conf/lr_multiplier: optimizer.lr = base x factor
        OmegaConf.register_new_resolver("times", lambda a, b: round(float(a) * float(b), 12))


register()
