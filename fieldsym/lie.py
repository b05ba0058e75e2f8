"""Generator action on typed fields, the Lie derivative of an operator, and equivariance errors.

For a generator ``xi = (a, beta)`` (:mod:`fieldsym.groups`) and a field ``u`` of type ``T``:

    (xi.u)(x) = d rho_T(a) u(x) - Du(x) (a (x - c) + beta)  [+ P u(x) for fiber scalings]

and for an operator ``F`` from fields of type ``T_in`` to fields of type ``T_out``:

    (L_xi F)(u) = DF(u)[xi.u] - xi.F(u)

which vanishes for every ``xi`` of a basis iff ``F`` is equivariant under the connected group they
generate (DESIGN.md section 1). ``DF(u)[v]`` is one Jacobian-vector product (``torch.func.jvp``) or a
central finite difference ``(F(u + e v) - F(u - e v)) / 2e`` (error ``O(e^2)``), or the one-sided
``(F(u + e v) - F(u)) / e`` (``"fd1"``, error ``O(e)``) that reuses an ``F(u)`` the caller already has
(the training loss computed it), the cheapest option for a penalty. All generators are done
in one call of ``F`` by stacking them along the batch axis: ``F`` must treat batch entries
independently (no batch norm in training mode).

Continuous rotations and dilations do not preserve a periodic box: ``a (x - c)`` jumps at the seam, so
their Lie derivative is meaningful only for fields that vanish near the seam (pass ``window`` to weigh
the interior; see :meth:`fieldsym.grid.Grid.window`). Windowing the *output* is not enough for a
non-local operator (an FNO): ``xi.u`` of a field that fills the box jumps at the seam, and the operator
spreads that jump over the whole output. :func:`localize` makes inputs that vanish near the seam (an
exactly rotation-equivariant SteerableFNO shows a rotation error of 0.03 on raw Navier-Stokes
vorticity and 0.006 on the same fields localised). Errors reported (DESIGN.md section 1):

- continuous, per generator: ``||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||)``;
- discrete, per group element: ``||F(g.u) - g.F(u)|| / ||F(u)||``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from fieldsym.fields import FieldType
from fieldsym.grid import Grid, _smooth_step
from fieldsym.groups import FiniteGroup, Generator, GroupElement

Operator = Callable[[torch.Tensor], torch.Tensor]
Method = Literal["jvp", "fd", "fd1"]

# Relative step of the central difference, by dtype: truncation O(step^2) against rounding eps/step.
FD_STEP = {torch.float64: 1e-4, torch.float32: 1e-2, torch.bfloat16: 1e-1, torch.float16: 1e-1}


LOCALIZE_RADIUS = 0.4  # of the shorter side: the bump is exactly 0 from there to the seam (at 0.5)


def needs_localizing(generators: Sequence[Generator], grid: Grid, u: torch.Tensor | None = None,
                     tol: float = 1e-3) -> bool:
    """Whether continuous errors of ``generators`` on ``grid`` need :func:`localize` d inputs: one of them
    rotates or dilates (a linear part), an axis is periodic and (when ``u`` is given) ``u`` varies near
    the seam: where the grid's interior window is 0 it departs from its mean there by more than ``tol``
    of its largest departure anywhere. Inputs that already vanish there are used as they are (localising
    them again would shrink the probed region to the centre, where e.g. a smooth shear looks
    dilation-invariant)."""
    if not (any(g.has_linear_part for g in generators) and any(grid.periodic)):
        return False
    if u is None:
        return True
    outside = (grid.window(dtype=u.dtype, device=u.device) == 0).to(u.dtype)  # the seam band
    level = (u * outside).sum(dim=(-2, -1), keepdim=True) / outside.sum()  # the field's value near the seam
    fluctuation = (u - level).abs()
    return bool((fluctuation * outside).amax() > tol * fluctuation.amax())


def localize(u: torch.Tensor, grid: Grid, radius: float = LOCALIZE_RADIUS) -> torch.Tensor:
    """``m + (u - m) g``: ``u`` ``(..., C, H, W)`` around its per-channel spatial mean ``m``, times a radial
    C-infinity bump ``g`` that is 1 at the centre and exactly 0 from ``radius`` (fraction of the shorter
    side) outwards: ``g = step(1 - |x - c| / (radius L))`` with the smooth step of
    :meth:`fieldsym.grid.Grid.window`.

    An equivariant operator has zero Lie derivative at *every* input, so any smooth input is a valid
    probe; this one is constant near the seam, where ``a (x - c)`` jumps, and keeps the data's scales in
    the centre (half its amplitude at ``0.17 L`` for ``radius = 0.4``). Keeping the mean keeps the inputs
    where a trained operator saw data (e.g. a background temperature)."""
    X, Y = grid.coords(u.dtype, u.device, centred=True)
    L = min(grid.shape[0] * grid.spacing[0], grid.shape[1] * grid.spacing[1])
    g = _smooth_step(1 - torch.sqrt(X**2 + Y**2) / (radius * L))
    m = u.mean(dim=(-2, -1), keepdim=True)
    return m + (u - m) * g


def generator_action(u: torch.Tensor, generator: Generator, field_type: FieldType | str, grid: Grid) -> torch.Tensor:
    """``xi.u`` for ``u`` of shape ``(..., C, H, W)``; same shape out."""
    ft = FieldType.parse(field_type)
    ft.check(u)
    grid.check(u)
    a = generator.matrix(u.dtype).to(u.device)
    out = torch.zeros_like(u)
    if bool(a.any()):
        # c=out channel, d=in channel
        out = out + torch.einsum("cd,...dhw->...chw", ft.drho(a).to(u), u)
    if generator.moves_base:
        X, Y = grid.coords(u.dtype, u.device, centred=True)
        beta = generator.beta
        vx = a[0, 0] * X + a[0, 1] * Y + beta[0]
        vy = a[1, 0] * X + a[1, 1] * Y + beta[1]
        ux, uy = grid.gradient(u)
        out = out - (ux * vx + uy * vy)
    if generator.fiber:
        out = out + torch.einsum("cd,...dhw->...chw", ft.fiber_projector(generator.fiber).to(u), u)
    return out


def interior_window(generators: Sequence[Generator], grid: Grid, margin: float = 0.15, dtype=torch.float64,
                    device=None) -> torch.Tensor | float:
    """The weight for Lie derivatives of ``generators`` on ``grid``: :meth:`Grid.window` when one of them has
    a linear part (rotation, dilation, shear) and an axis is periodic — ``a (x - c)`` jumps at the seam —
    else ``1``."""
    if any(g.has_linear_part for g in generators) and any(grid.periodic):
        return grid.window(margin, dtype=dtype, device=device)
    return 1


def generator_actions(u: torch.Tensor, generators: Sequence[Generator], field_type, grid: Grid) -> torch.Tensor:
    """``(k, ...)``: :func:`generator_action` of every generator, stacked on a new leading axis."""
    return torch.stack([generator_action(u, g, field_type, grid) for g in generators])


def lie_derivative_terms(
    op: Operator,
    u: torch.Tensor,
    generators: Sequence[Generator],
    in_type: FieldType | str,
    out_type: FieldType | str,
    grid: Grid,
    method: Method = "jvp",
    fd_step: float | None = None,
    Fu: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(DF(u)[xi.u], xi.F(u))`` for every generator, each ``(k, B, C_out, H, W)``.

    ``u``: ``(B, C_in, H, W)``. ``method``: ``"jvp"`` (exact, one forward-mode pass over the ``k * B``
    stacked tangents), ``"fd"`` (central difference, one pass over ``(2 k + 1) B`` inputs) or ``"fd1"``
    (one-sided, one pass over ``k B`` inputs plus ``F(u)``, taken from ``Fu`` when given); relative
    step ``fd_step`` defaulting to :data:`FD_STEP` of the dtype. Differentiable, so it can be a penalty.
    """
    in_type, out_type = FieldType.parse(in_type), FieldType.parse(out_type)
    if u.ndim != 4:
        raise ValueError(f"lie_derivative needs u of shape (batch, channel, H, W), got {tuple(u.shape)}")
    if not generators:
        raise ValueError("lie_derivative needs at least one generator")
    k, B = len(generators), u.shape[0]
    tangents = generator_actions(u, generators, in_type, grid)  # (k, B, C, H, W)
    flat_t = tangents.reshape(k * B, *u.shape[1:])
    stacked_u = u.repeat(k, 1, 1, 1)  # generator-major: k blocks of the batch
    if method == "jvp":
        y, dy = torch.func.jvp(op, (stacked_u,), (flat_t,))
        Fu = y[:B]
    elif method in ("fd", "fd1"):
        step = fd_step if fd_step is not None else FD_STEP.get(u.dtype, 1e-2)
        # Scale each tangent so the perturbation is `step` relative to u, whatever the generator's size.
        t_rms = flat_t.reshape(k * B, -1).pow(2).mean(1).sqrt()
        u_rms = stacked_u.reshape(k * B, -1).pow(2).mean(1).sqrt()
        # A zero tangent (e.g. an all-zero sample) gets a zero perturbation and so a zero derivative, not 0/0.
        ratio = torch.where(t_rms > 0, u_rms / t_rms.clamp_min(torch.finfo(u.dtype).tiny), torch.ones_like(u_rms))
        eps = (step * ratio.clamp_max(torch.finfo(u.dtype).max / 4)).reshape(-1, 1, 1, 1).detach()
        eps = torch.where(eps > 0, eps, torch.ones_like(eps))  # u = 0 too: any step gives the exact zero
        if method == "fd":
            out = op(torch.cat([u, stacked_u + eps * flat_t, stacked_u - eps * flat_t]))
            Fu, plus, minus = out[:B], out[B:B + k * B], out[B + k * B:]
            dy = (plus - minus) / (2 * eps)
        else:
            if Fu is None:
                out = op(torch.cat([u, stacked_u + eps * flat_t]))
                Fu, plus = out[:B], out[B:]
            else:
                plus = op(stacked_u + eps * flat_t)
            dy = (plus - Fu.repeat(k, 1, 1, 1)) / eps
    else:
        raise ValueError(f"method must be 'jvp', 'fd' or 'fd1', got {method!r}")
    out_type.check(Fu, "operator output")
    dF = dy.reshape(k, *Fu.shape)
    xiF = generator_actions(Fu, generators, out_type, grid)
    return dF, xiF


