"""Configuration: one module per concern.

schema.py   the structured configs (types, the defaults every file of a group shares, `_target_`s) and
            the @schema decorator that registers a kind's schema for its group's YAML files
checks.py   what a type cannot express (allowed strings, positive numbers, options that would break a run)
loop.py     lengths in steps / examples / epochs -> optimizer steps at the run's global batch
resume.py   which keys of a stored config.yaml must match for a run folder to be resumed or reused
build.py    components from their config nodes (hydra.utils.instantiate, the project's errors kept)
slurm.py    the resolvers of conf/hydra/launcher/slurm.yaml

Importing this package registers nothing: bnrepro/registry.py puts the schemas and resolvers in Hydra's
ConfigStore (it imports bnrepro.data, which imports config/schema.py; this package imports no data
module, so there is no circle).
"""

from bnrepro.errors import ConfigError

__all__ = ["ConfigError"]
