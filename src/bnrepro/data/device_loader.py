"""Loaders for data sets held whole as tensors on the training device.

A tiny network's step costs about a millisecond, so a DataLoader worker per batch (or even a Python
collate per batch) would dominate it. Here the data set is one tensor on the device; a sampler hands
out *index tensors* and torch's DataLoader (num_workers=0, batch_size=None) just indexes the tensor:
one gather per Lightning batch, no copies, no workers.

Each rank draws its part of the same global permutation (same seed on every rank), so no communication
is needed and the ranks' mini-batches are disjoint. Lightning's own DistributedSampler is therefore off
(`trainer.use_distributed_sampler=false`).
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bnrepro.lightning_compat import batches_done_in_epoch


def shard_order(num_examples: int, seed: int) -> torch.Tensor:
    """The fixed order of the examples in `shard` shuffling: the order the shards were written in."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 - 1))


def shuffled_pass(
    num_examples: int, data_pass: int, seed: int, shuffle: str = "thorough", shard_size: int = 1024
):
    """The order of one pass over the data (Sec. 4.2.1 "shuffle training examples more thoroughly").

    thorough: a fresh permutation of the whole set each pass. shard: the paper's baseline, which had no
    within-shard shuffling (docs/paper.md Sec. 4): the fixed `shard_order` cut into shards of
    `shard_size` examples, each read in the same order every pass; only the order in which the full
    shards are visited changes. The short last shard (num_examples % shard_size examples, if any) is read
    last, so every full shard starts at a multiple of shard_size and, when the global batch divides
    shard_size, the same mini-batches recur every pass. That short shard's order is rotated each pass,
    so the examples of the pass's last, incomplete global batch (dropped) are not always the same.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + data_pass)
    if shuffle == "thorough":
        return torch.randperm(num_examples, generator=gen)
    if shuffle != "shard":
        raise ValueError(f"shuffle={shuffle!r}: expected thorough or shard")
    order, full = shard_order(num_examples, seed), num_examples // shard_size
    visit = torch.randperm(full, generator=gen)  # this pass's order of the full shards
    parts = [order[: full * shard_size].view(full, shard_size)[visit].reshape(-1)]
    tail = order[full * shard_size :]
    if len(tail):
        parts.append(tail.roll(int(torch.randint(len(tail), (1,), generator=gen))))
    return torch.cat(parts)


class StepChunkSampler(Sampler):
    """Yields index tensors of shape [batch_size], one optimizer step each; or, with `steps_per_batch` K,
    of shape [K, batch_size]: K steps at once (lit/multistep.py).

    Training is a stream of steps over back-to-back shuffled passes of the data (one fresh permutation
    per data epoch; the last incomplete global batch of a pass is dropped). The indices of a step depend
    only on (seed, step). Evaluation periods end at the multiples of `steps_per_epoch` and at the steps
    of `extra_eval_steps` (dense early evaluation, a short last period: config/loop.py). One iteration
    runs from `start_step` to the end of its period (one Lightning "epoch"); the next iteration reads
    the next period. A run resumed from any checkpoint (mid-period after a preemption, or at an
    evaluation, where Lightning's epoch counter may run ahead) starts its sampler at the checkpoint's
    step and so reads what the uninterrupted run read. __len__ counts the whole period that Lightning's
    epoch covers, the one holding `epoch_start` (the resumed epoch's first step: Lightning counts the
    batches done before a stop); where periods differ in length, Lightning asks for the loader, and so
    the length, again each period (run.py: reload_dataloaders_every_n_epochs).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        steps_per_epoch: int,
        steps_per_batch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: str = "thorough",
        shard_size: int = 1024,
        as_list: bool = False,
        start_step: int = 0,
        extra_eval_steps: Sequence[int] = (),
        epoch_start: int | None = None,
    ):
        if any(n % (steps_per_batch or 1) for n in (steps_per_epoch, *extra_eval_steps)):
            raise ValueError(
                f"steps_per_batch={steps_per_batch} must divide steps_per_epoch={steps_per_epoch} and "
                f"every step of extra_eval_steps={list(extra_eval_steps)}"
            )
        self.global_batch = batch_size * world_size
        self.steps_per_pass = num_examples // self.global_batch
        if self.steps_per_pass == 0:
            raise ValueError(
                f"{num_examples} examples are fewer than one global batch of {self.global_batch}"
            )
        if shuffle == "shard" and shard_size % self.global_batch:
            warnings.warn(
                f"data.shuffle=shard with a global batch of {self.global_batch}, which does not divide "
                f"data.shard_size={shard_size}: mini-batches straddle shards and do not recur from pass to "
                f"pass as the paper's baseline's did (docs/paper.md Sec. 4)",
                stacklevel=2,
            )
        self.num_examples, self.batch_size = num_examples, batch_size
        self.steps_per_epoch, self.steps_per_batch = steps_per_epoch, steps_per_batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.shard_size = shuffle, shard_size
        self.as_list = as_list  # yield lists of ints (map-style data sets read by DataLoader workers)
        self.extra_eval_steps = sorted(extra_eval_steps)
        self.next_step = start_step  # where the next iteration starts: after the last batch handed out
        self.epoch_start = start_step if epoch_start is None else epoch_start
        self._cached: tuple[int, torch.Tensor] | None = None

    def _pass_indices(self, data_pass: int) -> torch.Tensor:
        """This rank's indices of one shuffled pass, [steps_per_pass, batch_size]."""
        if self._cached is None or self._cached[0] != data_pass:
            perm = shuffled_pass(self.num_examples, data_pass, self.seed, self.shuffle, self.shard_size)
            perm = perm[: self.steps_per_pass * self.global_batch]
            self._cached = (
                data_pass,
                perm.view(self.steps_per_pass, self.world_size, self.batch_size)[:, self.rank],
            )
        return self._cached[1]

    def step_indices(self, first_step: int, count: int) -> torch.Tensor:
        """Indices of global steps [first_step, first_step + count), shape [count, batch_size]."""
        parts, step, end = [], first_step, first_step + count
        while step < end:
            data_pass, pos = divmod(step, self.steps_per_pass)
            take = min(self.steps_per_pass - pos, end - step)
            parts.append(self._pass_indices(data_pass)[pos : pos + take])
            step += take
        return torch.cat(parts)

    def period(self, step: int) -> tuple[int, int]:
        """[start, end) of the evaluation period holding `step`: between the nearest period ends."""
        every, extra = self.steps_per_epoch, self.extra_eval_steps
        start, end = step // every * every, (step // every + 1) * every
        i = bisect.bisect_right(extra, step)  # extra[:i] <= step < extra[i:]
        if i:
            start = max(start, extra[i - 1])
        if i < len(extra):
            end = min(end, extra[i])
        return start, end

    def __iter__(self) -> Iterator[torch.Tensor]:
        first = self.next_step
        end = self.period(first)[1]
        k = self.steps_per_batch or 1
        for start in range(first, end, k):
            idx = self.step_indices(start, k)
            idx = idx if self.steps_per_batch else idx[0]
            # Moved on as each batch is handed out: Lightning ends an epoch after len() batches without
            # asking for one more, so the loop's end is never reached.
            self.next_step = start + k
            yield idx.tolist() if self.as_list else idx

    def __len__(self) -> int:
        start, end = self.period(self.epoch_start)
        return (end - start) // (self.steps_per_batch or 1)


