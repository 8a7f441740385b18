"""Figure 1(b,c): percentiles of a sigmoid's input over the evaluation set, at every evaluation.

A forward hook on the activation module records its *input* during validation. The quantiles are
taken per unit over every evaluation example (gathered across ranks), for all units of the layer:
the configured unit is logged as act/p15, act/p50, act/p85; all units go to `unit_percentiles.npz`
in the run folder (steps [E], quantiles [Q], values [E, Q, units]) so "typical" can be checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch


@torch.no_grad()
def input_width(net: torch.nn.Module, module: str, input_shape: tuple[int, ...]) -> int:
    """Number of units entering `module`, found with one forward of two zero inputs (eval mode)."""
    widths = []
    handle = net.get_submodule(module).register_forward_hook(lambda m, i, o: widths.append(i[0][0].numel()))
    was_training = net.training
    try:
        net.eval()
        net(torch.zeros(2, *input_shape))
    finally:
        handle.remove()
        net.train(was_training)
    return widths[0]


class ActivationPercentiles(L.Callback):
    """`module`: dotted path of the activation module in the network (`pl_module.net`). `out_dir`: where
    unit_percentiles.npz goes; None: the run folder (trainer.default_root_dir)."""

    def __init__(self, module: str, unit: int, quantiles, out_dir: str | Path | None = None):
        self.module, self.unit, self.quantiles = module, unit, list(quantiles)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []
        self._chunks: list[torch.Tensor] = []
        self._handle = None

    def check(self, net: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
        """At start-up (run.py), before any process is spawned: the module exists and has the unit."""
        from bnrepro.errors import ConfigError

        try:
            width = input_width(net, self.module, input_shape)
        except AttributeError as e:
            raise ConfigError(
                f"callbacks.percentiles.module={self.module!r} is not in the network: {e}"
            ) from e
        if not 0 <= self.unit < width:
            raise ConfigError(
                f"callbacks.percentiles.unit={self.unit} is out of range: {self.module} has {width} inputs"
            )

    def summary_info(self) -> dict:
        """What summary.json says of this callback (the renderer labels Figure 1(b,c) with it)."""
        return {"percentile_unit": f"{self.module}[{self.unit}]"}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.out_dir is None:
            self.out_dir = Path(trainer.default_root_dir)

    def _hook(self, module, inputs, output):
        self._chunks.append(inputs[0].detach().flatten(1))

    def on_validation_epoch_start(self, trainer, pl_module):
        target = pl_module.net.get_submodule(self.module)  # the path is checked at start-up (check())
        self._chunks = []
        self._handle = target.register_forward_hook(self._hook)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._handle.remove()
        if trainer.sanity_checking or not self._chunks:
            return
        acts = torch.cat(self._chunks).float()
        self._chunks = []
        quantile = torch.quantile
        if trainer.world_size > 1:  # rank shards differ in size by at most one: pad with NaN, gather
            n = torch.tensor(len(acts), device=acts.device)
            longest = int(pl_module.all_gather(n).max())
            padded = torch.full((longest, acts.shape[1]), float("nan"), device=acts.device)
            padded[: len(acts)] = acts
            acts = pl_module.all_gather(padded).flatten(0, 1)
            quantile = torch.nanquantile
        q = torch.tensor(self.quantiles, device=acts.device)
        # Each unit's values contiguous: sorting along the last dim is several times faster.
        values = quantile(acts.t().contiguous(), q, dim=1)  # [Q, units]
        for qi, v in zip(self.quantiles, values[:, self.unit]):
            pl_module.log_global(f"act/p{round(qi * 100)}", v)  # identical on every rank
        self.steps.append(trainer.global_step)
        self.values.append(values.cpu().numpy())
        if trainer.is_global_zero:
            self._write()

    # Checkpointed, so unit_percentiles.npz of a resumed run holds the evaluations before the stop too.
    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "values": [torch.from_numpy(v) for v in self.values]}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.values = list(state["steps"]), [v.numpy() for v in state["values"]]

    def _write(self) -> None:
        path = self.out_dir / "unit_percentiles.npz"
        tmp = path.with_name(".unit_percentiles.partial.npz")
        try:
            np.savez(
                tmp,
                steps=np.array(self.steps),
                quantiles=np.array(self.quantiles),
                values=np.stack(self.values),
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file
