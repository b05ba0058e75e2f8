"""Benchmark the streaming loader against raw netCDF4 reads and in-memory tensors.

Writes a schema-1 file of ``--samples`` samples (a vector and a scalar field on a ``--size``^2 grid,
two times, float32) into a temporary folder, then prints, side by side:

- samples/s of raw ``netCDF4`` reads of the same bytes: one sample per read (shuffled order) and blocks
  of ``--block`` samples per read;
- samples/s of the fieldsym loader (``make_loader``, shuffled, 0 and 2 workers) over the file, and over
  the same dataset held in memory;
- samples/s of indexing an in-memory tensor with shuffled batches;
- the wall time of one training epoch of a small neuraloperator FNO fed by the streaming loader,
  divided by the same epoch fed from in-memory tensors (``--fno-samples`` samples, its own file).

A sample is one ``(x, y)`` pair: both fields at time 0 (input) and time 1 (output). Every figure is the
best of ``--repeats`` passes after a warm-up pass, so all of them read from a warm page cache; the
machine may be shared, which is why the best pass is reported. Everything runs with one torch thread.

    .venv/bin/python experiments/bench_loader.py            # the defaults reported in README.md
    .venv/bin/python experiments/bench_loader.py --samples 256 --size 64 --fno-samples 64   # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import torch

from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset

SPEC = DataSpec(["velocity", "density"], ["velocity", "density"], TimeSelection(t_in=0, t_out=1))


def write_file(path: Path, samples: int, size: int, seed: int = 0) -> Path:
    """``velocity`` (vector) and ``density`` (scalar), ``(samples, 2 times, [2,] size, size)`` float32."""
    rng = np.random.default_rng(seed)
    fields = {
        "velocity": FieldSpec(rng.standard_normal((samples, 2, 2, size, size), dtype=np.float32), "vector",
                              "m/s", "velocity"),
        "density": FieldSpec(rng.standard_normal((samples, 2, size, size), dtype=np.float32), "scalar",
                             "kg/m^3", "density"),
    }
    axis = np.arange(size) / size
    return write_dataset(path, fields, x=axis, y=axis, time=np.array([0.0, 1.0]), periodic=True, pde="bench",
                         parameters={}, seed=seed, title="loader benchmark", source="experiments/bench_loader.py")


def best_rate(count: int, run, repeats: int) -> float:
    """Items per second of ``run()`` (which handles ``count`` items): best of ``repeats`` after a warm-up."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return count / best


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def raw_single(path: Path, order: np.ndarray):
    def run():
        with netCDF4.Dataset(path) as nc:
            variables = [nc.variables[name] for name in ("velocity", "density")]
            for v in variables:
                v.set_auto_mask(False)
            for s in order:
                for v in variables:
                    v[s]
    return run


def raw_blocks(path: Path, samples: int, block: int):
    def run():
        with netCDF4.Dataset(path) as nc:
            variables = [nc.variables[name] for name in ("velocity", "density")]
            for v in variables:
                v.set_auto_mask(False)
            for start in range(0, samples, block):
                for v in variables:
                    v[start:start + block]
    return run


def loader_epoch(loader):
    def run():
        loader.set_epoch(loader.epoch + 1)
        for _ in loader:
            pass
    return run


def next_epoch(loader):
    """A feed that advances ``loader`` to its next epoch and returns it."""
    def feed():
        loader.set_epoch(loader.epoch + 1)
        return loader
    return feed


def memory_batches(x_all: torch.Tensor, y_all: torch.Tensor, batch: int):
    """Shuffled batches gathered from in-memory tensors (what an in-memory training loop does)."""
    order = torch.randperm(len(x_all))
    for start in range(0, len(order), batch):
        index = order[start:start + batch]
        yield x_all[index], y_all[index]


def memory_epoch(x_all: torch.Tensor, y_all: torch.Tensor, batch: int):
    def run():
        for _ in memory_batches(x_all, y_all, batch):
            pass
    return run


def training_epoch(batches, step) -> tuple[float, float]:
    """``(wall seconds, seconds spent waiting for the next batch)`` of one epoch of ``step``."""
    start = time.perf_counter()
    waiting = 0.0
    it = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(it, None)
        waiting += time.perf_counter() - asked
        if batch is None:
            return time.perf_counter() - start, waiting
        step(*batch)


