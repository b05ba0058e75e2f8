"""Training-step cost of the C4/D4-equivariant GroupFNO against unconstrained FNOs.

Setting: vector -> vector on 64x64 periodic grids, batch 16, 4 layers, n_modes 12 (|k| <= 6).
Operators, per group:

- ``fno``: FieldFNO of width 32 with neuralop's grid embedding (the reference);
- ``gfno``: GroupFNO with the invariant embedding and the hidden_channels (regular channels, |G|
  copies each) that bring its parameter count closest to the reference's; lifting and projection
  ratio 2 like the FNO's, or ``--gfno-ratio`` (1 keeps those tensors c |G| wide instead of 2 c |G|);
- ``fno_wide``: FieldFNO as wide as GroupFNO's hidden tensor (``hidden_channels * |G|`` channels), to
  separate the cost of the wider activations from the cost of the symmetry constraint.

At equal parameter count the regular representation has sqrt(|G|) times the FNO's channels (the
spectral weights grow as (c |G|)^2 / |G|), and a CPU step is bound by activation memory, so
``gfno / fno`` cannot drop much below sqrt(|G|) while ``gfno / fno_wide`` measures the constraint.

A step is forward + MSE + backward + Adam update; the operators alternate step by step so drifts in
machine load hit all alike. Prints the median step times and the ratios.

    python experiments/bench_gfno_step.py [--steps 10] [--warmup 2] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fieldsym.models import FieldFNO, GroupFNO, count_parameters

FIELD = "v:vector"
N_MODES, BATCH, GRID, LAYERS, WIDTH = 12, 16, 64, 4, 32


def matched_gfno(group: str, target: int, ratio: float) -> GroupFNO:
    """The GroupFNO whose parameter count is closest to ``target``."""

    def build(c: int) -> GroupFNO:
        return GroupFNO(FIELD, FIELD, group, N_MODES, c, n_layers=LAYERS, positional_embedding=True,
                        lifting_channel_ratio=ratio, projection_channel_ratio=ratio)

    counts = {c: count_parameters(build(c)) for c in range(2, WIDTH + 1)}
    return build(min(counts, key=lambda c: abs(counts[c] - target)))


def fno(width: int) -> FieldFNO:
    return FieldFNO(FIELD, FIELD, n_modes=(N_MODES, N_MODES), hidden_channels=width, n_layers=LAYERS)


AMP = False  # bf16 autocast around the forward pass (--amp; what training on a GPU uses)
COMPILE: str | None = None  # torch.compile mode for every model (--compile), e.g. "default", "reduce-overhead"


def step_fn(model: torch.nn.Module, u: torch.Tensor, target: torch.Tensor, compiled: bool = True,
            foreach: bool | None = None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)
    forward = torch.compile(model, mode=COMPILE) if COMPILE and compiled else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if COMPILE:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: CUDA-graph outputs of the last one are free
        with torch.autocast(u.device.type, dtype=torch.bfloat16, enabled=AMP):
            prediction = forward(u)
        torch.nn.functional.mse_loss(prediction.float(), target).backward()
        opt.step()

    return step


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every step benchmark shares (this one and ``bench_steerable.py``)."""
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast forward (CUDA)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="torch.compile every model (MODE: default, reduce-overhead, max-autotune); the "
                             "warm-up steps include the compilation")
    parser.add_argument("--profile", action="store_true",
                        help="after the timings, profile a few steps of each model (torch.profiler): wall "
                             "vs device-busy time per step and the ops that take the most")


