"""Configuration: one module per concern.

schema.py   the structured configs (types, the defaults every file of a group shares, `_target_`s)
checks.py   what a type cannot express (allowed strings, positive numbers, options that would break a run)
loop.py     lengths in steps / examples / epochs -> optimizer steps at the run's global batch
resume.py   which keys of a stored config.yaml must match for a run folder to be resumed or reused
slurm.py    the resolvers of conf/hydra/launcher/slurm.yaml

Importing this package registers the schemas and resolvers with Hydra, among them `${figure3_variants:}`,
the sweep of conf/experiment/*_figure3.yaml (bnrepro/variants.py).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from bnrepro.config.errors import ConfigError
from bnrepro.config.schema import GROUP_SCHEMAS, TrainConfig
from bnrepro.config.slurm import register_resolvers
from bnrepro.variants import figure3_variants

__all__ = ["ConfigError", "register"]


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, name, node in GROUP_SCHEMAS:
        store.store(group=group, name=name, node=node)
    register_resolvers()
    if not OmegaConf.has_resolver("figure3_variants"):
        OmegaConf.register_new_resolver("figure3_variants", figure3_variants)


register()
