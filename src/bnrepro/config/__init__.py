"""Configuration: one module per concern.

schema.py   the structured configs (types, the defaults every file of a group shares, `_target_`s)
checks.py   what a type cannot express (allowed strings, positive numbers, options that would break a run)
loop.py     lengths in steps / examples / epochs -> optimizer steps at the run's global batch
resume.py   which keys of a stored config.yaml must match for a run folder to be resumed or reused
slurm.py    the resolvers of conf/hydra/launcher/slurm.yaml

Importing this package registers the schemas and resolvers with Hydra.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from bnrepro.config.errors import ConfigError
from bnrepro.config.schema import GROUP_SCHEMAS, TrainConfig
from bnrepro.config.slurm import register_resolvers

__all__ = ["ConfigError", "register"]


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, name, node in GROUP_SCHEMAS:
        store.store(group=group, name=name, node=node)
    register_resolvers()


register()
