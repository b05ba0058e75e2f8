"""Uniform 2-D grids: coordinates, periodicity, derivatives, windows and quadrature.

Arrays are ``(..., H, W)``; axis ``H`` is ``y`` and axis ``W`` is ``x``; per-axis tuples are in array
order ``(y, x)``. A periodic axis of ``N`` cells covers ``[x0, x0 + N dx)``; a non-periodic axis has
``N`` nodes ``x0 .. x0 + (N - 1) dx`` including both ends. The *centre* about which rotations and
dilations act is the domain centre: ``x0 + N dx / 2`` on a periodic axis, ``x0 + (N - 1) dx / 2``
otherwise — the same centre as the exact lattice actions of :mod:`fieldsym.fields`.

Derivatives are spectral on periodic axes (exact for band-limited fields; the Nyquist mode of an odd
derivative is dropped because it has no real derivative) and 4th-order finite differences otherwise
(centred inside, one-sided 4th-order stencils at the two nodes next to each end), so the Lie derivative
of a smooth operator converges at a known rate.
"""

from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class Grid:
    """``shape=(H, W)``, ``spacing=(dy, dx)``, ``origin=(y0, x0)``, ``periodic=(py, px)``."""

    shape: tuple[int, int]
    spacing: tuple[float, float]
    origin: tuple[float, float] = (0.0, 0.0)
    periodic: tuple[bool, bool] = (True, True)

    def __post_init__(self) -> None:
        for name, value in (("shape", self.shape), ("spacing", self.spacing), ("origin", self.origin),
                            ("periodic", self.periodic)):
            if len(value) != 2:
                raise ValueError(f"Grid.{name} needs two entries in (y, x) order, got {value!r}")
        if min(self.shape) < 1 or min(self.spacing) <= 0:
            raise ValueError(f"Grid needs positive shape and spacing, got {self.shape}, {self.spacing}")
        for n, per in zip(self.shape, self.periodic):
            if not per and n < 5:
                raise ValueError(f"a non-periodic axis needs >= 5 nodes for 4th-order differences, got {n}")

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def regular(cls, shape: int | tuple[int, int], periodic: bool | tuple[bool, bool] = True,
                extent: float = 1.0) -> Grid:
        """The unit square (or ``[0, extent]^2``): periodic ``x_j = j L / N``, else ``x_j = j L / (N - 1)``."""
        H, W = (shape, shape) if isinstance(shape, int) else shape
        py, px = (periodic, periodic) if isinstance(periodic, bool) else periodic
        dy = extent / (H if py else H - 1)
        dx = extent / (W if px else W - 1)
        return cls((H, W), (dy, dx), (0.0, 0.0), (bool(py), bool(px)))

    @classmethod
    def from_coords(cls, y, x, periodic: tuple[bool, bool], rtol: float = 1e-4) -> Grid:
        """A grid from 1-D coordinate arrays; raises if they are not uniform and increasing."""
        spacing, origin = [], []
        for name, c in (("y", y), ("x", x)):
            c = torch.as_tensor(c, dtype=torch.float64).reshape(-1)
            if c.numel() < 2:
                raise ValueError(f"coordinate {name} needs at least 2 points, got {c.numel()}")
            d = torch.diff(c)
            step = float(c[-1] - c[0]) / (c.numel() - 1)
            worst = float((d - step).abs().max())
            # Coordinates stored in float32 are rounded to ~1e-7 of their largest value, whatever the step.
            allowance = rtol * abs(step) + 4 * torch.finfo(torch.float32).eps * float(c.abs().max())
            if step <= 0 or worst > allowance:
                raise ValueError(
                    f"coordinate {name} is not uniform and increasing: spacing varies from "
                    f"{float(d.min()):.6g} to {float(d.max()):.6g}; fieldsym needs a uniform grid "
                    f"(resample the data onto one)"
                )
            spacing.append(step)
            origin.append(float(c[0]))
        return cls((len(y), len(x)), tuple(spacing), tuple(origin), tuple(periodic))  # type: ignore[arg-type]

    # -- coordinates ---------------------------------------------------------------------------------

    @property
    def centre(self) -> tuple[float, float]:
        """``(cy, cx)``, the point rotations and dilations act about."""
        return tuple(  # type: ignore[return-value]
            o + (n if per else n - 1) * d / 2
            for o, n, d, per in zip(self.origin, self.shape, self.spacing, self.periodic)
        )

    def axis(self, which: str, dtype=torch.float64, device=None) -> torch.Tensor:
        i = _axis_index(which)
        return self.origin[i] + self.spacing[i] * torch.arange(self.shape[i], dtype=dtype, device=device)

    def coords(self, dtype=torch.float64, device=None, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, Y)`` of shape ``(H, W)``; with ``centred`` measured from :attr:`centre`."""
        y = self.axis("y", dtype, device)
        x = self.axis("x", dtype, device)
        if centred:
            cy, cx = self.centre
            y, x = y - cy, x - cx
        Y, X = torch.meshgrid(y, x, indexing="ij")
        return X, Y

    def quadrature_weights(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """``(H, W)`` weights of the (trapezoidal on non-periodic axes) rule; they sum to the area."""
        ws = []
        for i in range(2):
            w = torch.full((self.shape[i],), self.spacing[i], dtype=dtype, device=device)
            if not self.periodic[i]:
                w[0] = w[-1] = self.spacing[i] / 2
            ws.append(w)
        return ws[0][:, None] * ws[1][None, :]

    def window(self, margin: float = 0.15, dtype=torch.float64, device=None) -> torch.Tensor:
        """Smooth ``(H, W)`` window: 1 in the interior, 0 within ``margin`` (fraction of the half-width)
        of the boundary or seam, C-infinity in between (product of 1-D ``exp(-1/t)`` smooth steps)."""
        X, Y = self.coords(dtype, device, centred=True)
        out = torch.ones_like(X)
        for c, i in ((Y, 0), (X, 1)):
            half = (self.shape[i] if self.periodic[i] else self.shape[i] - 1) * self.spacing[i] / 2
            s = c.abs() / half  # 0 at the centre, 1 at the boundary
            out = out * _smooth_step((1 - margin - s) / margin)
        return out

    def check(self, u: torch.Tensor, what: str = "field") -> None:
        if tuple(u.shape[-2:]) != tuple(self.shape):
            raise ValueError(f"{what} has grid {tuple(u.shape[-2:])} but the grid is {self.shape} (H, W)")

    # -- derivatives ---------------------------------------------------------------------------------

    def derivative(self, u: torch.Tensor, which: str, order: int = 1) -> torch.Tensor:
        """``d^order u / d which^order`` along ``which`` in ``{"x", "y"}`` of ``u`` ``(..., H, W)``."""
        i = _axis_index(which)
        self.check(u)
        dim = u.ndim - 2 + i
        if self.periodic[i]:
            return _spectral_derivative(u, dim, self.spacing[i], order)
        for _ in range(order):
            u = _fd4_derivative(u, dim, self.spacing[i])
        return u

    def gradient(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(du/dx, du/dy)``."""
        return self.derivative(u, "x"), self.derivative(u, "y")


