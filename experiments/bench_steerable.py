"""Training-step cost of the SO(2)-steerable SteerableFNO against the unconstrained FieldFNO.

Setting: vector -> vector on 64x64 periodic grids, batch 16, 4 layers, n_modes 12 (FieldFNO: the square
|k_x|, |k_y| <= 6; SteerableFNO: the disc |k| <= 6). Operators:

- ``fno``: FieldFNO of width 32 with neuralop's grid embedding (the reference);
- ``steerable_params``: SteerableFNO with hidden irreps ``2t x 0 + t x 1 + t/2 x 2`` and the ``t`` that
  brings its parameter count closest to the reference's (a steerable kernel has a few radial weights
  per basis element instead of one complex weight per mode, so equal parameters means a far wider
  hidden tensor);
- ``steerable_width``: the same family with as many hidden channels as the FNO (``t = 6``: 30);
- ``gated_params``, ``gated_r12_params``: the gated nonlinearity (``activation: gate``) at equal
  parameters, with 3 and with 12 radial profiles (today's defaults: finer profiles put the parameters
  into the kernels instead of the width);
- ``gated_r12_bmm``: ``gated_r12_params`` with its pointwise maps as batched matmuls instead of 1x1
  convolutions (``SteerableLinear.method``), to choose the faster on a device.

A step is forward + MSE + backward + Adam update; the operators alternate step by step so drifts in
machine load hit all alike. Prints median step times, the ratios to ``fno``, and the ATen ops per step
(see ``bench_gfno_step.ops_per_step``: what a launch-bound GPU step pays for).

Measured (session 4; experiments/README.md): CPU, 1 thread, 3 steps after 1 warm-up: fno 186 ms (758,754
params, 699 ops); steerable_params x16.8 (240 channels, 818 ops); steerable_width x0.69; gated_params
x19.1 (210 channels, 698 ops); gated_r12_params x4.01 (110 channels, 698 ops) -- the CPU step is bound
by activation size. H200, ``--device cuda --steps 20 --warmup 3``: fno 11 ms; x1.33 / x1.27 / x1.18 /
**x1.17** (launch-bound: equal op counts give nearly equal steps); ``--compile default`` x0.95.

    python experiments/bench_steerable.py [--steps 10] [--warmup 2] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import torch

from bench_gfno_step import add_step_arguments, median_step_ms, ops_per_step, profile_step, setup  # the GroupFNO benchmark's step
from fieldsym.models import FieldFNO, SteerableFNO, count_parameters
from fieldsym.models.steerable import SteerableLinear

FIELD = "v:vector"
N_MODES, BATCH, GRID, LAYERS, WIDTH = 12, 16, 64, 4, 32
MODELS = ("fno", "steerable_params", "steerable_width", "gated_params", "gated_r12_params", "gated_r12_bmm")


def steerable(t: int, activation: str = "norm", n_radial: int = 3) -> SteerableFNO:
    irreps = f"{2 * t}x0 + {t}x1 + {max(1, t // 2)}x2"
    return SteerableFNO(FIELD, FIELD, "SO2", irreps, N_MODES, n_layers=LAYERS, activation=activation,
                        n_radial=n_radial)


def matched_steerable(target: int, activation: str = "norm", n_radial: int = 3) -> SteerableFNO:
    """The SteerableFNO of the family whose parameter count is closest to ``target``."""
    counts = {t: count_parameters(steerable(t, activation, n_radial)) for t in range(2, 80, 2)}
    return steerable(min(counts, key=lambda t: abs(counts[t] - target)), activation, n_radial)


def with_channel_map(model: SteerableFNO, method: str) -> SteerableFNO:
    """``model`` with every pointwise map computed by ``method`` (steerable.channel_map; same map)."""
    for layer in model.modules():
        if isinstance(layer, SteerableLinear):
            layer.method = method
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--models", default=",".join(MODELS), help=f"which operators to time (default: {','.join(MODELS)}; fno is always timed)")
    args = parser.parse_args()
    u, target = setup(args)
    reference = FieldFNO(FIELD, FIELD, n_modes=(N_MODES, N_MODES), hidden_channels=WIDTH, n_layers=LAYERS)
    n_ref = count_parameters(reference)
    build = {
        "steerable_params": lambda: matched_steerable(n_ref),
        "steerable_width": lambda: steerable(6),
        "gated_params": lambda: matched_steerable(n_ref, "gate"),
        "gated_r12_params": lambda: matched_steerable(n_ref, "gate", n_radial=12),
        "gated_r12_bmm": lambda: with_channel_map(matched_steerable(n_ref, "gate", n_radial=12), "bmm"),
    }
    chosen = [name for name in args.models.split(",") if name and name != "fno"]
    unknown = sorted(set(chosen) - set(build))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    models = {"fno": reference, **{name: build[name]() for name in chosen}}
    models = {name: model.to(args.device) for name, model in models.items()}
    ops = {name: ops_per_step(model, u, target) for name, model in models.items()}
    ms = median_step_ms(models, u, target, args.device, args.warmup, args.steps)
    print(f"device={args.device} amp={args.amp} compile={args.compile} threads={torch.get_num_threads()} batch={BATCH} grid={GRID}x{GRID}")
    for name, model in models.items():
        channels = model.hidden_irreps.num_channels if isinstance(model, SteerableFNO) else WIDTH
        print(f"{name:17s} {channels:4d} hidden channels {count_parameters(model):8d} params "
              f"{ms[name]:7.0f} ms/step  x{ms[name] / ms['fno']:.2f}   {ops[name]:5d} ATen ops/step  "
              f"x{ops[name] / ops['fno']:.2f}")
    if args.profile:
        for name, model in models.items():
            profile_step(name, model, u, target, args.device)


if __name__ == "__main__":
    main()
