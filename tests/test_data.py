"""MNIST / Fashion-MNIST loading from IDX files the tests write; the on-device samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnrepro.data.device_loader import ShardSliceSampler, StepChunkSampler
from bnrepro.data.mnist import DatasetNotFoundError, load_tensors, prepare
from conftest import make_idx_set


def test_reads_torchvision_layout_and_binarizes(tmp_path):
    arrays = make_idx_set(tmp_path / "MNIST" / "raw")
    prepare("mnist", tmp_path, download=False)
    x, y = load_tensors("mnist", tmp_path, train=True, binarize_threshold=0.5)
    images, labels = arrays["train"]
    assert x.shape == (240, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(x[:, 0], torch.from_numpy(images / 255.0 > 0.5).float())  # Sec. 4.1 binary input
    grey, _ = load_tensors("mnist", tmp_path, train=False, binarize_threshold=None)
    assert grey.shape == (100, 1, 28, 28) and 0 < grey.unique().numel() > 2


def test_reads_debian_gzipped_files_from_a_system_dir(tmp_path):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = make_idx_set(system, compress=True)
    root = tmp_path / "data"
    raw = prepare("fashion_mnist", root, system_dirs=[system], download=False)
    assert raw == root / "FashionMNIST" / "raw" and not list(raw.glob(".*partial"))
    _, y = load_tensors("fashion_mnist", root, train=False, binarize_threshold=0.5)
    assert torch.equal(y, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        prepare("fashion_mnist", tmp_path / "nowhere", system_dirs=[tmp_path / "sys"], download=False)
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "sys") in msg
    assert "data.download" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_step_chunks_cover_each_pass_once_and_are_reproducible():
    s = StepChunkSampler(num_examples=600, batch_size=60, steps_per_epoch=20, steps_per_batch=5, seed=1)
    assert len(s) == 4
    chunks = list(s)  # the first evaluation period, steps 0-19
    assert all(c.shape == (5, 60) for c in chunks)
    first_pass = torch.cat(chunks).flatten()[:600]
    assert torch.equal(first_pass.sort().values, torch.arange(600))  # 10 steps = one full permutation
    again = StepChunkSampler(600, 60, 20, 5, seed=1, start_step=20)
    assert all(
        torch.equal(a, b) for a, b in zip(s, again)
    )  # the next iteration: period 1, a function of (seed, step)
    resumed = StepChunkSampler(600, 60, 20, 5, seed=1, start_step=30)  # a resume mid-period: to its end
    assert torch.equal(torch.cat(list(resumed)), s.step_indices(30, 10))
    assert torch.equal(torch.cat(chunks).view(-1, 60)[10:], s.step_indices(10, 10))


def test_periods_end_at_the_grid_and_at_the_extra_steps_and_a_loader_counts_its_epochs_period():
    """Dense early evaluation at 2, 4, 6, the grid of 10, a short last period to 26: a sampler started at
    a step reads to the end of its period; its length is the period of Lightning's epoch (`epoch_start`),
    which a resumed run at a period's end is still in."""
    kw = dict(num_examples=600, batch_size=60, steps_per_epoch=10, steps_per_batch=2, seed=1,
              extra_eval_steps=(2, 4, 6, 26))  # fmt: skip
    ref = StepChunkSampler(**kw)
    for start, period in [(0, (0, 2)), (6, (6, 10)), (14, (10, 20)), (20, (20, 26)), (22, (20, 26))]:
        s = StepChunkSampler(**kw, start_step=start)
        assert s.period(start) == period and len(s) == (period[1] - period[0]) // 2
        assert torch.equal(torch.cat(list(s)).view(-1, 60), ref.step_indices(start, period[1] - start))
    at_end = StepChunkSampler(**kw, start_step=6, epoch_start=4)  # resumed at the evaluation of step 6
    assert len(at_end) == 1 and len(list(at_end)) == 2  # Lightning's epoch [4, 6) is done; it reads on
    with pytest.raises(ValueError, match="must divide .* extra_eval_steps=\\[3\\]"):
        StepChunkSampler(600, 60, 10, 2, extra_eval_steps=(3,))


def test_ranks_draw_disjoint_parts_of_one_global_batch():
    parts = [
        StepChunkSampler(600, 30, 10, 1, seed=0, rank=r, world_size=2).step_indices(0, 10) for r in (0, 1)
    ]
    assert parts[0].shape == (10, 30)
    both = torch.cat(parts, 1).flatten()
    assert torch.equal(both.sort().values, torch.arange(600))


def test_eval_shards_count_every_example_once():
    seen = []
    for rank in range(3):
        for sl in ShardSliceSampler(10_001, 4000, rank, 3):
            seen.extend(range(sl.start, sl.stop))
    assert sorted(seen) == list(range(10_001))


