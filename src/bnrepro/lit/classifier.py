"""The LightningModule shared by every variant: cross-entropy classifier trained with SGD-family optimizers.

Lightning's automatic optimization: one training batch is one mini-batch and one optimizer step (forward
under the precision's autocast; zero_grad, backward and the update outside it; then the per-step LR
schedule). The MNIST nets take several steps per Lightning batch instead (lit/multistep.py).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


def effective_lr(base_lr: float, global_batch: int, reference_batch: int, rule: str) -> float:
    """Initial LR: `base_lr` is meant at `reference_batch`; scaled linearly with the global batch if asked."""
    return base_lr * global_batch / reference_batch if rule == "linear" else base_lr


class ClassifierModule(L.LightningModule):
    """`optimizer`: a torch optimizer class or partial (the optimizer group, `_partial_: true`) whose `lr`
    is the base LR at global batch `reference_batch`; it is called with the parameter groups and the LR
    scaled by `lr_rule` for this run's global batch. `schedule`: the LR factor after a number of
    examples seen (lit/schedules.py). `global_batch`: examples per optimizer step over all devices, as the
    run plan computed it (bnrepro/plan.py). No argument has a default: the config's schema owns them
    (config/schema.py), the plan the rest."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        global_batch: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        schedule: Callable[[int], float],
        reference_batch: int,
        lr_rule: str,
        aux_loss_weight: float,
        decay_all_params: bool,
        fused_optimizer: bool,
        channels_last: bool,
    ):
        super().__init__()
        self.net = net
        self.global_batch = global_batch
        self.optimizer_factory = optimizer
        self.base_lr = optimizer.keywords["lr"]
        self.weight_decay = optimizer.keywords["weight_decay"]  # the optimizer schema always sets it
        self.reference_batch, self.lr_rule = reference_batch, lr_rule
        self.schedule = schedule
        self.aux_loss_weight = aux_loss_weight
        self.decay_all_params = decay_all_params
        self.fused_optimizer = fused_optimizer
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # Top-5 as the paper's Figure 4 reports it; meaningless (always 1) below 6 classes.
        self.val_acc_top5 = (
            MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro") if num_classes > 5 else None
        )
        # Mean training loss between evaluations, accumulated on the device (no host sync in the step
        # loop) and averaged across ranks at compute. A metric, not a buffer: DDP broadcasts buffers
        # from rank 0 before every forward, which would overwrite the other ranks' sums. A NaN loss
        # must show (diverged), not be skipped.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_loss.persistent(True)  # in checkpoints: a run resumed mid-period logs the same mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def lr(self) -> float:
        """The initial LR this run uses (before the schedule's decay)."""
        return effective_lr(self.base_lr, self.global_batch, self.reference_batch, self.lr_rule)

    def lr_factor(self, step: int) -> float:
        """The schedule's factor after `step` optimizer steps of this run's global batch."""
        return self.schedule(step * self.global_batch)

    def configure_optimizers(self):
        params = (
            self.net.parameters()
            if self.decay_all_params
            else param_groups_weight_decay(self.net, self.weight_decay)
        )
        # fused: one kernel for the whole update (speed.fused_optimizer); None = torch's default (foreach).
        opt = self.optimizer_factory(params, lr=self.lr, fused=self.fused_optimizer or None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def loss(self, out, y: torch.Tensor) -> torch.Tensor:
        if isinstance(out, tuple):  # (logits, *auxiliary logits): GoogLeNet's weighted auxiliary losses
            main, *aux = out
            return F.cross_entropy(main, y) + self.aux_loss_weight * sum(F.cross_entropy(a, y) for a in aux)
        return F.cross_entropy(out, y)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self.net(self._input(x)), y)
        self.train_loss.update(loss.detach())
        return loss

    def mini_batches(self, batch) -> list:
        """The (inputs, labels) of each optimizer step a training batch holds: here the batch itself
        (lit/multistep.py: K of them). Callbacks that need mini-batches ask this, not the batch's shape."""
        return [batch]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of the other way of stepping -- several steps per batch (lit/multistep.py, manual
        optimization, as every variant trained before automatic optimization) or automatic -- counts its
        steps in that way's progress: carry them over, so the run resumes at its step, not at 0."""
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        automatic = loops.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {})
        manual = loops.get("epoch_loop.manual_optimization.optim_step_progress")
        if "step" not in automatic or manual is None:
            return
        mine, other = (
            (automatic["step"], manual) if self.automatic_optimization else (manual, automatic["step"])
        )
        if mine["total"]["completed"] < other["total"]["completed"]:
            for part in ("total", "current"):
                mine[part].update(ready=other[part]["ready"], completed=other[part]["completed"])

    def on_validation_epoch_start(self):
        # Under DDP each rank's BN moving averages have taken its own last mini-batch. Evaluate every
        # shard with rank 0's -- the ones DDP broadcasts before each training forward and the checkpoint
        # holds -- so the evaluated network is one network.
        if self.trainer.world_size > 1:
            for buf in self.net.buffers():
                torch.distributed.broadcast(buf, src=0)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(self._input(x))
        self.val_acc.update(logits, y)
        if self.val_acc_top5 is not None:
            self.val_acc_top5.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y), sync_dist=True)

    def on_validation_epoch_end(self):
        metrics = {"val/acc": self.val_acc}
        if self.val_acc_top5 is not None:
            metrics["val/acc_top5"] = self.val_acc_top5
        if self.trainer.sanity_checking:
            for m in metrics.values():
                m.reset()
            return
        for name, m in metrics.items():
            self.log_global(name, m.compute())  # torchmetrics syncs across ranks
            m.reset()
        if self.train_loss.update_count:
            self.log_global("train/loss", self.train_loss.compute())  # torchmetrics syncs across ranks
            self.train_loss.reset()
        self.log_global("train/lr", self.optimizers().param_groups[0]["lr"])
        # The logger's x axis: optimizer steps (Lightning would otherwise use its batch counter), and the
        # paper's: steps of its mini-batch (examples seen / lr_scaling.reference_batch), whatever the devices.
        self.log_global("step", float(self.global_step))
        self.log_global("paper_step", self.paper_steps(self.global_step))

    def log_global(self, name: str, value) -> None:
        """Logs a value that is already the same on every rank. Lightning cannot know that and warns under
        DDP unless it syncs; the sync's max of equal values is each of them exactly (a mean could round)."""
        self.log(name, value, sync_dist=True, reduce_fx="max")

    def paper_steps(self, steps: int) -> float:
        return steps * self.global_batch / self.reference_batch
