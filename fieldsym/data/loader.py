"""Streaming loader: block reads, block-level shuffling, sharding over ranks and workers, device prefetch.

Why it is built this way:

- **Reads in blocks.** One ``var[start:stop]`` read of ``block_size`` consecutive items costs far less
  than ``block_size`` one-sample reads, so the epoch order shuffles *blocks* (a new block order each
  epoch, :meth:`FieldLoader.set_epoch`) and then items inside a small buffer of a few blocks.
- **Every item exactly once per epoch, the same number of batches on every rank.** The epoch order is
  a pure function of ``(seed, epoch)``, so every rank and worker computes the same one without talking.
  Rank ``r`` takes a contiguous share of it; a rank's share is cut into ``K`` batches with
  ``K = ceil(N / (world_size * batch_size))`` on every rank, sizes differing by at most one (each at most
  ``batch_size``): uneven datasets never leave one rank with an extra batch, which would hang DDP.
  ``drop_last=True`` instead gives every rank ``N // (world_size * batch_size)`` full batches and
  skips the remainder (a different remainder each epoch when shuffling).
- **Workers own whole tasks.** A task is a run of consecutive batches (about ``shuffle_buffer`` items);
  task ``t`` goes to worker ``t % num_workers``, which reads its blocks and writes every item straight
  into its shuffled row of one of the task's batch tensors (allocated in shared memory, so handing them
  to the main process copies nothing). No block is read twice, each item is copied once after its read,
  and batches arrive through a standard ``torch.utils.data.DataLoader`` over an ``IterableDataset``
  (``batch_size=None``) whose workers persist across epochs.
- **Device prefetch.** On CUDA, :class:`DevicePrefetcher` copies the next batch from pinned memory with
  ``non_blocking=True`` on a side stream while the current batch trains; on CPU it passes batches through.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .dataset import FieldDataset

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Which items rank ``rank`` reads this epoch, and how they are cut into batches and tasks.

    ``order``: the rank's items, ``(n_rank,)``, in epoch order. ``batch_sizes``: ``(K,)``, summing to
    ``n_rank``. ``tasks``: ``(first batch, end batch)`` pairs; a task is read and shuffled as a unit.
    """

    order: np.ndarray
    batch_sizes: np.ndarray
    tasks: tuple[tuple[int, int], ...]


def plan_epoch(
    num_items: int,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
    block_size: int = 32,
    shuffle_buffer: int = 256,
    seed: int = 0,
    epoch: int = 0,
) -> EpochPlan:
    """The epoch plan of one rank (module docstring); identical on every process for the same arguments."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size})")
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1; got {batch_size}, {block_size}")
    order = _global_order(num_items, block_size, shuffle, seed, epoch)
    start, sizes = _rank_share(num_items, batch_size, rank, world_size, drop_last)
    per_task = max(1, shuffle_buffer // batch_size)
    tasks = tuple((b, min(b + per_task, len(sizes))) for b in range(0, len(sizes), per_task))
    return EpochPlan(order[start:start + int(sizes.sum())], sizes, tasks)


def _global_order(n: int, block_size: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Items in block order: blocks of ``block_size`` consecutive items, the blocks permuted."""
    if not shuffle:
        return np.arange(n)
    blocks = np.random.default_rng([seed, epoch]).permutation(math.ceil(n / block_size))
    return np.concatenate([np.arange(b * block_size, min((b + 1) * block_size, n)) for b in blocks])


