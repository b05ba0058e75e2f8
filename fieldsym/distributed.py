"""Data-parallel training on ``torch.distributed``: one process per device, gradients averaged by DDP.

``torchrun --nproc-per-node N -m fieldsym train CONFIG`` starts N copies of the ordinary training
command; :func:`setup` turns torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) into a process group and a :class:`Distributed` handle that the
training loop asks for everything rank-dependent. Without those variables the handle is the single
process and every method is a no-op, so the loop has one code path.

Why it is built this way:

- **NCCL on GPUs, gloo on CPU.** neuralop's Trainer only knows the NCCL path (DESIGN.md section 5); a
  CPU run needs gloo and its own process-group set-up, done here. On CUDA, ``LOCAL_RANK`` picks the
  device.
- **Every forward goes through the wrapper.** The symmetry penalties call the model again (``fd1``: one
  more forward on perturbed inputs; ``jvp``: a forward-mode pass). Called on ``ddp.module`` those
  passes would add gradients that DDP never averages, so ranks would drift apart silently. Through the
  wrapper, each parameter's gradient is accumulated over every use before its single autograd hook
  fires, so one backward over ``data loss + penalty`` gives one all-reduce per bucket. This needs
  ``find_unused_parameters=False`` and ``static_graph=False``: both alternatives route outputs through
  an ``autograd.Function`` that ``torch.func.jvp`` refuses. DDP rebuilds its buckets in the first
  forward after the first backward and that rebuild fails inside ``jvp``; the training loop's plain
  data forward comes first in every step, so the rebuild happens there.
- **Buffers are not re-broadcast at every forward.** fieldsym models hold only constant buffers
  (group tables, grids); they are synchronised once when the model is wrapped.
- **Each rank reads its own shard** (:func:`fieldsym.data.loader.make_loader` with ``rank`` and
  ``world_size``), with the same number of batches on every rank: a rank with one batch more would wait
  forever in the gradient all-reduce. ``batch_size`` is per rank; the global batch is ``batch_size *
  world_size``.
- **Metrics are all-reduced; rank 0 alone writes** the CSV, TensorBoard, checkpoints and the progress
  bar, and the others wait for it at a barrier. Rank 0 alone reads a checkpoint and broadcasts it, so
  resuming needs the run folder on rank 0's machine only.
- **Resume with any number of ranks.** The checkpoint holds the unwrapped model's weights and the
  global epoch and step. The loader's order is a function of ``(seed, epoch, rank, world_size)``, and
  with more than one rank the global RNGs (augmentation draws) are re-seeded at the start of every
  epoch from ``(seed, rank, epoch)`` (:meth:`Distributed.epoch_seed`) instead of restored from the
  checkpoint, which holds rank 0's state only: the draws do not depend on whether or where a run was
  interrupted. A single process keeps the exact RNG restore.
- **A dead rank ends the job within a bounded time.** The process group's timeout is
  ``FIELDSYM_DIST_TIMEOUT`` seconds (default 60 with gloo, 600 with NCCL); a peer that closed its
  connection is noticed at the next collective, a stalled one after the timeout. The survivors raise
  :class:`PeerFailure`, and torchrun stops the remaining workers when one fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "FIELDSYM_DIST_TIMEOUT"
DEFAULT_TIMEOUT = {"gloo": 60.0, "nccl": 600.0}
# Waiting for rank 0 to generate a dataset file can take far longer than one collective may.
MAIN_FIRST_TIMEOUT = 3600.0
# What gloo and NCCL put in the RuntimeError of a collective whose peer is gone or late.
_PEER_MARKERS = ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe", "Timed out", "timed out")


class PeerFailure(RuntimeError):
    """A collective failed because another rank died or stalled; the message says where and what to do."""


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in the job: rank ``rank`` of ``world_size``, and the collectives it needs.

    ``backend`` is ``None`` for a single process. ``timeout``: seconds a collective may wait for a peer.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout: float | None = None

    @property
    def active(self) -> bool:
        """More than one process: gradients, metrics and decisions are shared."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that writes files and logs."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (module docstring), or ``model`` itself for one process.

        Call the returned module for every forward that enters the loss, penalties included.
        """
        if not self.active:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.local_rank] if on_cuda else None,
                                       find_unused_parameters=False, static_graph=False, **_no_buffer_sync())

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of ``values`` over the ranks (float64); every rank passes the same length."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Means over the ranks of named values; every rank passes the same names in the same order."""
        return dict(zip(values, (v / self.world_size for v in self.sum(list(values.values())))))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run on rank 0 only, its (picklable) result handed to every rank."""
        if not self.active:
            return compute()
        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block, then the others do (e.g. generating a dataset file, then opening it).

        The others wait up to :data:`MAIN_FIRST_TIMEOUT` seconds, on a gloo group of their own: the
        process group's timeout is sized for one collective, not for running a PDE solver.
        """
        if not self.active:
            yield
            return
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=MAIN_FIRST_TIMEOUT))
        if not self.is_main:
            dist.barrier(group)
        yield
        if self.is_main:
            dist.barrier(group)
        dist.destroy_process_group(group)

    def epoch_seed(self, seed: int, epoch: int) -> int:
        """The seed of rank ``rank``'s global RNGs in ``epoch``: a function of ``(seed, rank, epoch)`` only,
        so a resumed run draws what an uninterrupted one would (module docstring)."""
        return int(np.random.SeedSequence([seed % 2**32, self.rank, epoch]).generate_state(1)[0])

    def is_peer_failure(self, error: BaseException) -> bool:
        """Whether ``error`` is a collective that failed because a peer died or stalled."""
        if not self.active:
            return False
        return isinstance(error, dist.DistError) or (
            isinstance(error, RuntimeError) and any(m in str(error) for m in _PEER_MARKERS))

    def peer_failure(self, error: BaseException, epoch: int, kept: str) -> PeerFailure:
        """The :class:`PeerFailure` for ``error`` met in 0-based ``epoch``; ``kept``: what the run's folder holds."""
        lines = str(error).strip().splitlines()
        return PeerFailure(
            f"rank {self.rank} of {self.world_size} lost contact with another rank in epoch {epoch + 1} "
            f"({type(error).__name__}: {lines[0] if lines else ''}). Another rank died (its log names the "
            f"cause) or stalled for longer than the process-group timeout ({self.timeout:g} s; set "
            f"{TIMEOUT_ENV} to change it). {kept}; fix the cause and continue with --resume, with any "
            "number of ranks")

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def _no_buffer_sync() -> dict[str, bool]:
    # torch 2.13 renamed the switch; the old name still works there but warns.
    parameters = inspect.signature(DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


def setup(device: str = "auto") -> Distributed:
    """This process's :class:`Distributed` handle; joins the process group torchrun describes if needed.

    ``device``: ``training.device`` (``auto``, ``cpu`` or ``cuda``); NCCL is used when it is not ``cpu`` and
    CUDA is available, gloo otherwise. With ``WORLD_SIZE`` unset or 1 this is the single process. A process group that is
    already initialised (by the caller) is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Distributed()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    # A CUDA request on a machine without CUDA is reported by the training set-up, on every rank.
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                               "devices; start at most that many processes per node (--nproc-per-node)")
        torch.cuda.set_device(local_rank)
    timeout = _timeout(backend)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    logger.info("rank %d of %d (local rank %d): process group on %s, timeout %g s", rank, world_size, local_rank,
                backend, timeout)
    return Distributed(rank, world_size, local_rank, backend, timeout)


def current() -> Distributed:
    """The handle of the process group already initialised (by :func:`setup` or the caller), or the single
    process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Distributed()
    backend = str(dist.get_backend())
    return Distributed(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), backend,
                       _timeout(backend))


def teardown() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _timeout(backend: str) -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT.get(backend, DEFAULT_TIMEOUT["gloo"])
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds, e.g. {TIMEOUT_ENV}=120")
    return value


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r}: expected an integer (torchrun sets it); "
                         "unset it to train in one process") from None
