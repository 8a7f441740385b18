"""Registers the project's configuration with Hydra: import it before composing conf/train.yaml.

The top-level TrainConfig and the optimizer and LR-schedule kinds (config/schema.py), every data
module's schema, found by importing each module of bnrepro.data (a new data set's file registers itself
with @schema; nothing lists it), the resolvers of conf/hydra/launcher/slurm.yaml, and
`${figure3_variants:}`, the sweep of conf/experiment/*_figure3.yaml (bnrepro/variants.py).

A module of its own, above config/ and data/: the data modules import config/schema.py for their base
schemas, so the config package cannot import them back.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import bnrepro.data  # noqa: F401  (imports every data module: their @schema registrations)
from bnrepro.config.schema import TrainConfig
from bnrepro.config.slurm import register_resolvers
from bnrepro.variants import figure3_variants


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_resolvers()
    if not OmegaConf.has_resolver("figure3_variants"):
        OmegaConf.register_new_resolver("figure3_variants", figure3_variants)
    if not OmegaConf.has_resolver("times"):  # conf/lr_multiplier: optimizer.lr = base x factor
        OmegaConf.register_new_resolver("times", lambda a, b: round(float(a) * float(b), 12))


register()
