"""Evaluate with Figure 4's protocols: `python src/eval.py ckpt=<run>/checkpoints/best.ckpt eval.crops=144`.

    ckpt=<ckpt>                       one run's network (rebuilt from <run_dir>/config.yaml)
    eval.ensemble=[ckptA,ckptB,...]   class probabilities averaged over the members
    weights=caffe_port [weights_path=<file>]   the published BN-Inception weights
    eval.crops=1 | 144                single centre crop | GoogLeNet's 144 crops (docs/paper.md Sec. 5)
    (no data=)                        the run's own data set, from <run_dir>/config.yaml
    data=imagenet|imagenette data.root=<root>  another one (any data set); trainer.devices=8 trainer.strategy=ddp
    eval.crops=144 needs an image-folder data set; synthetic, MNIST and Fashion-MNIST are evaluated single view

Writes <out>/eval.json (see conf/eval.yaml for the default folder) and prints the top-1/top-5 errors.
Exit status: 0 done; 2 bad input (config, checkpoint, run folder, data set): no eval.json written.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

import bnrepro.evaluation.config  # noqa: F401  (registers `eval_schema` and the `eval_name` resolver)
from bnrepro.entry import data_node_refusal, refusals_exit, run_command, task_started
from bnrepro.evaluation.evaluate import evaluate

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def main(cfg) -> None:
    task_started()
    with refusals_exit():  # a bad config, checkpoint or image: its message, exit status 2
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


def command() -> None:
    # Hydra's composition errors (a misspelled key, ...) exit 2, as bad input; so does data.<key> without data=
    run_command(main, data_node_refusal)


if __name__ == "__main__":
    command()
