"""Pseudo-spectral machinery shared by the periodic solvers (Navier-Stokes, buoyancy).

Grid and sign conventions (DESIGN.md section 1): the unit torus with ``x_j = j / N``, arrays indexed
``(..., y, x)`` so ``y`` grows with the row index. The vorticity is ``w = dv/dx - du/dy``; the stream
function solves ``lap psi = -w`` and the velocity is ``u = psi_y, v = -psi_x``, so that
``div u = 0`` and ``curl u = -lap psi = w`` exactly.

Why the scheme is built this way:

- States live in ``rfft2`` space in float64 (complex128): derivatives and the Poisson solve are
  diagonal there, and real fields need only half the spectrum.
- The state is kept inside the 2/3 dealiasing band ``|k_x|, |k_y| <= (N - 1) // 3`` (integer wave
  numbers): the initial condition is projected onto it and the nonlinear term is masked to it. The
  discrete system is then a Galerkin truncation: quadratic products are computed without aliasing,
  so the inviscid part conserves energy and enstrophy, and no Nyquist mode (whose derivative has no
  sign for a real field) ever carries energy, so the recorded velocity and vorticity agree to rounding.
- Every multiplier (``i k`` with the Nyquist entry zeroed, ``|k|^2``, the square dealiasing mask)
  commutes with quarter turns, axis reflections and whole-cell shifts of the grid, so the discrete
  solver is equivariant to them up to rounding.
- Time stepping is the FNO paper's: Crank-Nicolson on diffusion, Heun (explicit trapezoid) on the
  rest, second order in ``dt``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

State = tuple[torch.Tensor, ...]


class SpectralGrid:
    """Fourier multipliers for an ``N x N`` grid on the periodic unit torus (float64).

    Spectral arrays have shape ``(..., N, N // 2 + 1)`` (``rfft2`` of ``(..., y, x)``).
    """

    def __init__(self, n: int, device: torch.device | str = "cpu"):
        if n < 4 or n % 2:
            raise ValueError(f"resolution must be an even integer >= 4; got {n}.")
        self.n = n
        ky_int = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device)[:, None]
        kx_int = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64, device=device)[None, :]
        self.k2 = (2 * math.pi) ** 2 * (kx_int**2 + ky_int**2)  # (N, N//2+1): symbol of -lap
        nyquist = n // 2
        self.ddx = 1j * 2 * math.pi * torch.where(kx_int.abs() == nyquist, 0.0, kx_int)
        self.ddy = 1j * 2 * math.pi * torch.where(ky_int.abs() == nyquist, 0.0, ky_int)
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / torch.where(self.k2 > 0, self.k2, 1.0), 0.0)
        band = (n - 1) // 3
        self.dealias = ((kx_int.abs() <= band) & (ky_int.abs() <= band)).to(torch.float64)
        self.dealias[0, 0] = 0.0  # the mean is held at zero: it carries no dynamics on the torus

    def to_spectral(self, field: torch.Tensor) -> torch.Tensor:
        """``(..., N, N)`` real -> ``(..., N, N//2+1)`` complex."""
        return torch.fft.rfft2(field)

    def to_physical(self, field_hat: torch.Tensor) -> torch.Tensor:
        """``(..., N, N//2+1)`` complex -> ``(..., N, N)`` real."""
        return torch.fft.irfft2(field_hat, s=(self.n, self.n))

    def project(self, field: torch.Tensor) -> torch.Tensor:
        """Physical ``(..., N, N)`` -> spectral state inside the dealiasing band, zero mean."""
        return self.to_spectral(field) * self.dealias

    def velocity_hat(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity from vorticity: ``psi = (-lap)^-1 w``, ``u = psi_y``, ``v = -psi_x``."""
        psi_hat = w_hat * self.inv_k2
        return self.ddy * psi_hat, -self.ddx * psi_hat

    def advection_hat(self, u: torch.Tensor, v: torch.Tensor, q_hat: torch.Tensor) -> torch.Tensor:
        """Dealiased ``u . grad q`` in spectral space; ``u, v`` physical ``(..., N, N)``."""
        q_x = self.to_physical(self.ddx * q_hat)
        q_y = self.to_physical(self.ddy * q_hat)
        return self.dealias * self.to_spectral(u * q_x + v * q_y)


def gaussian_random_field(noise: torch.Tensor, *, alpha: float, tau: float) -> torch.Tensor:
    """Periodic Gaussian random field ``N(0, sigma^2 (-lap + tau^2 I)^-alpha)`` with zero mean.

    ``sigma = tau^(alpha - 1)`` (the FNO paper's normalisation, ``tau^(0.5 (2 alpha - d))`` for
    ``d = 2``). As in the FNO data generator the field is
    ``Re sum_k sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) xi_k exp(2 pi i k.x)``.
    The spectrum depends on ``|k|`` only, so the distribution is invariant under the grid's quarter
    turns, reflections and shifts.

    Args:
        noise: complex standard normal ``xi``, shape ``(S, N, N)``.

    Returns:
        Real fields, shape ``(S, N, N)``, float64.
    """
    n = noise.shape[-1]
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=noise.device)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sigma = tau ** (alpha - 1.0)
    amplitude = math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    amplitude[0, 0] = 0.0
    return torch.fft.ifft2(n * n * amplitude * noise).real


def sample_gaussian_random_field(samples: int, n: int, *, alpha: float, tau: float,
                                 generator: torch.Generator) -> torch.Tensor:
    """Draw ``samples`` fields of :func:`gaussian_random_field` on CPU, shape ``(S, N, N)``.

    Noise is drawn on CPU so a seed gives the same data on every device.
    """
    real, imag = torch.randn(2, samples, n, n, dtype=torch.float64, generator=generator)
    return gaussian_random_field(torch.complex(real, imag), alpha=alpha, tau=tau)


def heun_crank_nicolson_step(state: State, explicit: Callable[[State], State],
                             diffusivity: Sequence[torch.Tensor | float], grid: SpectralGrid,
                             dt: float) -> State:
    """One step of ``q_t = -D |k|^2 q + E(q)`` for each component ``q`` of ``state``.

    Crank-Nicolson on the diffusion ``-D |k|^2 q``, Heun on ``E``:
    ``q* = ((1 - a) q + dt E(q)) / (1 + a)``,
    ``q' = ((1 - a) q + dt/2 (E(q) + E(q*))) / (1 + a)``, with ``a = dt D |k|^2 / 2``.
    """
    halves = [0.5 * dt * d * grid.k2 for d in diffusivity]
    explicit_now = explicit(state)
    predictor = tuple(((1 - a) * q + dt * e) / (1 + a) for q, e, a in zip(state, explicit_now, halves))
    explicit_next = explicit(predictor)
    return tuple(
        ((1 - a) * q + 0.5 * dt * (e0 + e1)) / (1 + a)
        for q, e0, e1, a in zip(state, explicit_now, explicit_next, halves)
    )


def record_schedule(t_final: float, record_steps: int, dt: float) -> tuple[torch.Tensor, int, float]:
    """Recorded times ``t_k = k t_final / record_steps``, ``k = 0..record_steps``, and the step.

    ``dt`` is shrunk, if needed, so that a whole number of steps fits between records.

    Returns:
        ``(times (record_steps + 1,), steps_per_record, dt_used)``.
    """
    if record_steps < 1 or t_final <= 0 or dt <= 0:
        raise ValueError(f"need record_steps >= 1, t_final > 0 and dt > 0; got {record_steps}, {t_final}, {dt}.")
    interval = t_final / record_steps
    steps = max(1, math.ceil(interval / dt - 1e-9))
    times = torch.arange(record_steps + 1, dtype=torch.float64) * interval
    if not math.isclose(interval / steps, dt, rel_tol=1e-9):
        logger.info("time step %g shrunk to %g to fit %d steps between records", dt, interval / steps, steps)
    return times, steps, interval / steps


def integrate(state: State, step: Callable[[State], State], record: Callable[[State], State], *,
              record_steps: int, steps_per_record: int, progress: bool) -> list[torch.Tensor]:
    """Advance ``state`` and record it ``record_steps + 1`` times (the initial state first).

    ``record(state)`` returns physical tensors of shape ``(S, ...)``; each is stacked on CPU into
    ``(S, record_steps + 1, ...)``.

    Raises:
        FloatingPointError: if the solution stops being finite (the time step is too large).
    """
    frames = [[r.cpu() for r in record(state)]]
    with tqdm(total=record_steps * steps_per_record, desc="time steps", disable=not progress) as bar:
        for _ in range(record_steps):
            for _ in range(steps_per_record):
                state = step(state)
            bar.update(steps_per_record)
            frames.append([r.cpu() for r in record(state)])
            if not all(torch.isfinite(f).all() for f in frames[-1]):
                raise FloatingPointError(
                    f"the solution became NaN/inf before t index {len(frames) - 1}: the explicit step is "
                    "unstable. Use a smaller --dt (advective CFL: dt * max|u| * N should stay below ~0.5)."
                )
    return [torch.stack(series, dim=1) for series in zip(*frames)]


def output_stride(resolution: int, solve_resolution: int) -> int:
    """Subsampling stride from the solver grid to the output grid (``x_j = j / N`` nests)."""
    if solve_resolution < resolution or solve_resolution % resolution:
        raise ValueError(f"solve_resolution must be a multiple of resolution ({resolution}); got "
                         f"{solve_resolution}. Use e.g. {2 * resolution} or {4 * resolution}.")
    return solve_resolution // resolution


def check_device(device: str) -> None:
    """Fail early, with the fix, when CUDA is asked for but absent."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu.")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads, then restore the previous count (``None``: unchanged).

    Why the generators default to one thread: their tensors are small (a batch of 64 fields at 32 x 32 is
    ~1 MB), where a second thread saves at most half the time on an idle machine, while on a loaded one an
    oversubscribed thread pool makes each step 10-20 times slower (measured on 2 busy cores, 64 samples at
    32 x 32: 5 s for 1000 steps with 1 thread, 33-90 s with 2).
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None; got {threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
