"""Training-step cost of the symmetry penalties, measured side by side (issue 4 target: promoted
<= 1.5x the unconstrained step, with the penalty's Lie derivative within 1% of the full-batch jvp
value in expectation).

    .venv/bin/python experiments/bench_symmetry_step.py [--size 64] [--batch 16] [--repeats 5]

Setting: 64x64 vector fields in and out, FieldFNO width 32, 4 layers, batch 16, candidate algebra
Tx, Ty, R, S. Every variant is timed in the same process, round-robin (one step of each per round),
and the median over rounds is reported, because this machine is noisy. Accuracy: over the disjoint
sub-batches that cover the batch, the mean of the sub-batch Gram matrix ``M^T M`` against the
full-batch jvp Gram (relative Frobenius difference), i.e. the bias of the estimate in expectation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from neuralop.losses import LpLoss

from fieldsym.grid import Grid
from fieldsym.groups import algebra
from fieldsym.lie import lie_derivative
from fieldsym.models import FieldFNO
from fieldsym.penalties import LiePenalty, NuclearPenalty
from fieldsym.testing import smooth_random_field

VEC = "v:vector"


def make_step(model, loss_fn, opt, penalty=None):
    def step(x, y):
        opt.zero_grad(set_to_none=True)
        pred = model(x)
        loss = loss_fn(pred, y)
        if penalty is not None:
            value, _ = penalty(model, x, epoch=10, prediction=pred)
            loss = loss + value
        loss.backward()
        opt.step()
    return step


def raw_gram(model, xs, grid, gens, method) -> torch.Tensor:
    """``(k, k)`` per-sample mean of ``<L_i F(u), L_j F(u)>`` (interior-windowed, as in the penalties)."""
    L = lie_derivative(model, xs, gens, VEC, VEC, grid, method=method) * grid.window(0.15, dtype=xs.dtype, device=xs.device)
    L = L.detach().reshape(len(gens), -1).double()
    return L @ L.T / xs.shape[0]


def gram_bias(model, x, grid, gens, method, sub_batch) -> float:
    """Relative Frobenius error of the mean sub-batch Gram against the full-batch jvp Gram."""
    full = raw_gram(model, x, grid, gens, "jvp")
    sub = torch.stack([raw_gram(model, xs, grid, gens, method) for xs in x.split(sub_batch)]).mean(0)
    return float(torch.linalg.norm(sub - full) / torch.linalg.norm(full))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    grid = Grid.regular(args.size)
    x = smooth_random_field(VEC, grid, batch=args.batch, localized=False, dtype=torch.float32).to(device)
    y = torch.roll(x, 3, dims=-1)
    gens = algebra("sim2")
    model = FieldFNO(VEC, VEC, n_modes=(16, 16), hidden_channels=32, n_layers=4).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = LpLoss(d=2, p=2)

    variants = {
        "unconstrained": None,
        "penalized fd1 sub4": LiePenalty(gens, VEC, VEC, grid, method="fd1", sub_batch=4),
        "promoted jvp full batch": NuclearPenalty(gens, VEC, VEC, grid, method="jvp", sub_batch=args.batch),
        "promoted jvp sub4": NuclearPenalty(gens, VEC, VEC, grid, method="jvp", sub_batch=4),
        "promoted fd sub4": NuclearPenalty(gens, VEC, VEC, grid, method="fd", sub_batch=4),
        "promoted fd1 sub4": NuclearPenalty(gens, VEC, VEC, grid, method="fd1", sub_batch=4),
        "promoted fd1 sub2": NuclearPenalty(gens, VEC, VEC, grid, method="fd1", sub_batch=2),
        "promoted fd1 sub1": NuclearPenalty(gens, VEC, VEC, grid, method="fd1", sub_batch=1),
    }
    steps = {name: make_step(model, loss_fn, opt, pen) for name, pen in variants.items()}
    for step in steps.values():  # warm-up
        step(x, y)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step(x, y)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["unconstrained"])
    print(f"device={device} threads={torch.get_num_threads()} grid={args.size} batch={args.batch} generators={[g.name for g in gens]}")
    print(f"{'variant':28s} {'step s':>8s} {'x unconstrained':>16s} {'Gram bias':>10s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        pen = variants[name]
        bias = "" if pen is None else f"{gram_bias(model, x, grid, gens, pen._cols.method, pen._cols.sub_batch):10.2%}"
        print(f"{name:28s} {med:8.3f} {med / base:16.2f} {bias}")


if __name__ == "__main__":
    main()