def _rank_share(n: int, batch_size: int, rank: int, world_size: int, drop_last: bool
                ) -> tuple[int, np.ndarray]:
    """First position of the rank's share in the epoch order, and its batch sizes."""
    if drop_last:
        per_rank = n // (world_size * batch_size)
        if per_rank == 0:
            raise ValueError(f"drop_last with {n} items, batch_size={batch_size} and world_size="
                             f"{world_size} leaves no full batch; lower the batch size")
        return rank * per_rank * batch_size, np.full(per_rank, batch_size)
    share = n // world_size + (rank < n % world_size)
    start = rank * (n // world_size) + min(rank, n % world_size)
    batches = math.ceil(n / (world_size * batch_size))
    if n // world_size < batches:
        raise ValueError(f"{n} items cannot give {world_size} ranks {batches} non-empty batches each; "
                         "use drop_last=True or a larger batch_size")
    return start, share // batches + (np.arange(batches) < share % batches)


class _EpochStream(IterableDataset):
    """Yields the batches of one rank's epoch; inside a DataLoader worker, only that worker's tasks.

    The epoch lives in a one-element shared-memory tensor, so persistent workers see
    :meth:`FieldLoader.set_epoch` without being restarted.
    """

    def __init__(self, dataset: FieldDataset, options: dict) -> None:
        self.dataset = dataset
        self.options = options
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def plan(self) -> EpochPlan:
        return plan_epoch(len(self.dataset), epoch=int(self.epoch), **self.options)

    def __iter__(self) -> Iterator[Batch]:
        plan = self.plan()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for t in range(worker, len(plan.tasks), workers):
            yield from self._task(plan, t)

    def _task(self, plan: EpochPlan, t: int) -> Iterator[Batch]:
        first, end = plan.tasks[t]
        bounds = np.concatenate([[0], np.cumsum(plan.batch_sizes)])
        items = plan.order[bounds[first]:bounds[end]]
        # One tensor per batch (not one per task: smaller allocations are reused by the allocator
        # instead of being page-faulted in afresh); in a worker, in shared memory.
        H, W = self.dataset.grid.shape
        shared = get_worker_info() is not None
        batches = [(_empty((int(n), self.dataset.in_type.num_channels, H, W), shared),
                    _empty((int(n), self.dataset.out_type.num_channels, H, W), shared))
                   for n in plan.batch_sizes[first:end]]
        x_rows = [row for x, _ in batches for row in x.unbind(0)]
        y_rows = [row for _, y in batches for row in y.unbind(0)]
        # Item k of the task lands in row destination[k]: shuffling is done by where we write.
        o = self.options
        destination = (np.random.default_rng([o["seed"], int(self.epoch), o["rank"], t]).permutation(len(items))
                       if o["shuffle"] else np.arange(len(items)))
        for lo, hi in _runs(items):
            self.dataset.read_into(int(items[lo]), int(items[hi - 1]) + 1,
                                   [x_rows[k] for k in destination[lo:hi]],
                                   [y_rows[k] for k in destination[lo:hi]])
        yield from batches


def _empty(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    """An uninitialised float32 tensor; in a worker, allocated in shared memory so that handing its
    batches to the main process copies nothing (the same allocation ``default_collate`` makes)."""
    if not shared:
        return torch.empty(shape)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0).set_(storage, 0, shape)


def _runs(items: np.ndarray) -> list[tuple[int, int]]:
    """``(lo, hi)`` position ranges where ``items`` are consecutive integers."""
    breaks = np.flatnonzero(np.diff(items) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(items)]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class FieldLoader:
    """Batches ``(x (B, C_in, H, W), y (B, C_out, H, W))`` of a :class:`FieldDataset`, on ``device``.

    Build it with :func:`make_loader`. Call :meth:`set_epoch` before each epoch to reshuffle.
    """

    def __init__(self, dataset: FieldDataset, batch_size: int, shuffle: bool, *, rank: int,
                 world_size: int, num_workers: int, device: torch.device, drop_last: bool,
                 block_size: int, shuffle_buffer: int, seed: int, pin_memory: bool) -> None:
        self.dataset = dataset
        self.device = device
        self._stream = _EpochStream(dataset, dict(
            batch_size=batch_size, rank=rank, world_size=world_size, shuffle=shuffle, drop_last=drop_last,
            block_size=block_size, shuffle_buffer=shuffle_buffer, seed=seed))
        plan = self.plan()  # fail now, not at the first epoch, on impossible sharding
        self._num_workers = min(num_workers, len(plan.tasks))
        self._pin_memory = pin_memory
        self._loader: DataLoader | None = None
        logger.debug("loader rank %d/%d: %d items, %d batches per epoch, %d workers", rank, world_size,
                     len(plan.order), len(plan.batch_sizes), self._num_workers)

    @property
    def epoch(self) -> int:
        return int(self._stream.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the block order and buffer shuffles of ``epoch`` (the same on every rank)."""
        self._stream.epoch.fill_(epoch)

    def plan(self) -> EpochPlan:
        """This rank's plan for the current epoch."""
        return self._stream.plan()

    def __len__(self) -> int:
        """Batches per epoch; the same on every rank."""
        return len(self.plan().batch_sizes)

    def __iter__(self) -> Iterator[Batch]:
        if self._loader is None:
            if self._num_workers:
                self.dataset.close()  # each worker opens its own handle; never share one across a fork
            # Persistent workers: started once, not once per epoch.
            self._loader = DataLoader(self._stream, batch_size=None, num_workers=self._num_workers,
                                      pin_memory=self._pin_memory, persistent_workers=self._num_workers > 0,
                                      prefetch_factor=2 if self._num_workers else None)
        return iter(DevicePrefetcher(self._loader, self.device))


def make_loader(
    dataset: FieldDataset,
    batch_size: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    *,
    drop_last: bool = False,
    block_size: int = 32,
    shuffle_buffer: int = 256,
    seed: int = 0,
    pin_memory: bool | None = None,
) -> FieldLoader:
    """A :class:`FieldLoader` over ``dataset`` for rank ``rank`` of ``world_size``.

    ``block_size``: consecutive items per read. ``shuffle_buffer``: items shuffled together (rounded
    to whole batches). ``pin_memory``: default on for a CUDA ``device``.
    """
    device = torch.device(device)
    pin = device.type == "cuda" if pin_memory is None else pin_memory
    return FieldLoader(dataset, batch_size, shuffle, rank=rank, world_size=world_size,
                       num_workers=num_workers, device=device, drop_last=drop_last, block_size=block_size,
                       shuffle_buffer=shuffle_buffer, seed=seed, pin_memory=pin)


class DevicePrefetcher:
    """Iterate ``batches`` on ``device``; on CUDA the next batch is copied while the current one is used.

    The copy runs on a side ``torch.cuda.Stream`` with ``non_blocking=True`` (asynchronous from pinned
    memory); before a batch is handed out the compute stream waits for its copy, and
    ``record_stream`` keeps the caching allocator from reusing its memory while compute still reads it.
    On other devices the batches are moved with a plain ``.to(device)`` (a no-op on CPU).
    """

    def __init__(self, batches: Iterable[Batch], device: str | torch.device) -> None:
        self.batches = batches
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[Batch]:
        if self.device.type != "cuda":
            for x, y in self.batches:
                yield x.to(self.device), y.to(self.device)
            return
        stream = torch.cuda.Stream(self.device)
        it = iter(self.batches)
        pending = self._copy(it, stream)
        while pending is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for t in pending:
                t.record_stream(current)
            batch, pending = pending, self._copy(it, stream)
            yield batch

    def _copy(self, it: Iterator[Batch], stream: torch.cuda.Stream) -> Batch | None:
        batch = next(it, None)
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            return tuple(t.to(self.device, non_blocking=True) for t in batch)  # type: ignore[return-value]
