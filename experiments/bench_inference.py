"""Inference latency of one FieldFNO through each runtime an export targets.

Setting: vector -> vector on a 64x64 periodic grid, width 32, 4 layers, n_modes 12 (|k| <= 6), random
weights, normalisation wrapped around it as in every export (so all columns compute the same map).
Runtimes:

- ``eager``: the fieldsym operator as trained (complex truncated-DFT spectral convolutions);
- ``baked``: the plain module an export holds (real arithmetic, dense kernels), run eagerly, to
  separate the rewrite's cost from the runtime's;
- ``compile``: ``torch.compile`` of the eager operator (inductor, default mode);
- ``pt2``: the ``torch.export`` program saved and loaded back, as ``fieldsym export --format pt2`` writes it;
- ``onnxruntime``: the ONNX file of ``fieldsym export --format onnx`` in an onnxruntime CPU session with
  as many intra-op threads as torch uses.

Each call is one forward under ``torch.no_grad``; the runtimes alternate call by call so that drifts in
machine load hit all alike. Prints, per batch size, the median wall-clock latency per call (ms), the
median CPU time of the process per call (ms; with one thread, the latency on an otherwise idle core),
and each runtime's relative difference from ``eager``.

    python experiments/bench_inference.py [--batches 1 32] [--calls 20] [--warmup 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fieldsym.data.normalization import FieldNormalizer
from fieldsym.export.bake import PhysicalOperator, bake
from fieldsym.export.formats import INPUT_NAME, OUTPUT_NAME, dynamic_shapes, write_onnx, write_pt2
from fieldsym.models import FieldFNO

FIELD, GRID, WIDTH, LAYERS, MODES = "v:vector", 64, 32, 4, 12


def runtimes(directory: Path) -> dict[str, object]:
    torch.manual_seed(0)
    model = FieldFNO(FIELD, FIELD, n_modes=(MODES, MODES), hidden_channels=WIDTH, n_layers=LAYERS).eval()
    norm = FieldNormalizer.identity(FIELD)
    eager = PhysicalOperator(model, norm, norm).eval()
    baked = PhysicalOperator(bake(model, (GRID, GRID)), norm, norm).eval()
    example = torch.randn(2, 2, GRID, GRID)
    write_pt2(baked, example, dynamic_shapes(True, None), directory / "model.pt2")
    write_onnx(baked, example, dynamic_shapes(True, None), directory / "model.onnx")

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as torch's runtimes
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return {
        "eager": eager,
        "baked": baked,
        "compile": torch.compile(eager),
        "pt2": torch.export.load(directory / "model.pt2").module(),
        "onnxruntime": lambda u: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: u.numpy()})[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ops = runtimes(Path(tmp))
        print(f"FieldFNO {FIELD} -> {FIELD}, {GRID}x{GRID}, width {WIDTH}, {LAYERS} layers, n_modes {MODES}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{'batch':>5} {'':>4} " + " ".join(f"{name:>12}" for name in ops))
        for batch in args.batches:
            u = torch.randn(batch, 2, GRID, GRID)
            reference = ops["eager"](u)
            difference = {name: float((op(u) - reference).norm() / reference.norm()) for name, op in ops.items()}
            for _ in range(args.warmup):
                for op in ops.values():
                    op(u)
            wall: dict[str, list[float]] = {name: [] for name in ops}
            cpu: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(args.calls):
                for name, op in ops.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    op(u)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            for clock, times in (("wall", wall), ("cpu", cpu)):
                print(f"{batch:>5} {clock:>4} " + " ".join(f"{1e3 * statistics.median(t):>12.2f}" for t in times.values()))
            print(f"{batch:>5} diff " + " ".join(f"{difference[name]:>12.1e}" for name in ops))


if __name__ == "__main__":
    main()