def lie_derivative(op: Operator, u: torch.Tensor, generators: Sequence[Generator], in_type, out_type,
                   grid: Grid, method: Method = "jvp", fd_step: float | None = None) -> torch.Tensor:
    """``(L_xi F)(u) = DF(u)[xi.u] - xi.F(u)`` for every generator: ``(k, B, C_out, H, W)``."""
    dF, xiF = lie_derivative_terms(op, u, generators, in_type, out_type, grid, method, fd_step)
    return dF - xiF


def lie_derivative_errors(op: Operator, u: torch.Tensor, generators: Sequence[Generator], in_type, out_type,
                          grid: Grid, method: Method = "jvp", window: torch.Tensor | None = None) -> dict[str, float]:
    """Relative error ``||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||)`` per generator name.

    ``window``: optional ``(H, W)`` weight (e.g. ``grid.window()``) so only the interior counts.
    """
    with torch.no_grad():
        dF, xiF = lie_derivative_terms(op, u, generators, in_type, out_type, grid, method)
    w = 1 if window is None else window.to(dF)
    out = {}
    for i, g in enumerate(generators):
        num = torch.linalg.vector_norm((dF[i] - xiF[i]) * w)
        den = torch.linalg.vector_norm(dF[i] * w) + torch.linalg.vector_norm(xiF[i] * w)
        out[g.name] = float(num / den.clamp_min(torch.finfo(dF.dtype).tiny))
    return out