def _axis_index(which: str) -> int:
    if which not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {which!r}")
    return 0 if which == "y" else 1


def _smooth_step(t: torch.Tensor) -> torch.Tensor:
    """0 for t <= 0, 1 for t >= 1, C-infinity in between."""
    def f(s):
        return torch.where(s > 0, torch.exp(-1 / s.clamp_min(1e-12)), torch.zeros_like(s))
    return f(t) / (f(t) + f(1 - t))


def _spectral_derivative(u: torch.Tensor, dim: int, dx: float, order: int) -> torch.Tensor:
    n = u.shape[dim]
    k = 2 * math.pi * torch.fft.rfftfreq(n, d=dx, dtype=u.dtype if u.is_floating_point() else None,
                                          device=u.device)
    mult = (1j * k) ** order
    if n % 2 == 0 and order % 2 == 1:
        mult[-1] = 0  # the Nyquist mode of an odd derivative has no real value
    shape = [1] * u.ndim
    shape[dim] = k.numel()
    uh = torch.fft.rfft(u, dim=dim)
    return torch.fft.irfft(uh * mult.reshape(shape), n=n, dim=dim)


def _fd4_derivative(u: torch.Tensor, dim: int, dx: float) -> torch.Tensor:
    n = u.shape[dim]

    def s(a, b=None):
        return u.narrow(dim, a, (b if b is not None else n) - a)

    interior = (-s(4) + 8 * s(3, n - 1) - 8 * s(1, n - 3) + s(0, n - 4)) / (12 * dx)
    u0, u1, u2, u3, u4 = (u.narrow(dim, j, 1) for j in range(5))
    v0, v1, v2, v3, v4 = (u.narrow(dim, n - 1 - j, 1) for j in range(5))
    first = (-25 * u0 + 48 * u1 - 36 * u2 + 16 * u3 - 3 * u4) / (12 * dx)
    second = (-3 * u0 - 10 * u1 + 18 * u2 - 6 * u3 + u4) / (12 * dx)
    before_last = (3 * v0 + 10 * v1 - 18 * v2 + 6 * v3 - v4) / (12 * dx)
    last = (25 * v0 - 48 * v1 + 36 * v2 - 16 * v3 + 3 * v4) / (12 * dx)
    return torch.cat([first, second, interior, before_last, last], dim=dim)
