"""Buoyancy-driven incompressible flow carrying a scalar on the periodic unit torus.

A scalar ``s`` (temperature anomaly or smoke concentration) pushes the fluid up with the force
``beta s e_y``. In vorticity form (conventions as in ``navier_stokes.py``: ``w = dv/dx - du/dy``,
``lap psi = -w``, ``u = (psi_y, -psi_x)``):

    w_t + u . grad w = nu lap w + beta ds/dx,      (curl of (0, beta s) = d(beta s)/dx)
    s_t + u . grad s = kappa lap s.

Why this data set: ``beta`` sets how strongly rotations are broken while translations are kept. At
``beta = 0`` the scalar is passive and the system is rotation- and reflection-symmetric; for ``beta > 0``
gravity picks a direction, so only translations and the reflection ``x -> -x`` survive, and larger
``beta`` moves the data further from rotation symmetry. ``beta`` may differ per sample (it is written
as the per-sample variable ``buoyancy``), so one file can span a range of symmetry breaking. The mean of
``s`` exerts a uniform force that a hydrostatic pressure gradient balances; the curl drops it.

Initial vorticity: the FNO Gaussian random field ``N(0, 7^(3/2) (-lap + 49 I)^(-2.5))``; initial scalar:
a smoother field ``N(0, 5^4 (-lap + 25 I)^(-3))``; both zero-mean and isotropic in distribution.
Numerics are shared with ``navier_stokes.py`` (``data_scripts/_spectral.py``). The file holds velocity
(vector), vorticity (pseudoscalar) and temperature (scalar) at times ``0, t_final/R, ..., t_final``.

Usage: ``python data_scripts/buoyancy.py --out buoyancy.nc --buoyancy 0 0.5 1``, or
``from data_scripts.buoyancy import generate``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
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
from data_scripts.navier_stokes import INITIAL_ALPHA, INITIAL_TAU  # noqa: E402
from fieldsym import __version__  # noqa: E402
from fieldsym.data.writer import FieldSpec, history_entry, write_dataset  # noqa: E402

SCALAR_ALPHA, SCALAR_TAU = 3.0, 5.0


@dataclass(frozen=True)
class Solution:
    """Recorded solution, float64: ``time (T,)``, ``vorticity (S, T, N, N)``,
    ``velocity (S, T, 2, N, N)``, ``scalar (S, T, N, N)``."""

    time: np.ndarray
    vorticity: np.ndarray
    velocity: np.ndarray
    scalar: np.ndarray


def solve(w0: torch.Tensor, s0: torch.Tensor, *, beta: float | torch.Tensor, nu: float, kappa: float,
          dt: float, t_final: float, record_steps: int, stride: int = 1, device: str = "cpu",
          progress: bool = False) -> Solution:
    """Integrate from vorticity ``w0`` and scalar ``s0``, both ``(S, N, N)`` float64 indexed ``(y, x)``.

    ``beta`` is one number or one per sample, shape ``(S,)``. Both fields are projected onto the
    dealiasing band with zero mean.
    """
    w0 = torch.as_tensor(w0, dtype=torch.float64)
    s0 = torch.as_tensor(s0, dtype=torch.float64)
    if w0.ndim != 3 or w0.shape != s0.shape or w0.shape[-1] != w0.shape[-2]:
        raise ValueError(f"w0 and s0 must both have shape (samples, N, N); got {tuple(w0.shape)}, {tuple(s0.shape)}.")
    grid = SpectralGrid(w0.shape[-1], device)
    beta = torch.as_tensor(beta, dtype=torch.float64, device=device).reshape(-1, 1, 1)
    if beta.shape[0] not in (1, w0.shape[0]):
        raise ValueError(f"beta must be one number or one per sample ({w0.shape[0]}); got {beta.shape[0]} values.")
    times, steps_per_record, dt_used = record_schedule(t_final, record_steps, dt)

    def explicit(state):
        w_hat, s_hat = state
        u, v = (grid.to_physical(c) for c in grid.velocity_hat(w_hat))
        return (-grid.advection_hat(u, v, w_hat) + beta * grid.ddx * s_hat, -grid.advection_hat(u, v, s_hat))

    def step(state):
        return heun_crank_nicolson_step(state, explicit, (nu, kappa), grid, dt_used)

    def record(state):
        w_hat, s_hat = state
        velocity = torch.stack([grid.to_physical(c) for c in grid.velocity_hat(w_hat)], dim=1)
        return tuple(f[..., ::stride, ::stride] for f in (grid.to_physical(w_hat), velocity, grid.to_physical(s_hat)))

    state = (grid.project(w0.to(device)), grid.project(s0.to(device)))
    vorticity, velocity, scalar = integrate(state, step, record, record_steps=record_steps,
                                            steps_per_record=steps_per_record, progress=progress)
    return Solution(times.numpy(), vorticity.numpy(), velocity.numpy(), scalar.numpy())


def per_sample_buoyancy(buoyancy: float | Sequence[float], samples: int) -> np.ndarray:
    """``beta`` for each sample, shape ``(samples,)``: several values are assigned in turn
    (sample ``i`` gets ``buoyancy[i % len(buoyancy)]``)."""
    values = np.atleast_1d(np.asarray(buoyancy, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"buoyancy must be a finite number or a non-empty list of them; got {buoyancy!r}.")
    return values[np.arange(samples) % values.size]


def generate(out: str | Path, *, samples: int = 64, resolution: int = 64, solve_resolution: int | None = None,
             buoyancy: float | Sequence[float] = 1.0, nu: float = 1e-3, kappa: float = 1e-3, dt: float = 1e-3,
             t_final: float = 1.0, record_steps: int = 10, seed: int = 0, device: str = "cpu",
             batch_size: int | None = None, threads: int | None = 1, progress: bool = True,
             history: str | None = None) -> Path:
    """Generate ``samples`` trajectories and write them to ``out`` (schema 1); return the path.

    Variables: ``velocity (sample, time, component, y, x)`` vector, ``vorticity (sample, time, y, x)``
    pseudoscalar, ``temperature (sample, time, y, x)`` scalar, and ``buoyancy (sample,)``; ``time`` is
    ``0, t_final / record_steps, ..., t_final`` (index 0 is the initial condition).

    ``buoyancy`` is one ``beta`` or several, assigned to samples in turn (:func:`per_sample_buoyancy`).
    ``dt``, ``batch_size`` and ``threads`` work as in ``navier_stokes.generate``.
    """
    if samples < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError(f"samples and batch_size must be >= 1; got {samples}, {batch_size}.")
    solve_resolution = solve_resolution or resolution
    stride = output_stride(resolution, solve_resolution)
    check_device(device)
    beta = per_sample_buoyancy(buoyancy, samples)
    generator = torch.Generator().manual_seed(seed)
    w0 = sample_gaussian_random_field(samples, solve_resolution, alpha=INITIAL_ALPHA, tau=INITIAL_TAU,
                                      generator=generator)
    s0 = sample_gaussian_random_field(samples, solve_resolution, alpha=SCALAR_ALPHA, tau=SCALAR_TAU,
                                      generator=generator)
    batch_size = batch_size or samples
    with torch_threads(threads):
        parts = [
            solve(w0[i:i + batch_size], s0[i:i + batch_size], beta=torch.from_numpy(beta[i:i + batch_size]),
                  nu=nu, kappa=kappa, dt=dt, t_final=t_final, record_steps=record_steps, stride=stride,
                  device=device, progress=progress)
            for i in range(0, samples, batch_size)
        ]
    parameters = {
        "buoyancy": sorted(set(beta.tolist())), "nu": nu, "kappa": kappa,
        "dt": record_schedule(t_final, record_steps, dt)[2], "t_final": t_final, "record_steps": record_steps,
        "resolution": resolution, "solve_resolution": solve_resolution,
        "initial_vorticity": "GRF N(0, 7^(3/2) (-lap + 49 I)^(-2.5)), zero mean",
        "initial_temperature": "GRF N(0, 5^4 (-lap + 25 I)^(-3)), zero mean",
        "convention": "w = dv/dx - du/dy, lap psi = -w, u = psi_y, v = -psi_x; force beta * s * e_y",
    }
    coordinates = np.arange(resolution) / resolution
    return write_dataset(
        out,
        {
            "velocity": FieldSpec(np.concatenate([p.velocity for p in parts]), "vector", "1", "velocity (u, v)"),
            "vorticity": FieldSpec(np.concatenate([p.vorticity for p in parts]), "pseudoscalar", "1",
                                   "vorticity w = dv/dx - du/dy"),
            "temperature": FieldSpec(np.concatenate([p.scalar for p in parts]), "scalar", "1",
                                     "buoyant scalar (temperature anomaly); force beta * s * e_y"),
        },
        x=coordinates, y=coordinates, time=parts[0].time, periodic=True, pde="buoyancy_2d_vorticity",
        parameters=parameters, seed=seed, per_sample={"buoyancy": beta},
        title=f"2-D buoyancy-driven flow on the unit torus, beta in {parameters['buoyancy']}",
        source=f"fieldsym {__version__} data_scripts/buoyancy.py: pseudo-spectral, 2/3 dealiased, "
        "Crank-Nicolson (diffusion) + Heun (advection, buoyancy)",
        history=history or history_entry(f"data_scripts.buoyancy.generate(samples={samples}, "
                                          f"resolution={resolution}, seed={seed})"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate buoyancy-driven flow (vorticity + scalar, periodic unit torus) as a schema-1 "
        "netCDF file with the variables 'velocity' (vector), 'vorticity' (pseudoscalar), 'temperature' (scalar) "
        "and 'buoyancy' (per sample).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS, help="output netCDF path")
    parser.add_argument("--samples", type=int, default=64, help="number of trajectories")
    parser.add_argument("--resolution", type=int, default=64, help="output grid size N (even), x_j = j/N")
    parser.add_argument("--solve-resolution", type=int, default=None,
                        help="solve on this finer grid (a multiple of --resolution) and subsample "
                        "(None: solve at --resolution)")
    parser.add_argument("--buoyancy", type=float, nargs="+", default=[1.0],
                        help="beta in the force beta*s*e_y (0: rotation-symmetric); several values are "
                        "assigned to samples in turn")
    parser.add_argument("--nu", type=float, default=1e-3, help="kinematic viscosity")
    parser.add_argument("--kappa", type=float, default=1e-3, help="scalar diffusivity")
    parser.add_argument("--dt", type=float, default=1e-3, help="time step (shrunk to fit the record interval)")
    parser.add_argument("--t-final", type=float, default=1.0, help="final time")
    parser.add_argument("--record-steps", type=int, default=10,
                        help="recorded intervals: the file holds times 0, t_final/R, ..., t_final")
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
    command = " ".join(["data_scripts/buoyancy.py", *(sys.argv[1:] if argv is None else argv)])
    path = generate(
        args.out, samples=args.samples, resolution=args.resolution, solve_resolution=args.solve_resolution,
        buoyancy=args.buoyancy, nu=args.nu, kappa=args.kappa, dt=args.dt, t_final=args.t_final,
        record_steps=args.record_steps, seed=args.seed, device=args.device, batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.quiet, history=history_entry(command),
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
