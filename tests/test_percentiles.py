"""Figure 1(b,c) callback: its quantiles equal torch.quantile over the whole evaluation set."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import timm
import torch

import bnrepro.models  # noqa: F401
from bnrepro.callbacks.percentiles import ActivationPercentiles
from bnrepro.data.device_loader import ShardSliceSampler, StepChunkSampler, device_loader
from bnrepro.lit.classifier import ClassifierModule
from bnrepro.lit.schedules import Constant


def test_percentiles_match_torch_quantile_over_all_eval_batches(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
    xt, yt = torch.rand(250, 1, 28, 28), torch.randint(0, 10, (250,))
    net = timm.create_model("mnist_mlp", norm="batchnorm")
    module = ClassifierModule(net, num_classes=10, global_batch=60, optimizer=partial(torch.optim.SGD, lr=0.1, weight_decay=0.0),
                              schedule=Constant(), reference_batch=60, lr_rule="linear", aux_loss_weight=0.3,
                              decay_all_params=False, fused_optimizer=False, channels_last=False)  # fmt: skip
    cb = ActivationPercentiles("blocks.2.act", unit=7, quantiles=[0.15, 0.5, 0.85], out_dir=tmp_path)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=10, max_epochs=-1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, callbacks=[cb], num_sanity_val_steps=0,
    )  # fmt: skip
    train = device_loader((x, y), StepChunkSampler(300, 60, steps_per_epoch=5))
    val = device_loader((xt, yt), ShardSliceSampler(250, 100))  # three batches: 100, 100, 50
    trainer.fit(module, train, val)

    net.eval()
    with torch.no_grad():  # the last sigmoid's input, computed directly
        h = net.blocks[1](net.blocks[0](xt.flatten(1)))
        pre = net.blocks[2].norm(net.blocks[2].fc(h))
    expected = torch.quantile(pre, torch.tensor([0.15, 0.5, 0.85]), dim=0)

    assert cb.steps == [5, 10]
    torch.testing.assert_close(torch.from_numpy(cb.values[-1]), expected)
    logged = trainer.callback_metrics
    torch.testing.assert_close(
        torch.stack([logged["act/p15"], logged["act/p50"], logged["act/p85"]]), expected[:, 7]
    )
    saved = np.load(tmp_path / "unit_percentiles.npz")
    assert saved["values"].shape == (2, 3, 100) and list(saved["steps"]) == [5, 10]
