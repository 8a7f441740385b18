"""conf/train.yaml composed as `python src/train.py` composes it, for the commands that are not Hydra apps.

`python -m bnrepro.data.prepare` and the benchmarks (bench/) build their components from the same
config files as a run; this module sits just above config/ so that both may import it.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/ (editable install)


def compose_train(*overrides: str):
    """conf/train.yaml composed with `overrides`, as `python src/train.py` would."""
    from hydra import compose, initialize_config_dir

    import bnrepro.config  # noqa: F401  (the schema)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
