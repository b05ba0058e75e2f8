"""2-D incompressible Navier-Stokes on the periodic unit torus, in vorticity form.

    w_t + u . grad w = nu lap w + f,    lap psi = -w,    u = (psi_y, -psi_x),

so ``w = dv/dx - du/dy`` and ``div u = 0``. This is the FNO paper's data set (Li et al. 2021): the
initial vorticity is the Gaussian random field ``N(0, 7^(3/2) (-lap + 49 I)^(-2.5))`` with zero mean,
the forcing one of

    fno:   0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))   (breaks quarter turns)
    nssym: 0.1 (cos 4 pi x + cos 4 pi y)               (D4-invariant, G-FNO's NS-sym)
    none:  0

and the scheme pseudo-spectral with 2/3 dealiasing, Crank-Nicolson on viscosity and Heun on advection
and forcing (see ``data_scripts/_spectral.py`` for why). The file holds the vorticity (pseudoscalar) and
the velocity (vector) at ``record_steps + 1`` equally spaced times ``0, t_final/record_steps, ...,
t_final``; time index 0 is the initial condition. Solving at a finer ``solve_resolution`` (a multiple of
``resolution``) and keeping every ``r``-th point reproduces the FNO paper's 256 -> 64 subsampling.

Usage: ``python data_scripts/navier_stokes.py --out ns.nc --samples 64 --resolution 64``, or
``from data_scripts.navier_stokes import generate``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    # Run by path: put the repository root on sys.path so the absolute imports below work uninstalled.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_scripts._spectral import (  # noqa: E402
    SpectralGrid,
    check_device,
    heun_crank_nicolson_step,
    integrate,
    output_stride,
    record_schedule,
    sample_gaussian_random_field,
    torch_threads,
)
from fieldsym import __version__  # noqa: E402
from fieldsym.data.writer import FieldSpec, history_entry, write_dataset  # noqa: E402

FORCINGS = {
    "fno": "0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))",
    "nssym": "0.1 (cos 4 pi x + cos 4 pi y)",
    "none": "0",
}
INITIAL_ALPHA, INITIAL_TAU = 2.5, 7.0


@dataclass(frozen=True)
class Solution:
    """Recorded solution, float64: ``time (T,)``, ``vorticity (S, T, N, N)``, ``velocity (S, T, 2, N, N)``."""

    time: np.ndarray
    vorticity: np.ndarray
    velocity: np.ndarray


def forcing_field(name: str, n: int) -> torch.Tensor:
    """The named forcing on the grid ``x_j = j / N``, shape ``(N, N)`` indexed ``(y, x)``, float64."""
    if name not in FORCINGS:
        raise ValueError(f"unknown forcing {name!r}; expected one of {sorted(FORCINGS)}.")
    coordinates = torch.arange(n, dtype=torch.float64) / n
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    if name == "fno":
        return 0.1 * (torch.sin(2 * math.pi * (x + y)) + torch.cos(2 * math.pi * (x + y)))
    if name == "nssym":
        return 0.1 * (torch.cos(4 * math.pi * x) + torch.cos(4 * math.pi * y))
    return torch.zeros(n, n, dtype=torch.float64)


def solve(w0: torch.Tensor, *, nu: float, forcing: torch.Tensor | None, dt: float, t_final: float,
          record_steps: int, stride: int = 1, device: str = "cpu", progress: bool = False) -> Solution:
    """Integrate from the initial vorticity ``w0`` of shape ``(S, N, N)`` (float64, indexed ``(y, x)``).

    ``w0`` is projected onto the dealiasing band with zero mean; ``forcing`` has shape ``(N, N)``
    (``None``: unforced). Outputs are recorded every ``t_final / record_steps`` and subsampled with
    ``stride``.
    """
    w0 = torch.as_tensor(w0, dtype=torch.float64)
    if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2]:
        raise ValueError(f"w0 must have shape (samples, N, N); got {tuple(w0.shape)}.")
    grid = SpectralGrid(w0.shape[-1], device)
    forcing_hat = None if forcing is None else grid.project(torch.as_tensor(forcing, dtype=torch.float64).to(device))
    times, steps_per_record, dt_used = record_schedule(t_final, record_steps, dt)

    def explicit(state):
        (w_hat,) = state
        u_hat, v_hat = grid.velocity_hat(w_hat)
        rhs = -grid.advection_hat(grid.to_physical(u_hat), grid.to_physical(v_hat), w_hat)
        return (rhs + forcing_hat if forcing_hat is not None else rhs,)

    def step(state):
        return heun_crank_nicolson_step(state, explicit, (nu,), grid, dt_used)

    def record(state):
        (w_hat,) = state
        velocity = torch.stack([grid.to_physical(c) for c in grid.velocity_hat(w_hat)], dim=1)
        return grid.to_physical(w_hat)[..., ::stride, ::stride], velocity[..., ::stride, ::stride]

    state = (grid.project(w0.to(device)),)
    vorticity, velocity = integrate(state, step, record, record_steps=record_steps,
                                    steps_per_record=steps_per_record, progress=progress)
    return Solution(times.numpy(), vorticity.numpy(), velocity.numpy())


def generate(out: str | Path, *, samples: int = 64, resolution: int = 64, solve_resolution: int | None = None,
             nu: float = 1e-3, dt: float = 1e-3, t_final: float = 1.0, record_steps: int = 10,
             forcing: str = "fno", seed: int = 0, device: str = "cpu", batch_size: int | None = None,
             threads: int | None = 1, progress: bool = True, history: str | None = None) -> Path:
    """Generate ``samples`` trajectories and write them to ``out`` (schema 1); return the path.

    Variables: ``vorticity (sample, time, y, x)`` pseudoscalar and
    ``velocity (sample, time, component, y, x)`` vector, ``time`` of length ``record_steps + 1``
    (``0, t_final / record_steps, ..., t_final``; index 0 is the initial condition).

    ``dt`` is shrunk to fit a whole number of steps between records; the file stores the one used.
    ``batch_size`` samples are solved at once (``None``: all); the data do not depend on it. ``threads``
    sets torch's CPU threads while solving (``None``: leave torch's setting; see ``torch_threads``).
    """
    if samples < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError(f"samples and batch_size must be >= 1; got {samples}, {batch_size}.")
    solve_resolution = solve_resolution or resolution
    stride = output_stride(resolution, solve_resolution)
    check_device(device)
    force = forcing_field(forcing, solve_resolution)
    generator = torch.Generator().manual_seed(seed)
    w0 = sample_gaussian_random_field(samples, solve_resolution, alpha=INITIAL_ALPHA, tau=INITIAL_TAU,
                                      generator=generator)
    batch_size = batch_size or samples
    with torch_threads(threads):
        parts = [
            solve(w0[start:start + batch_size], nu=nu, forcing=force, dt=dt, t_final=t_final,
                  record_steps=record_steps, stride=stride, device=device, progress=progress)
            for start in range(0, samples, batch_size)
        ]
    dt_used = record_schedule(t_final, record_steps, dt)[2]
    parameters = {
        "nu": nu, "dt": dt_used, "t_final": t_final, "record_steps": record_steps, "forcing": forcing,
        "forcing_formula": FORCINGS[forcing], "resolution": resolution, "solve_resolution": solve_resolution,
        "initial_condition": "GRF N(0, 7^(3/2) (-lap + 49 I)^(-2.5)), zero mean",
        "convention": "w = dv/dx - du/dy, lap psi = -w, u = psi_y, v = -psi_x",
    }
    coordinates = np.arange(resolution) / resolution
    return write_dataset(
        out,
        {
            "vorticity": FieldSpec(np.concatenate([p.vorticity for p in parts]), "pseudoscalar", "1",
                                   "vorticity w = dv/dx - du/dy"),
            "velocity": FieldSpec(np.concatenate([p.velocity for p in parts]), "vector", "1", "velocity (u, v)"),
        },
        x=coordinates, y=coordinates, time=parts[0].time, periodic=True, pde="navier_stokes_2d_vorticity",
        parameters=parameters, seed=seed,
        title=f"2-D incompressible Navier-Stokes on the unit torus, nu={nu:g}, forcing {forcing}",
        source=f"fieldsym {__version__} data_scripts/navier_stokes.py: pseudo-spectral, 2/3 dealiased, "
        "Crank-Nicolson (viscosity) + Heun (advection, forcing)",
        history=history or history_entry(f"data_scripts.navier_stokes.generate(samples={samples}, "
                                          f"resolution={resolution}, seed={seed})"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate 2-D Navier-Stokes (vorticity form, periodic unit torus) trajectories as a "
        "schema-1 netCDF file with the variables 'vorticity' (pseudoscalar) and 'velocity' (vector).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS, help="output netCDF path")
    parser.add_argument("--samples", type=int, default=64, help="number of trajectories")
    parser.add_argument("--resolution", type=int, default=64, help="output grid size N (even), x_j = j/N")
    parser.add_argument("--solve-resolution", type=int, default=None,
                        help="solve on this finer grid (a multiple of --resolution) and subsample "
                        "(None: solve at --resolution)")
    parser.add_argument("--nu", type=float, default=1e-3, help="kinematic viscosity")
    parser.add_argument("--dt", type=float, default=1e-3, help="time step (shrunk to fit the record interval)")
    parser.add_argument("--t-final", type=float, default=1.0, help="final time")
    parser.add_argument("--record-steps", type=int, default=10,
                        help="recorded intervals: the file holds times 0, t_final/R, ..., t_final")
    parser.add_argument("--forcing", choices=sorted(FORCINGS), default="fno",
                        help="; ".join(f"{k}: {v}" for k, v in FORCINGS.items()))
    parser.add_argument("--seed", type=int, default=0, help="random seed for the initial conditions")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="samples solved at once (None: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; more pay off only for large grids on an idle machine")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = " ".join(["data_scripts/navier_stokes.py", *(sys.argv[1:] if argv is None else argv)])
    path = generate(
        args.out, samples=args.samples, resolution=args.resolution, solve_resolution=args.solve_resolution,
        nu=args.nu, dt=args.dt, t_final=args.t_final, record_steps=args.record_steps, forcing=args.forcing,
        seed=args.seed, device=args.device, batch_size=args.batch_size, threads=args.threads,
        progress=not args.quiet,
        history=history_entry(command),
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