class ShardSliceSampler(Sampler):
    """Evaluation: this rank's contiguous shard of the set, in slices of `batch_size`.

    Shards partition the set (sizes differ by at most one), so every example is evaluated exactly once
    across ranks; slices index the device tensor without a copy.
    """

    def __init__(
        self, num_examples: int, batch_size: int, rank: int = 0, world_size: int = 1, as_list: bool = False
    ):
        self.start = num_examples * rank // world_size
        self.stop = num_examples * (rank + 1) // world_size
        self.batch_size = batch_size
        self.as_list = as_list  # lists of ints instead of slices, for map-style data sets

    def __iter__(self) -> Iterator[slice | list[int]]:
        for s in range(self.start, self.stop, self.batch_size):
            stop = min(s + self.batch_size, self.stop)
            yield list(range(s, stop)) if self.as_list else slice(s, stop)

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.batch_size)


class IndexedTensors(Dataset):
    """Tensors indexed along dim 0 by a slice (a view) or an index tensor of any shape (a gather).

    Gathers go through index_select on the flattened index, 2-3x faster on CPU than advanced indexing.
    """

    def __init__(self, *tensors: torch.Tensor, transform=None):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors need the same length along dim 0")
        self.tensors, self.transform = tensors, transform  # transform: applied to the inputs (first tensor)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: slice | torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(index, slice):
            out = tuple(t[index] for t in self.tensors)
        else:
            flat = index.reshape(-1).to(self.tensors[0].device)
            out = tuple(t.index_select(0, flat).view(*index.shape, *t.shape[1:]) for t in self.tensors)
        return out if self.transform is None else (self.transform(out[0]), *out[1:])