def test_device_loader_gathers_chunks_and_slices_exactly():
    from bnrepro.data.device_loader import IndexedTensors

    x, y = torch.arange(50.0).view(10, 5), torch.arange(10)
    ds = IndexedTensors(x, y)
    idx = torch.tensor([[3, 1], [0, 9]])
    gx, gy = ds[idx]
    assert torch.equal(gx, x[idx]) and torch.equal(gy, y[idx]) and gx.shape == (2, 2, 5)
    sx, _ = ds[slice(2, 4)]
    assert torch.equal(sx, x[2:4]) and sx.data_ptr() == x[2].data_ptr()  # a view, no copy


def test_shard_shuffling_keeps_examples_within_their_shard_and_thorough_does_not():
    """Sec. 4.2.1: the baseline's shards (fixed order within) vs the BN variants' full permutation per pass."""
    from bnrepro.data.device_loader import shard_order, shuffled_pass

    n, shard = 1000, 96  # the last shard is partial (40 examples)
    shard_of = torch.empty(n, dtype=torch.long)
    shard_of[shard_order(n, seed=0)] = torch.arange(n) // shard
    passes = [shuffled_pass(n, p, seed=0, shuffle="shard", shard_size=shard) for p in range(4)]
    for perm in passes:
        assert sorted(perm.tolist()) == list(range(n))
        ids = shard_of[perm]
        runs = torch.unique_consecutive(ids)
        assert len(runs) == len(set(runs.tolist())) == 11  # each shard read in one contiguous run
    assert (
        len({tuple(torch.unique_consecutive(shard_of[p]).tolist()) for p in passes}) == 4
    )  # shard order varies
    assert not torch.equal(passes[0], passes[1])
    # The short shard is read last (full shards keep their batch boundaries) and rotated each pass, so the
    # examples dropped with a pass's last, incomplete global batch are not always the same.
    assert {int(shard_of[p[-1]]) for p in passes} == {10} and len({int(p[-1]) for p in passes}) > 1
    a, b = shuffled_pass(n, 0, seed=0), shuffled_pass(n, 1, seed=0)
    assert set(a[:shard].tolist()) != set(b[:shard].tolist())  # thorough: neighbours change every pass


def test_synthetic_data_is_made_on_the_device_and_sharded_by_rank():
    from conftest import build_data, compose_train

    cfg = compose_train("data=synthetic", "data.num_classes=7", "data.num_train_examples=40", "seed=1",
                        "data.num_val_examples=10", "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=3",
                        "loop.steps_per_batch=1")  # fmt: skip
    dm = build_data(cfg, eval_every_steps=5)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and y.max() < 7
    assert len(dm.train_dataloader()) == 5 and sum(len(b[1]) for b in dm.val_dataloader()) == 10
    again = build_data(cfg, eval_every_steps=5)
    again.setup()
    assert torch.equal(again.train_x, dm.train_x)  # same seed, same data


def test_an_mnist_training_set_of_another_size_is_warned_about(mnist_root):
    """The tiny set holds 240 training images; data.num_train_examples (60,000 for MNIST) is the epoch that
    lengths in epochs and LR decay count, so a mismatch is said, as the ImageNet loader does."""
    import warnings

    from conftest import build_data, compose_train

    overrides = ("data=mnist", f"data.root={mnist_root}", "data.download=false")
    dm = build_data(compose_train(*overrides), eval_every_steps=5)
    with pytest.warns(UserWarning, match="holds 240 training examples but data.num_train_examples=60000"):
        dm.setup()
    dm = build_data(compose_train(*overrides, "data.num_train_examples=240"), eval_every_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.setup()


def _batches(
    shuffle: str, data_pass: int, n: int = 4136, batch: int = 32, shard: int = 1024
) -> list[frozenset]:
    """The mini-batches (as sets of examples) of one pass of the step stream."""
    s = StepChunkSampler(n, batch, steps_per_epoch=1, seed=0, shuffle=shuffle, shard_size=shard)
    return [frozenset(b.tolist()) for b in s.step_indices(data_pass * s.steps_per_pass, s.steps_per_pass)]


def _pairs(batches: list[frozenset]) -> set[tuple[int, int]]:
    return {(a, b) for batch in batches for a in batch for b in batch if a < b}


def test_shard_shuffling_repeats_the_same_mini_batches_every_pass_and_thorough_does_not():
    """docs/paper.md Sec. 4: the paper's baseline had no within-shard shuffling, so each shard's order is
    fixed and the same mini-batches recur pass after pass (only the order of the shards changes); thorough
    shuffling mixes the whole set anew every pass. 4136 examples: 4 shards of 1024 and a short one of 40."""
    for shuffle, low, high in (("shard", 0.95, 1.0), ("thorough", 0.0, 0.05)):
        passes = [_batches(shuffle, p) for p in range(3)]
        for a, b in zip(passes, passes[1:]):
            repeated = len(set(a) & set(b)) / len(b)  # mini-batches of this pass seen in the previous one
            pairs_a, pairs_b = _pairs(a), _pairs(b)
            together_again = len(pairs_a & pairs_b) / len(pairs_b)  # pairs of examples that meet again
            seen = (shuffle, repeated, together_again)
            assert low <= repeated <= high and low <= together_again <= high, seen
    assert _batches("shard", 0) != _batches("shard", 1)  # the same batches, in another order
