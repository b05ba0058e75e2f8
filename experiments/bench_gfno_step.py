"""Training-step cost of the C4/D4-equivariant GroupFNO against an unconstrained FNO of equal size.

Setting: vector -> vector on 64x64 periodic grids, batch 16, 4 layers, n_modes 12 (|k| <= 6), FNO width
32; GroupFNO's hidden_channels (regular channels, |G| copies each) is the integer that brings its
parameter count closest to the FNO's. A step is forward + MSE + backward + Adam update; the two
operators alternate so drifts in machine load hit both alike. Prints one line per group with the
median step times and their ratio.

    python experiments/bench_gfno_step.py [--steps 20] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fieldsym.models import FieldFNO, GroupFNO, count_parameters

FIELD = "v:vector"


def matched_hidden_channels(group: str, target: int, n_modes: int) -> int:
    """The GroupFNO width whose parameter count is closest to ``target``."""
    counts = {c: count_parameters(GroupFNO(FIELD, FIELD, group, n_modes, c)) for c in range(4, 33)}
    return min(counts, key=lambda c: abs(counts[c] - target))


def step_fn(model: torch.nn.Module, u: torch.Tensor, target: torch.Tensor):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(u), target)
        loss.backward()
        opt.step()

    return step


def timed(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--groups", default="C4,D4")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_modes, batch, grid = 12, 16, 64
    u = torch.randn(batch, 2, grid, grid, device=args.device)
    target = torch.randn(batch, 2, grid, grid, device=args.device)
    fno = FieldFNO(FIELD, FIELD, n_modes=(n_modes, n_modes), hidden_channels=32, n_layers=4).to(args.device)
    n_fno = count_parameters(fno)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={batch} grid={grid}x{grid}")
    for group in args.groups.split(","):
        c = matched_hidden_channels(group, n_fno, n_modes)
        gfno = GroupFNO(FIELD, FIELD, group, n_modes, c, n_layers=4, positional_embedding=True).to(args.device)
        steps = {"fno": step_fn(fno, u, target), "gfno": step_fn(gfno, u, target)}
        times: dict[str, list[float]] = {"fno": [], "gfno": []}
        for i in range(args.warmup + args.steps):
            for name, step in steps.items():
                t = timed(step, args.device)
                if i >= args.warmup:
                    times[name].append(t)
        t_fno, t_g = statistics.median(times["fno"]), statistics.median(times["gfno"])
        print(
            f"{group}: FNO width 32 ({n_fno} params) {t_fno * 1e3:.1f} ms/step | "
            f"GroupFNO hidden {c} x {len(gfno.group)} ({count_parameters(gfno)} params) "
            f"{t_g * 1e3:.1f} ms/step | ratio {t_g / t_fno:.2f}"
        )


if __name__ == "__main__":
    main()
