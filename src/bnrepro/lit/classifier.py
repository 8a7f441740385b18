"""The LightningModule shared by every variant: cross-entropy classifier trained with SGD-family optimizers.

Optimization is manual so that one Lightning batch may carry several optimizer steps (a [K, B, ...]
chunk of mini-batches, see data/device_loader.py): for the ~2 ms MNIST step Lightning's per-batch cost
would otherwise dominate. Each inner step is a full step -- zero_grad, forward, backward, optimizer.step
through Lightning's optimizer wrapper, which advances `trainer.global_step` -- so a step means the same
thing with K=1 or K=500 and `trainer.max_steps` counts optimizer steps either way.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


def effective_lr(
    base_lr: float, factor: float, global_batch: int, reference_batch: int, scaling: str
) -> float:
    """Initial LR = base x lr_multiplier, scaled linearly with global batch / reference batch if asked."""
    lr = base_lr * factor
    return lr * global_batch / reference_batch if scaling == "linear" else lr


def build_optimizer(
    params, name: str, lr: float, momentum=0.0, nesterov=False, weight_decay=0.0, betas=(0.9, 0.999)
):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ValueError(f"optimizer.name={name!r}: expected sgd or adamw")


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        batch_size: int,
        optimizer: dict,
        lr_multiplier: float = 1.0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.batch_size = batch_size  # per device
        self.optimizer_cfg = dict(optimizer)
        self.lr_multiplier = lr_multiplier
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Mean training loss between evaluations, accumulated on the device (no host sync in the step
        # loop) and averaged across ranks at compute. A metric, not a buffer: DDP broadcasts buffers
        # from rank 0 before every forward, which would overwrite the other ranks' sums.
        self.train_loss = MeanMetric(
            nan_strategy="disable"
        )  # a NaN loss must show (diverged), not be skipped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.trainer.world_size

    @property
    def lr(self) -> float:
        o = self.optimizer_cfg
        return effective_lr(
            o["lr"], self.lr_multiplier, self.global_batch, o["reference_batch"], o["lr_scaling"]
        )

    def configure_optimizers(self):
        o = self.optimizer_cfg
        return build_optimizer(
            self.parameters(), o["name"], self.lr, o.get("momentum", 0.0), o.get("nesterov", False),
            o.get("weight_decay", 0.0), o.get("betas", (0.9, 0.999)),
        )  # fmt: skip

    def training_step(self, batch, batch_idx):
        x, y = batch
        if y.dim() == 1:  # one mini-batch; a chunk of K mini-batches has labels [K, B]
            x, y = x.unsqueeze(0), y.unsqueeze(0)
        opt = self.optimizers()
        losses = []
        for xb, yb in zip(x, y):
            loss = F.cross_entropy(self.net(xb), yb)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
            losses.append(loss.detach())
        self.train_loss.update(torch.stack(losses))

    def on_validation_epoch_start(self):
        # Under DDP each rank's BN moving averages have taken its own last mini-batch. Evaluate every
        # shard with rank 0's -- the ones DDP broadcasts before each training forward and the checkpoint
        # holds -- so the evaluated network is one network.
        if self.trainer.world_size > 1:
            for buf in self.net.buffers():
                torch.distributed.broadcast(buf, src=0)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.val_acc.reset()
            return
        self.log("val/acc", self.val_acc.compute(), sync_dist=False)  # torchmetrics syncs across ranks
        self.val_acc.reset()
        if self.train_loss.update_count:
            self.log("train/loss", self.train_loss.compute())  # torchmetrics syncs across ranks
            self.train_loss.reset()
        # The logger's x axis: optimizer steps (Lightning would otherwise use its batch counter).
        self.log("step", float(self.global_step))