def setup(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the shared options; the seeded input and target ``(BATCH, 2, GRID, GRID)`` on the device."""
    global AMP, COMPILE
    AMP, COMPILE = args.amp, args.compile
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    u = torch.randn(BATCH, 2, GRID, GRID, device=args.device)
    target = torch.randn(BATCH, 2, GRID, GRID, device=args.device)
    return u, target


def timed(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_step_ms(models: dict[str, torch.nn.Module], u, target, device: str, warmup: int, steps: int
                   ) -> dict[str, float]:
    """Median training-step time in ms of each model, timed round-robin (one step of each per round)."""
    step_of = {name: step_fn(model, u, target) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, step in step_of.items():
            t = timed(step, device)
            if i >= warmup:
                times[name].append(t)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


class _CountOps(TorchDispatchMode):
    """Counts the ATen ops that reach the kernels (after autograd), forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(model: torch.nn.Module, u: torch.Tensor, target: torch.Tensor) -> int:
    """ATen ops in one eager training step (forward, loss, backward, Adam update), after one warm-up step.

    A GPU step of these small operators is bound by kernel launches and the Python that issues them, so
    this count predicts the GPU cost where the CPU's timing cannot (the same ops run on every device)."""
    step = step_fn(model, u, target, compiled=False, foreach=True)  # Adam's multi-tensor update, as on a GPU
    step()
    with _CountOps() as counter:
        step()
    return counter.count


def profile_step(name: str, model: torch.nn.Module, u: torch.Tensor, target: torch.Tensor, device: str,
                 steps: int = 5, rows: int = 12) -> None:
    """Print where one model's training step spends its time: wall time per step, the device's busy
    time per step (CUDA kernels; on CPU the ops' self time), and the ops that take the most of it.

    On a GPU, busy time far below wall time means the step is bound by launching kernels (Python and
    dispatch), not by the kernels themselves; the table says which ops to fuse or drop."""
    from torch.profiler import ProfilerActivity, profile

    step = step_fn(model, u, target)
    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    wall = 0.0
    with profile(activities=activities) as prof:
        for _ in range(steps):
            wall += timed(step, device)
    events = prof.key_averages()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    if device == "cuda":  # the kernels alone: op rows repeat their kernels' time, annotations span them
        busy = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and not getattr(e, "is_user_annotation", False))
    else:
        busy = sum(e.self_cpu_time_total for e in events)
    busy /= steps * 1e3
    print(f"profile {name}: {wall / steps * 1e3:.1f} ms/step wall (profiled), {busy:.1f} ms/step "
          f"{'GPU kernels' if device == 'cuda' else 'CPU op self time'}")
    print(events.table(sort_by=key, row_limit=rows, max_name_column_width=48))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_step_arguments(parser)
    parser.add_argument("--groups", default="C4,D4")
    parser.add_argument("--gfno-ratio", type=float, default=2.0,
                        help="GroupFNO lifting and projection channel ratio (the FNO's is 2)")
    args = parser.parse_args()
    u, target = setup(args)
    reference = fno(WIDTH).to(args.device)
    n_ref = count_parameters(reference)
    print(f"device={args.device} amp={AMP} compile={COMPILE} threads={torch.get_num_threads()} batch={BATCH} grid={GRID}x{GRID}")
    for group in args.groups.split(","):
        gfno = matched_gfno(group, n_ref, args.gfno_ratio).to(args.device)
        hidden = gfno.convs[0].c_out * len(gfno.group)
        models = {"fno": reference, "gfno": gfno, "fno_wide": fno(hidden).to(args.device)}
        ms = median_step_ms(models, u, target, args.device, args.warmup, args.steps)
        sizes = {name: count_parameters(model) for name, model in models.items()}
        print(
            f"{group}: fno width {WIDTH} ({sizes['fno']} params) {ms['fno']:.0f} ms | "
            f"gfno {gfno.convs[0].c_out}x{len(gfno.group)} ({sizes['gfno']} params) {ms['gfno']:.0f} ms | "
            f"fno_wide width {hidden} ({sizes['fno_wide']} params) {ms['fno_wide']:.0f} ms | "
            f"gfno/fno {ms['gfno'] / ms['fno']:.2f}  gfno/fno_wide {ms['gfno'] / ms['fno_wide']:.2f} | "
            f"ATen ops/step fno {ops_per_step(reference, u, target)} gfno {ops_per_step(gfno, u, target)}"
        )
        if args.profile:
            for name in ("fno", "gfno"):
                profile_step(f"{group} {name}", models[name], u, target, args.device)


if __name__ == "__main__":
    main()
