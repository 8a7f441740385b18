"""Train one paper variant: `python src/train.py model=mnist_mlp_bn data=fashion_mnist`.

Hydra composes conf/train.yaml (see README for the groups); `-m` sweeps, e.g.
`python src/train.py -m model=mnist_mlp,mnist_mlp_bn`. Each run writes one folder under runs/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

import bnrepro.config  # noqa: F401  (registers the schema `train_schema` in Hydra's ConfigStore)
from bnrepro.config import ConfigError
from bnrepro.data.mnist import DatasetNotFoundError
from bnrepro.run import RunExistsError, train

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg) -> None:
    try:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, DatasetNotFoundError, RunExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
