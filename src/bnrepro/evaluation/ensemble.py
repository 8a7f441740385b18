"""The evaluated model: class probabilities averaged over crops, then over ensemble members (Figure 4).

The paper's ensemble "averages class probabilities", so each member's logits go through softmax before
any averaging; averaging logits would weight a confident member more. Top-1/top-5 accuracy and the
image count are torchmetrics states, summed across ranks when computed, so under DDP (each rank
evaluating its own disjoint shard, see data.py) every validation image is counted exactly once.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from bnrepro.evaluation.crops import to_unit_float
from bnrepro.evaluation.members import Member


def average_probabilities(member_logits: list[torch.Tensor]) -> torch.Tensor:
    """[B, crops, classes] logits per member -> [B, classes]: softmax, mean over crops, mean over members."""
    probs = [torch.softmax(logits.float(), dim=-1).mean(dim=1) for logits in member_logits]
    return torch.stack(probs).mean(dim=0)


class EnsembleClassifier(L.LightningModule):
    def __init__(self, members: list[Member], ready_inputs: bool = False):
        """`ready_inputs`: batches are the networks' own inputs (a tensor data set's validation batches,
        made by its data module as in training), one view per example; else uint8 crops (see forward)."""
        super().__init__()
        self.ready_inputs = ready_inputs
        self.nets = nn.ModuleList(m.net for m in members)
        self.preprocess = nn.ModuleList(m.preprocess for m in members)
        classes = members[0].num_classes
        self.top1 = MulticlassAccuracy(num_classes=classes, average="micro")
        # Top-5 is meaningless (always 1) with 5 classes or fewer: reported as null there.
        self.top5 = MulticlassAccuracy(num_classes=classes, top_k=5, average="micro") if classes > 5 else None
        self.num_images = SumMetric()
        self.result: dict | None = None  # set at the end of the validation epoch, on every rank

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops [B, crops, 3, H, W] -> averaged class probabilities [B, classes]."""
        if self.ready_inputs:
            return average_probabilities([net(crops).unsqueeze(1) for net in self.nets])
        b, c = crops.shape[:2]
        x = to_unit_float(crops.flatten(0, 1))  # [B * crops, 3, H, W] in [0, 1]
        logits = [net(pre(x)).view(b, c, -1) for net, pre in zip(self.nets, self.preprocess)]
        return average_probabilities(logits)

    def validation_step(self, batch, batch_idx):
        crops, labels = batch
        probs = self(crops)
        self.top1.update(probs, labels)
        if self.top5 is not None:
            self.top5.update(probs, labels)
        self.num_images.update(torch.tensor(float(len(labels)), device=self.device))

    def on_validation_epoch_end(self):
        # compute() syncs the states of every rank (torchmetrics), so all ranks see the same totals.
        n = int(self.num_images.compute())

        def fraction(metric) -> float | None:
            # torchmetrics divides in float32; back to the exact count of hits, then correct/n in float64.
            return None if metric is None or n == 0 else round(float(metric.compute()) * n) / n

        self.result = {"num_images": n, "top1_acc": fraction(self.top1), "top5_acc": fraction(self.top5)}