def device_loader(tensors: tuple[torch.Tensor, ...], sampler: Sampler, transform=None) -> DataLoader:
    """A DataLoader that indexes `tensors` with whatever `sampler` yields (no collate, no workers);
    `transform` maps each batch of inputs on the device (e.g. grey 28x28 -> 3-channel images)."""
    return DataLoader(
        IndexedTensors(*tensors, transform=transform), sampler=sampler, batch_size=None, num_workers=0,
        generator=own_generator(),
    )  # fmt: skip


def own_generator() -> torch.Generator:
    """A DataLoader draws its workers' base seed from this at every iter(); from the global generator it
    would shift dropout's random stream by one draw per evaluation period, so a run resumed at a period
    boundary would differ from the uninterrupted one (callbacks/rng_state.py)."""
    return torch.Generator().manual_seed(0)


class StepStreamDataModule(L.LightningDataModule):
    """Base of every data module: training batches follow StepChunkSampler's step stream (one Lightning
    epoch = one evaluation period), evaluation reads this rank's shard.

    `eval_every_steps`, `extra_eval_steps` and `steps_per_batch` come from the run plan (bnrepro/plan.py),
    not the config: the regular evaluation period in steps at the run's global batch (None for a module
    built for evaluation only), the evaluation steps off its grid (dense early ones, a short last
    period's end), and None (one mini-batch per Lightning batch) or K ([K, B] chunks, for
    lit/multistep.py's module)."""

    def __init__(self, *, name: str, num_classes: int, num_train_examples: int, batch_size: int,
                 eval_batch_size: int, shuffle: str, shard_size: int, seed: int,
                 eval_every_steps: int | None = None, extra_eval_steps: Sequence[int] = (),
                 steps_per_batch: int | None = None):  # fmt: skip
        super().__init__()
        self.name, self.num_classes, self.num_train_examples = name, num_classes, num_train_examples
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.shard_size, self.seed = shuffle, shard_size, seed
        self.eval_every_steps, self.steps_per_batch = eval_every_steps, steps_per_batch
        self.extra_eval_steps = tuple(extra_eval_steps)

    # Whether a training batch can be a chunk of several steps' mini-batches (TensorDataModule).
    can_chunk_steps = False

    @classmethod
    def holds_on_device(cls, data_cfg) -> bool:
        """Whether a module built from `data_cfg` keeps the whole set on the training device (CUDA graphs
        need it; speed.py): asked by the run plan before the module exists."""
        return False

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer else 0

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer else 1

    def train_sampler(
        self, num_examples: int, as_list: bool = False, start_step: int | None = None
    ) -> StepChunkSampler:
        """The training stream from `start_step`; None: where training is, the trainer's global step when
        Lightning asks for the loader (after a resumed run's checkpoint is restored), else 0. Its length
        is the period of Lightning's current epoch, which a resumed run may be partway through, or at the
        end of (lightning_compat.batches_done_in_epoch)."""
        assert self.eval_every_steps is not None, "built for evaluation only: no eval_every_steps"
        epoch_start = start_step
        if start_step is None and self.trainer is not None:
            start_step = self.trainer.global_step
            epoch_start = start_step - batches_done_in_epoch(self.trainer) * (self.steps_per_batch or 1)
        start_step = start_step or 0
        return StepChunkSampler(
            num_examples, self.batch_size, self.eval_every_steps, self.steps_per_batch, seed=self.seed, rank=self.rank,
            world_size=self.world_size, shuffle=self.shuffle, shard_size=self.shard_size, as_list=as_list,
            start_step=start_step, extra_eval_steps=self.extra_eval_steps, epoch_start=epoch_start,
        )  # fmt: skip

    def val_sampler(self, num_examples: int, as_list: bool = False) -> ShardSliceSampler:
        return ShardSliceSampler(num_examples, self.eval_batch_size, self.rank, self.world_size, as_list)
