"""Streaming loader: every item exactly once per epoch for any worker count and rank split, equal batch
counts per rank, reshuffling per epoch, device pass-through on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import DevicePrefetcher, make_loader, plan_epoch
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset

N, T, H, W = 37, 3, 4, 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Item ``i`` (a rollout window) has input value ``i`` everywhere and output ``i + 1``."""
    windows = (np.arange(N)[:, None] * (T - 1) + np.arange(T)[None, :]).astype(np.float64)
    w = np.broadcast_to(windows[:, :, None, None], (N, T, H, W))
    fields = {"w": FieldSpec(w, "scalar", "1", "item id"), "v": FieldSpec(np.stack([w, -w], 2), "vector", "1", "v")}
    path = write_dataset(tmp_path_factory.mktemp("loader") / "ids.nc", fields, x=np.arange(W) / W,
                         y=np.arange(H) / H, time=np.arange(T) * 1.0, periodic=True, pde="test",
                         parameters={}, seed=0, title="t", source="tests")
    return FieldDataset(path, DataSpec(["w", "v"], ["w"], TimeSelection("rollout")), in_memory=False)


def _ids(batches):
    """Item ids of every batch, checking that input and output belong to the same item."""
    out = []
    for x, y in batches:
        ids = x[:, 0, 0, 0]
        assert torch.equal(y[:, 0, 0, 0], ids + 1) and torch.equal(x[:, 1, 0, 0], ids)
        assert torch.equal(x[:, 2, 0, 0], -ids)
        out.append(ids.long().tolist())
    return out


def _expected_ids():
    return list(range(N * (T - 1)))  # rollout windows of T - 1 per sample, ids as written


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_item_exactly_once_per_epoch(dataset, workers):
    loader = make_loader(dataset, batch_size=5, shuffle=True, num_workers=workers, block_size=4,
                         shuffle_buffer=10)
    assert len(dataset) == 2 * N
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = _ids(loader)
        assert len(batches) == len(loader)
        assert all(len(b) <= 5 for b in batches)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == _expected_ids()
        assert any(b != list(range(b[0], b[0] + len(b))) for b in batches)  # shuffled inside blocks
        epochs.append(flat)
    assert epochs[0] != epochs[1]  # reshuffled by set_epoch


def test_worker_count_does_not_change_batches(dataset):
    """Batches depend only on (seed, epoch, rank), not on how many workers read them."""
    sets = []
    for workers in (0, 2):
        loader = make_loader(dataset, batch_size=4, shuffle=True, num_workers=workers, block_size=8)
        loader.set_epoch(3)
        sets.append(sorted(tuple(b) for b in _ids(loader)))
    assert sets[0] == sets[1]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_share_an_epoch_with_equal_batch_counts(dataset, drop_last, workers):
    n = len(dataset)  # 74 = 2 ranks x 37: odd per-rank count, not a multiple of the batch size
    loaders = [make_loader(dataset, batch_size=8, shuffle=True, rank=r, world_size=2, num_workers=workers,
                           drop_last=drop_last, block_size=5) for r in (0, 1)]
    for loader in loaders:
        loader.set_epoch(1)
    per_rank = [_ids(loader) for loader in loaders]
    assert len(per_rank[0]) == len(per_rank[1]) == len(loaders[0]) == len(loaders[1])
    flat = [i for batches in per_rank for b in batches for i in b]
    assert len(flat) == len(set(flat))  # nothing twice
    if drop_last:
        assert all(len(b) == 8 for batches in per_rank for b in batches)
        assert len(flat) == 2 * (n // 16) * 8
    else:
        assert sorted(flat) == _expected_ids()


def test_uneven_plans_give_equal_batch_counts():
    for n in range(3, 60):
        for world in (1, 2, 3, 4):
            if n < world * 2:
                continue
            plans = [plan_epoch(n, 7, rank=r, world_size=world, seed=1) for r in range(world)]
            assert len({len(p.batch_sizes) for p in plans}) == 1
            assert sorted(np.concatenate([p.order for p in plans]).tolist()) == list(range(n))
            assert all(p.batch_sizes.max() <= 7 and p.batch_sizes.min() >= 1 for p in plans)


def test_unshuffled_loader_keeps_file_order(dataset):
    loader = make_loader(dataset, batch_size=6, shuffle=False, num_workers=0)
    assert [i for b in _ids(loader) for i in b] == _expected_ids()


def test_impossible_sharding_fails_early(dataset):
    with pytest.raises(ValueError, match="leaves no full batch"):
        make_loader(dataset, batch_size=64, shuffle=True, world_size=2, drop_last=True)
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        make_loader(dataset, batch_size=4, shuffle=True, rank=2, world_size=2)


def test_in_memory_dataset_streams_the_same(dataset):
    held = FieldDataset(dataset.path, dataset.spec, in_memory=True)
    a, b = (make_loader(d, batch_size=5, shuffle=True, num_workers=0) for d in (dataset, held))
    assert _ids(a) == _ids(b)


def test_prefetcher_passes_through_on_cpu():
    batches = [(torch.ones(2, 1, 3, 3) * i, torch.zeros(2, 1, 3, 3)) for i in range(3)]
    out = list(DevicePrefetcher(batches, "cpu"))
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(out, batches))