def flow(u: torch.Tensor, generator: Generator, t: float, field_type, grid: Grid, steps: int = 200) -> torch.Tensor:
    """``exp(t xi).u`` by integrating ``du/ds = xi.u`` with classical RK4 (``steps`` steps).

    Exact in time to ``O((t/steps)^4)`` and in space to the grid's derivative order, for fields that
    stay away from the seam of a periodic box. Used to pin down sign conventions: the flow of ``R``
    for ``pi/2`` must equal the counter-clockwise quarter turn.
    """
    h = t / steps

    def f(v):
        return generator_action(v, generator, field_type, grid)

    for _ in range(steps):
        k1 = f(u)
        k2 = f(u + h / 2 * k1)
        k3 = f(u + h / 2 * k2)
        k4 = f(u + h * k3)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return u


def equivariance_error(op: Operator, u: torch.Tensor, element: GroupElement, in_type, out_type,
                       periodic: tuple[bool, bool] = (True, True)) -> float:
    """``||F(g.u) - g.F(u)|| / ||F(u)||`` for one exact lattice symmetry ``g``."""
    with torch.no_grad():
        Fu = op(u)
        lhs = op(element.act(u, in_type, periodic))
        rhs = element.act(Fu, out_type, periodic)
        den = torch.linalg.vector_norm(Fu).clamp_min(torch.finfo(Fu.dtype).tiny)
        return float(torch.linalg.vector_norm(lhs - rhs) / den)


def equivariance_errors(op: Operator, u: torch.Tensor, group: FiniteGroup, in_type, out_type,
                        periodic: tuple[bool, bool] = (True, True)) -> dict[str, float]:
    """:func:`equivariance_error` for every element of ``group``, by element name."""
    return {g.name: equivariance_error(op, u, g, in_type, out_type, periodic) for g in group}
