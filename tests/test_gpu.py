"""What only a CUDA device can show (`pytest -m gpu` on a GPU machine; skipped elsewhere)."""

from __future__ import annotations

import json

import pytest
import torch
from test_scaling import LR_HALVES_AT_20, train_mlp

from conftest import compose_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_graph_steps_train_like_eager_steps_on_the_gpu():
    eager_trainer, eager = train_mlp(False, schedule=LR_HALVES_AT_20, device="cuda")
    graph_trainer, graphed = train_mlp(True, schedule=LR_HALVES_AT_20, device="cuda")
    assert graph_trainer.global_step == eager_trainer.global_step == 40 and graphed.graphed.replays == 3
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_bn_inception_trains_with_the_gpu_defaults(tmp_path):
    from bnrepro.run import train

    cfg = compose_train("model=bn_x30", "data=synthetic", "data.num_train_examples=256", "data.num_val_examples=64",
                        "data.image_size=96", "data.batch_size=32", "trainer.max_steps=8", "loop.eval_every_steps=4",
                        "logger=csv", "trainer.enable_progress_bar=false", f"runs_root={tmp_path}")  # fmt: skip
    summary = train(cfg, tmp_path / "r")
    assert summary["status"] == "finished" and summary["hardware"].startswith("NVIDIA")
    speed = json.loads((tmp_path / "r" / "summary.json").read_text())["speed"]
    assert speed["precision"] == "bf16-mixed" and speed["compile"] and speed["channels_last"]
    assert speed["fused_optimizer"] and speed["cudnn_benchmark"] and not speed["cuda_graphs"]
