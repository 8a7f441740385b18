"""The K optimizer steps of one Lightning batch captured as one CUDA graph, then replayed.

The MNIST MLP's step is ~60 tiny kernels: eager PyTorch spends its time launching them (Python,
autograd, dispatcher), not running them. A CUDA graph replays the whole chunk -- K x (forward,
backward, SGD update, BN running-average update) -- with one launch. What the graph computes is what
the eager steps compute, with the same kernels; only these differ:

- the LR is a number baked into the captured SGD kernels, so a graph is valid for one LR value. A
  chunk whose K steps share an LR replays the graph captured for that value (captured again when the
  schedule moves to a new value: with staircase decay, rarely); a chunk across an LR change runs eagerly.
- the inputs are copied into the graph's own (static) tensors before each replay.
- gradients are zeroed in place instead of set to None (a graph cannot allocate new tensors on replay);
  0 + g == g, so the update is the same.

Capture needs warm state (cuBLAS handles, momentum buffers): the first chunk runs eagerly, capture
happens on a later one. A capture that fails leaves a warning and eager steps for the rest of the run.
`emulate=True` runs the same static-buffer bookkeeping without a graph (the CPU tests use it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class GraphedSteps:
    def __init__(self, steps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], emulate: bool = False):
        self.steps = steps  # (x [K, B, ...], y [K, B]) -> losses [K]; one raw optimizer step per row
        self.emulate = emulate
        self.enabled = True
        self.warm = False
        self.key = None  # (x shape, y shape, lr) the current graph was captured for
        self.graph = None
        self.replays = 0  # chunks run by the graph (tests and the benchmark read it)

    def invalidate(self) -> None:
        """The next chunk captures again (its tensors may have been replaced by eager steps)."""
        self.key, self.graph = None, None

    def run(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor | None:
        """Runs the chunk through the graph and returns its losses; None: run it eagerly instead."""
        if not self.enabled:
            return None
        if not self.warm:
            self.warm = True  # this chunk runs eagerly and warms everything up
            self.invalidate()
            return None
        key = (tuple(x.shape), tuple(y.shape), lr)
        if key != self.key:
            try:
                self._capture(x, y)
            except Exception as e:  # noqa: BLE001 -- any capture failure: keep training, eagerly
                warnings.warn(
                    f"CUDA graph capture failed ({e}); training continues without CUDA graphs", stacklevel=2
                )
                self.enabled = False
                return None
            self.key = key
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        if self.emulate:
            self.static_losses = self.steps(self.static_x, self.static_y)
        else:
            self.graph.replay()
        self.replays += 1
        return self.static_losses.clone()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.graph = None  # free the previous graph's memory pool first
        self.static_x, self.static_y = x.clone(), y.clone()
        if self.emulate:
            return
        graph = torch.cuda.CUDAGraph()
        # Nothing runs during capture: the chunk's steps are done by the replay that follows.
        with torch.cuda.graph(graph):
            self.static_losses = self.steps(self.static_x, self.static_y)
        self.graph = graph
