"""Training throughput of one process against two data-parallel processes (gloo, CPU), side by side.

    .venv/bin/python experiments/bench_distributed.py [--size 64] [--batch 8] [--samples 128] [--epochs 3]
                                                       [--rounds 2]

Setting: a FieldFNO (width 32, 4 layers, 12 modes) on 64x64 scalar fields, trained by
:func:`fieldsym.train.fit` with the sharded loader, unconstrained and with a Lie penalty (``fd1``, Tx
and Ty, sub-batch 4, so every step makes a second forward through the DDP wrapper). Each process uses
**one thread** (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``): on a 2-core machine the fair
comparison is 2 processes x 1 thread against 1 process x 1 thread. ``--batch`` is per process, so the
global batch is ``batch * processes`` (weak scaling, as with ``torchrun``).

Throughput counts training samples over the time the training loader is iterated (data, forward,
backward, gradient all-reduce, optimiser step), excluding validation and checkpoints, in every epoch
after the first (warm-up): over wall time, and over CPU time (of the busier process, all its threads),
which is what the processes would reach with a core each and no waiting, whatever else the machine
runs. 1 and 2 processes alternate for ``--rounds`` rounds and the median over
every timed epoch is reported, because this machine is shared and its load drifts (the 1-minute load
average is printed with the table). Scaling efficiency = ``samples/s(2 processes) / (2 * samples/s(1
process))``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from fieldsym import distributed
from fieldsym.config import TrainingConfig
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.normalization import fit_normalizers
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset
from fieldsym.groups import algebra
from fieldsym.models import FieldFNO
from fieldsym.penalties import LiePenalty
from fieldsym.train import fit

VARIANTS = ("unconstrained", "penalized fd1 Tx,Ty")


class TimedLoader:
    """Passes batches through and records, per epoch, the wall and CPU seconds (this process, all its
    threads) from the first request to exhaustion, and the samples."""

    def __init__(self, loader) -> None:
        self.loader, self.epochs = loader, []

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        wall, cpu, samples = time.perf_counter(), time.process_time(), 0
        for x, y in self.loader:
            samples += x.shape[0]
            yield x, y
        self.epochs.append((time.perf_counter() - wall, time.process_time() - cpu, samples))


def write_data(path: Path, samples: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    k = np.fft.fftfreq(size, 1 / size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    u0 = np.fft.ifft2(np.fft.fft2(rng.standard_normal((samples, size, size))) * np.exp(-k2 / 32)).real
    u1 = np.fft.ifft2(np.fft.fft2(u0) * np.exp(-k2 / 64)).real
    u = np.stack([u0, u1], axis=1).astype(np.float32)
    x = np.arange(size) / size
    return write_dataset(path, {"u": FieldSpec(u, "scalar", "1", "u")}, x=x, y=x, time=np.arange(2.0),
                         periodic=True, pde="low-pass filter", parameters={}, seed=0, title="benchmark data",
                         source="experiments/bench_distributed.py")


def worker(rank: int, world: int, port: int, data: str, variant: str, batch: int, epochs: int, out: str,
           round_: int) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    ddp = distributed.setup("cpu")
    try:
        spec = DataSpec(("u",), ("u",), TimeSelection("one_step", 0, 1))
        dataset = FieldDataset(data, spec)
        in_type, out_type, grid = dataset.in_type, dataset.out_type, dataset.grid
        torch.manual_seed(0)
        model = FieldFNO(in_type, out_type, n_modes=(12, 12), hidden_channels=32, n_layers=4)
        penalty = (LiePenalty(algebra(["Tx", "Ty"], in_type), in_type, out_type, grid, gamma=0.1, method="fd1",
                              sub_batch=4) if variant != "unconstrained" else None)
        loader = TimedLoader(make_loader(dataset, batch, True, ddp.rank, ddp.world_size, seed=0))
        fit(model, loader, [dataset.read(0, batch)], Path(out) / f"{variant}-{world}-{round_}",
            training=TrainingConfig(epochs=epochs, batch_size=batch, device="cpu"),
            normalizers=fit_normalizers(dataset), penalty=penalty)
        # Every rank's steps wait for the all-reduce, so rank 0's wall time is the job's. CPU time: the
        # busier rank's, i.e. the rate if every process had a core of its own and never waited.
        wall = [world * samples / seconds for seconds, _, samples in loader.epochs[1:]]
        cpu = torch.tensor([seconds for _, seconds, _ in loader.epochs[1:]], dtype=torch.float64)
        if ddp.active:
            torch.distributed.all_reduce(cpu, op=torch.distributed.ReduceOp.MAX)
        cpu_rates = [world * samples / float(s) for (_, _, samples), s in zip(loader.epochs[1:], cpu)]
        if ddp.is_main:
            torch.save((wall, cpu_rates), Path(out) / f"rates-{variant}-{world}.pt")
    finally:
        distributed.teardown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="samples per batch and process")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data.nc", args.samples, args.size)
        rates = {(v, w, clock): [] for v in VARIANTS for w in (1, 2) for clock in ("wall", "cpu")}
        loads = []
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                for world in (1, 2):
                    job = (world, free_port(), str(data), variant, args.batch, args.epochs, tmp, round_)
                    mp.spawn(worker, args=job, nprocs=world, join=True)
                    wall, cpu = torch.load(Path(tmp) / f"rates-{variant}-{world}.pt")
                    rates[variant, world, "wall"] += wall
                    rates[variant, world, "cpu"] += cpu
                    loads.append(os.getloadavg()[0])
    rates = {key: statistics.median(values) for key, values in rates.items()}
    load = statistics.median(loads)
    print(f"cores={os.cpu_count()} threads per process=1 grid={args.size} batch per process={args.batch} "
          f"samples={args.samples} timed epochs={args.rounds * (args.epochs - 1)} per cell backend=gloo "
          f"load average (1 min, median)={load:.1f}")
    print(f"{'variant':22s} {'clock':5s} {'1 proc samples/s':>17s} {'2 procs samples/s':>18s} {'speed-up':>9s} "
          f"{'efficiency':>11s}")
    for variant in VARIANTS:
        for clock in ("wall", "cpu"):
            one, two = rates[variant, 1, clock], rates[variant, 2, clock]
            print(f"{variant:22s} {clock:5s} {one:17.1f} {two:18.1f} {two / one:9.2f} {two / (2 * one):11.0%}")


if __name__ == "__main__":
    main()