def fno_step(channels: int, width: int, layers: int, device: str):
    from neuralop.models import FNO

    torch.manual_seed(0)
    model = FNO(n_modes=(12, 12), in_channels=channels, out_channels=channels, hidden_channels=width,
                n_layers=layers).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimiser.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        optimiser.step()
        if device != "cpu":
            torch.cuda.synchronize()  # a step ends when the GPU is done, so waiting is not hidden in it
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=32, help="samples per read (raw blocks and the loader)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fno-samples", type=int, default=128)
    parser.add_argument("--fno-batch", type=int, default=16)
    parser.add_argument("--fno-width", type=int, default=8)
    parser.add_argument("--fno-layers", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="where the FNO epoch trains; with cuda the loaders pin memory and prefetch on a "
                             "side stream, and a GPU-resident in-memory feed is the ceiling")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to time")
    args = parser.parse_args()
    # One torch thread: reading and copying are single-threaded work, and on a busy shared machine
    # multi-threaded kernels stall on descheduled threads, which would swamp what is measured here.
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        path = write_file(Path(folder) / "bench.nc", args.samples, args.size)
        mib = path.stat().st_size / 2**20
        order = np.random.default_rng(0).permutation(args.samples)
        streamed = FieldDataset(path, SPEC, in_memory=False)
        held = FieldDataset(path, SPEC, in_memory=True, check_finite=False)
        x_all, y_all = held.read(0, len(held))
        rows = [
            ("raw netCDF4, one sample per read", best_rate(args.samples, raw_single(path, order), args.repeats)),
            (f"raw netCDF4, {args.block} samples per read",
             best_rate(args.samples, raw_blocks(path, args.samples, args.block), args.repeats)),
        ]
        for workers in args.workers:
            loader = make_loader(streamed, args.batch, shuffle=True, num_workers=workers, block_size=args.block)
            rows.append((f"fieldsym loader, streamed, {workers} workers",
                         best_rate(args.samples, loader_epoch(loader), args.repeats)))
        loader = make_loader(held, args.batch, shuffle=True, block_size=args.block)
        rows.append(("fieldsym loader, in-memory dataset, 0 workers",
                     best_rate(args.samples, loader_epoch(loader), args.repeats)))
        rows.append(("in-memory tensor, shuffled batches",
                     best_rate(args.samples, memory_epoch(x_all, y_all, args.batch), args.repeats)))

        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"file: {args.samples} samples, {args.size}x{args.size}, velocity:vector + density:scalar, "
              f"2 times, float32, {mib:.0f} MiB; batch {args.batch}, block {args.block}")
        print(f"{'reader':48s} {'samples/s':>10s} {'x raw 1/read':>13s}")
        for name, rate in rows:
            print(f"{name:48s} {rate:10.0f} {rate / rows[0][1]:13.2f}")

        fno_path = write_file(Path(folder) / "fno.nc", args.fno_samples, args.size, seed=1)
        fno_data = FieldDataset(fno_path, SPEC, in_memory=False)
        fno_x, fno_y = FieldDataset(fno_path, SPEC, in_memory=True, check_finite=False).read(0, len(fno_data))
        step = fno_step(fno_data.in_type.num_channels, args.fno_width, args.fno_layers, args.device)
        feeds = {"memory": lambda: memory_batches(fno_x, fno_y, args.fno_batch)}
        if args.device != "cpu":
            gpu_x, gpu_y = fno_x.to(args.device), fno_y.to(args.device)
            feeds["memory, on the GPU"] = lambda: memory_batches(gpu_x, gpu_y, args.fno_batch)
        for w in args.workers:
            loader = make_loader(fno_data, args.fno_batch, shuffle=True, num_workers=w, block_size=args.block,
                                 device=args.device)
            feeds[f"streamed, {w} workers"] = next_epoch(loader)
        training_epoch(feeds["memory"](), step)  # warm-up: the first FNO steps allocate
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in feeds}
        for _ in range(args.repeats):  # interleaved, so a busy neighbour hurts every variant alike
            for name, feed in feeds.items():
                runs[name].append(training_epoch(feed(), step))
        base, base_wait = min(runs["memory"])
        print(f"\nFNO (hidden {args.fno_width}, {args.fno_layers} layers, modes 12) training epoch on "
              f"{args.device}, {args.fno_samples} samples, batch "
              f"{args.fno_batch}, best of {args.repeats}. waiting: time blocked on the next batch; "
              "x memory (waiting): (memory epoch + extra waiting) / memory epoch, which a busy machine "
              "disturbs far less than the wall-time ratio:")
        for name, results in runs.items():
            wall, waiting = min(results)
            print(f"  {name:24s} {wall:7.2f} s   x memory {wall / base:.3f}   waiting {waiting:6.3f} s   "
                  f"x memory (waiting) {(base + waiting - base_wait) / base:.3f}")


if __name__ == "__main__":
    main()
