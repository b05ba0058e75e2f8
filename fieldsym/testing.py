"""Public test helpers: check that your own operator has the symmetry you think it has.

    >>> from fieldsym.testing import assert_equivariant
    >>> assert_equivariant(model, "u:vector", "u:vector", "C4")  # doctest: +SKIP

Checks run in float64 by default (the operator is converted with ``.double()`` when it is an
``nn.Module``; pass ``dtype=torch.float32`` to check the model as it is). Tolerances come from
:data:`TOLERANCES` by dtype: exact lattice symmetries should hold to rounding, so float64 allows
``1e-10`` relative and float32 ``1e-5``. Lie derivatives of continuous symmetries are discretised and
get an explicit ``tol`` instead (see :mod:`fieldsym.lie` for what they mean on a periodic box).

:func:`low_pass_dataset` writes a small schema-1 file of a map with every symmetry of the grid, for
checking that training and an experiment pipeline run end to end before generating PDE data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import FiniteGroup, Generator, algebra, finite_group
from fieldsym.lie import Method, equivariance_errors, lie_derivative_errors

TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5}


def smooth_random_field(field_type: FieldType | str, grid: Grid, batch: int = 2, max_mode: int = 4,
                        localized: bool = True, seed: int = 0, dtype=torch.float64,
                        width: float = 0.08) -> torch.Tensor:
    """Random smooth field ``(batch, C, H, W)``: a Fourier series with ``|k| <= max_mode`` (in cycles
    per domain), times a Gaussian envelope ``exp(-|x - c|^2 / (2 (width L)^2))`` when ``localized``.

    With ``width = 0.08`` the envelope is ``3e-9`` at the seam (so continuous rotations and dilations
    are meaningful on a periodic box) and its spectrum is ``1e-14`` at the Nyquist mode of a 32-point
    grid, so spectral derivatives stay exact to rounding from 32 points up."""
    ft = FieldType.parse(field_type)
    gen = torch.Generator().manual_seed(seed)
    X, Y = grid.coords(dtype, centred=True)
    Ly = grid.shape[0] * grid.spacing[0]
    Lx = grid.shape[1] * grid.spacing[1]
    out = torch.zeros(batch, ft.num_channels, *grid.shape, dtype=dtype)
    for kx in range(-max_mode, max_mode + 1):
        for ky in range(0, max_mode + 1):
            if kx * kx + ky * ky > max_mode * max_mode:
                continue
            phase = 2 * math.pi * (kx * X / Lx + ky * Y / Ly)
            c = torch.randn(2, batch, ft.num_channels, 1, 1, generator=gen, dtype=dtype)
            c = c / (1 + kx * kx + ky * ky)
            out = out + c[0] * torch.cos(phase) + c[1] * torch.sin(phase)
    if localized:
        L = min(Lx, Ly)
        out = out * torch.exp(-(X**2 + Y**2) / (2 * (width * L) ** 2))
    return out


def _as_double(op):
    if isinstance(op, torch.nn.Module):
        return copy.deepcopy(op).double().eval()
    return op


def assert_equivariant(op, in_type: FieldType | str, out_type: FieldType | str, group: FiniteGroup | str,
                       u: torch.Tensor | None = None, grid: Grid | None = None,
                       dtype: torch.dtype = torch.float64, rtol: float | None = None) -> dict[str, float]:
    """Assert ``||F(g.u) - g.F(u)|| / ||F(u)|| <= rtol`` for every element ``g`` of ``group``.

    ``group``: ``"C4"``, ``"D4"`` or a :class:`~fieldsym.groups.FiniteGroup` (e.g.
    :func:`~fieldsym.groups.shifts`). ``u``: inputs ``(B, C_in, H, W)``; random smooth fields on ``grid``
    (default: periodic 16 x 16) if omitted. Returns the errors by element name.
    """
    in_type, out_type = FieldType.parse(in_type), FieldType.parse(out_type)
    group = finite_group(group) if isinstance(group, str) else group
    grid = grid or Grid.regular(16 if u is None else tuple(u.shape[-2:]))
    if u is None:
        u = smooth_random_field(in_type, grid, localized=False, dtype=dtype)
    u = u.to(dtype)
    op = _as_double(op) if dtype == torch.float64 else op
    tol = rtol if rtol is not None else TOLERANCES[dtype]
    errors = equivariance_errors(op, u, group, in_type, out_type, grid.periodic)
    _fail_above(errors, tol, lambda detail: (
        f"operator {in_type} -> {out_type} is not {group.name}-equivariant to rtol {tol:g} "
        f"({dtype}): relative error ||F(g.u) - g.F(u)|| / ||F(u)|| = {detail}"))
    return errors


def assert_lie_derivative_small(op, in_type: FieldType | str, out_type: FieldType | str,
                                generators: str | Sequence[str | Generator], u: torch.Tensor, grid: Grid,
                                tol: float, method: Method = "jvp", window: torch.Tensor | None = None,
                                dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Assert the relative Lie derivative error of every generator is ``<= tol`` (see
    :func:`fieldsym.lie.lie_derivative_errors`). Returns the errors by generator name."""
    in_type, out_type = FieldType.parse(in_type), FieldType.parse(out_type)
    gens = algebra(generators, in_type) if isinstance(generators, str) else algebra(list(generators), in_type)
    op = _as_double(op) if dtype == torch.float64 else op
    errors = lie_derivative_errors(op, u.to(dtype), gens, in_type, out_type, grid, method, window)
    _fail_above(errors, tol, lambda detail: (
        f"operator {in_type} -> {out_type} has a Lie derivative above tol {tol:g}: {detail} "
        f"(relative ||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||))"))
    return errors


def _fail_above(errors: dict[str, float], tol: float, message) -> None:
    """Raise ``AssertionError(message(detail))`` naming every entry above ``tol`` (NaN counts as above)."""
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        raise AssertionError(message(", ".join(f"{k}: {v:.3g}" for k, v in bad.items())))


def low_pass_dataset(path: str | Path, samples: int, size: int, field: str = "scalar", name: str = "u",
                     width: float = 8.0, source: str = "fieldsym.testing.low_pass_dataset") -> Path:
    """Write a schema-1 file: ``name`` (a ``"scalar"`` or ``"vector"`` field) at time 0 is smooth random
    (spectrum ``exp(-|k|^2 / width)``, ``k`` in cycles per domain), at time 1 the same fields low-pass
    filtered by ``exp(-2 |k|^2 / width)``: a linear map that commutes with translations, rotations and
    reflections, which an FNO learns in a few steps. Periodic ``size`` x ``size`` grid, seed 0."""
    from fieldsym.data.writer import FieldSpec, write_dataset  # (data I/O only here: the checks above need none)

    if field not in ("scalar", "vector"):
        raise ValueError(f"low_pass_dataset: field must be 'scalar' or 'vector', got {field!r}")
    rng = np.random.default_rng(0)
    k = np.fft.fftfreq(size, 1 / size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    shape = (samples, size, size) if field == "scalar" else (samples, 2, size, size)
    smooth = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * np.exp(-k2 / width)).real
    filtered = np.fft.ifft2(np.fft.fft2(smooth) * np.exp(-2 * k2 / width)).real
    values = np.stack([smooth, filtered], axis=1).astype(np.float32)  # (sample, time, [component,] y, x)
    x = np.arange(size) / size
    return write_dataset(path, {name: FieldSpec(values, field, "1", name)}, x=x, y=x, time=np.arange(2.0),
                         periodic=True, pde="low-pass filter", parameters={}, seed=0, title="low-pass filter data",
                         source=source)
