"""Equivariant linear maps as the null space of the Lie-derivative constraint (the paper's enforcement
recipe, Otto et al. 2023, section 4), solved numerically by SVD.

A linear map ``W`` that must commute with a group is a vector ``w`` in a finite-dimensional parameter
space; each generator ``X`` of the group's Lie algebra gives a linear constraint ``C_X w = 0`` (the Lie
derivative of the map), each discrete element (a reflection ``F``) gives ``C_F w = 0``. The equivariant
maps are the null space of the stacked matrix ``C = [C_X1; ...; C_F1; ...]``: right singular vectors
whose singular value is at most ``tol``. :class:`NullSpace` reports the singular values, the tolerance
and the gap (smallest kept-out singular value over largest null one), so an ill-separated spectrum is
visible instead of silently truncated.

Irreducible representations of SO(2) and O(2) (the hidden features of steerable layers), by label:

    ===== ====== ============================ =========================== ===================
    label dim    rho(rotation by theta)       d rho(J)                    rho(F), F = diag(1,-1)
    ===== ====== ============================ =========================== ===================
    "0"   1      1 (scalar, trivial)          0                           1
    "0-"  1      1 (pseudoscalar)             0                           -1
    "m"   2      [[cos m t, -sin m t],        m J, J = [[0,-1],[1,0]]     diag(1, -1)
                  [sin m t,  cos m t]]
    ===== ====== ============================ =========================== ===================

``"1"`` is the vector representation of :mod:`fieldsym.fields` (``d rho(J) = J``, counter-clockwise),
so a field type maps to irreps field by field: scalar -> ``"0"``, pseudoscalar -> ``"0-"``, vector ->
``"1"``. Under SO(2) ``"0-"`` is a second copy of the trivial irrep; only O(2) tells them apart. ``F``
is the reflection about the x axis (``y -> -y``, angle ``theta -> -theta``).

Two constraint families:

- **channel maps** ``W in Hom(rho_in, rho_out)`` (``(d_out, d_in)``):
  ``d rho_out(J) W - W d rho_in(J) = 0`` and, for O(2), ``rho_out(F) W rho_in(F)^-1 - W = 0``;
- **spectral kernels** ``W(theta) = sum_l a_l cos(l theta) + b_l sin(l theta)`` with ``a_l, b_l`` in
  ``Hom(rho_in, rho_out)``, the angular part of a Fourier-space kernel ``W(k)``, ``theta = atan2(k_y,
  k_x)``. Equivariance ``W(R k) rho_in(R) = rho_out(R) W(k)`` differentiated at ``R = exp(t J)`` gives

      d rho_out(J) W(theta) - W(theta) d rho_in(J) - dW/dtheta = 0,

  where ``d/dtheta`` acts on the harmonic coefficients as ``(a_l, b_l) -> (l b_l, -l a_l)``; for O(2),
  ``W(F k) rho_in(F) = rho_out(F) W(k)`` with ``F k`` at angle ``-theta`` gives
  ``rho_out(F) W(theta) rho_in(F)^-1 - W(-theta) = 0`` (``W(-theta)`` negates the ``b_l``). Neither
  constraint mixes different ``l``, so each harmonic order is solved on its own and every basis
  element has one order ``l`` (needed to make kernels of real fields real: odd ``l`` is odd in ``k``).

Bases are cached by irrep labels and sizes (:func:`functools.lru_cache`); callers get fresh copies.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Literal

import torch

from fieldsym.fields import FieldType

Group = Literal["SO2", "O2"]
GROUPS: tuple[str, ...] = ("SO2", "O2")
FIELD_IRREPS = {"scalar": "0", "pseudoscalar": "0-", "vector": "1"}
_LABEL = re.compile(r"^(0-|0|[1-9][0-9]*)$")


@dataclasses.dataclass(frozen=True)
class NullSpace:
    """Orthonormal null space of a stacked constraint matrix ``C`` (``(rows, dim)``).

    ``basis``: ``(n, *shape)``, the ``n`` null vectors reshaped to the parameter shape (orthonormal in
    the flattened inner product). ``singular_values``: all of ``C``'s, descending, padded with zeros to
    ``dim`` (a wide ``C`` has ``dim - rows`` zero directions for free). ``tol``: vectors with singular
    value ``<= tol`` were kept. ``gap``: smallest singular value above ``tol`` divided by the largest
    one at or below it (``inf`` when either side is empty); large means the split is unambiguous.
    """

    basis: torch.Tensor
    singular_values: torch.Tensor
    tol: float
    gap: float

    @property
    def dim(self) -> int:
        return self.basis.shape[0]


def null_space(C: torch.Tensor, shape: tuple[int, ...] | None = None, rtol: float = 1e-9) -> NullSpace:
    """Null space of ``C`` (``(rows, dim)``) by SVD, kept where ``s <= rtol * max(1, s_max)``.

    ``shape``: the parameter shape to give each basis vector (default ``(dim,)``).
    """
    if C.ndim != 2:
        raise ValueError(f"null_space needs a (rows, dim) constraint matrix, got shape {tuple(C.shape)}")
    C = C.to(torch.float64)
    rows, dim = C.shape
    shape = (dim,) if shape is None else tuple(shape)
    if dim == 0 or rows == 0:
        basis = torch.eye(dim, dtype=torch.float64).reshape(dim, *shape)
        return NullSpace(basis, torch.zeros(dim, dtype=torch.float64), 0.0, float("inf"))
    _, s, Vh = torch.linalg.svd(C, full_matrices=True)
    s_all = torch.cat([s, s.new_zeros(dim - s.numel())]) if s.numel() < dim else s
    tol = rtol * max(1.0, float(s_all.max()))
    null = s_all <= tol
    above, below = s_all[~null], s_all[null]
    if above.numel() and below.numel() and float(below.max()) > 0:
        gap = float(above.min() / below.max())
    else:
        gap = float("inf")
    basis = Vh[null].reshape(-1, *shape)
    return NullSpace(basis, s_all, tol, gap)


# -- irreducible representations ------------------------------------------------------------------


def irrep_dim(label: str) -> int:
    _check_label(label)
    return 1 if label in ("0", "0-") else 2


def irrep_frequency(label: str) -> int:
    """``m`` of the irrep (``0`` for ``"0"`` and ``"0-"``)."""
    _check_label(label)
    return 0 if label in ("0", "0-") else int(label)


def irrep_drho(label: str) -> torch.Tensor:
    """``d rho(J)``: ``(d, d)``, ``0`` for ``"0"``/``"0-"``, ``m J`` for ``"m"``."""
    if irrep_dim(label) == 1:
        return torch.zeros(1, 1, dtype=torch.float64)
    return irrep_frequency(label) * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)


def irrep_reflection(label: str) -> torch.Tensor:
    """``rho(F)`` for ``F = diag(1, -1)`` (``y -> -y``): ``(d, d)``."""
    _check_label(label)
    if label == "0":
        return torch.ones(1, 1, dtype=torch.float64)
    if label == "0-":
        return -torch.ones(1, 1, dtype=torch.float64)
    return torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))


def _check_label(label: str) -> None:
    if not isinstance(label, str) or not _LABEL.match(label):
        raise ValueError(
            f"unknown SO(2)/O(2) irrep {label!r}: expected '0' (scalar), '0-' (pseudoscalar) or a "
            "frequency m >= 1 written as '1', '2', ..."
        )


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")


@dataclasses.dataclass(frozen=True)
class Irreps:
    """A direct sum of irreps with multiplicities, channel layout of a hidden feature; round-trips
    through its string form ``"8x0 + 4x0- + 4x1 + 2x2"``.

    Channels: the blocks in order; a block ``mxL`` holds ``m`` copies of irrep ``L``, each copy
    ``irrep_dim(L)`` consecutive channels (x component first for 2-d irreps, as for vectors).
    """

    blocks: tuple[tuple[int, str], ...]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("Irreps needs at least one block, e.g. '8x0 + 4x1'")
        for mult, label in self.blocks:
            _check_label(label)
            if not isinstance(mult, int) or mult < 1:
                raise ValueError(f"multiplicity of irrep {label!r} must be a positive integer, got {mult!r}")

    @classmethod
    def parse(cls, text: str | Irreps) -> Irreps:
        if isinstance(text, Irreps):
            return text
        if not isinstance(text, str):
            raise TypeError(f"expected an irreps string like '8x0 + 4x1', got {type(text).__name__}")
        blocks = []
        for item in text.split("+"):
            item = item.strip()
            mult, sep, label = item.partition("x")
            if not sep:
                mult, label = "1", item
            if not mult.strip().isdigit():
                raise ValueError(f"cannot read irreps entry {item!r} in {text!r}: write e.g. '4x1'")
            blocks.append((int(mult), label.strip()))
        return cls(tuple(blocks))

    @classmethod
    def from_field_type(cls, field_type: FieldType | str) -> Irreps:
        """One copy per field, in channel order: scalar -> 0, pseudoscalar -> 0-, vector -> 1."""
        ft = FieldType.parse(field_type)
        return cls(tuple((1, FIELD_IRREPS[f.kind]) for f in ft))

    def __str__(self) -> str:
        return " + ".join(f"{m}x{label}" for m, label in self.blocks)

    @property
    def num_channels(self) -> int:
        return sum(m * irrep_dim(label) for m, label in self.blocks)

    @property
    def max_frequency(self) -> int:
        return max(irrep_frequency(label) for _, label in self.blocks)

    def slices(self) -> list[slice]:
        """Channel slice of every block."""
        out, start = [], 0
        for m, label in self.blocks:
            out.append(slice(start, start + m * irrep_dim(label)))
            start += m * irrep_dim(label)
        return out


# -- constraint matrices --------------------------------------------------------------------------


def _stack_operator(op: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a linear map on tensors of ``shape``: column ``i`` is ``op(e_i)`` flattened."""
    dim = 1
    for n in shape:
        dim *= n
    eye = torch.eye(dim, dtype=torch.float64).reshape(dim, *shape)
    return torch.stack([op(e).reshape(-1) for e in eye], dim=1) if dim else torch.zeros(0, 0)


def channel_constraint(out_label: str, in_label: str, group: Group) -> torch.Tensor:
    """``C`` acting on ``W`` (``(d_out, d_in)`` flattened): the SO(2) block, and the O(2) reflection block."""
    _check_group(group)
    A_out, A_in = irrep_drho(out_label), irrep_drho(in_label)
    blocks = [_stack_operator(lambda W: A_out @ W - W @ A_in, (irrep_dim(out_label), irrep_dim(in_label)))]
    if group == "O2":
        F_out, F_in = irrep_reflection(out_label), irrep_reflection(in_label)
        blocks.append(_stack_operator(lambda W: F_out @ W @ F_in.T - W, (F_out.shape[0], F_in.shape[0])))
    return torch.cat(blocks)


@functools.lru_cache(maxsize=None)
def _channel_basis(out_label: str, in_label: str, group: str) -> NullSpace:
    shape = (irrep_dim(out_label), irrep_dim(in_label))
    return null_space(channel_constraint(out_label, in_label, group), shape)  # type: ignore[arg-type]


def channel_basis(out_label: str, in_label: str, group: Group = "SO2") -> NullSpace:
    """Orthonormal basis ``(n, d_out, d_in)`` of ``Hom(rho_in, rho_out)`` under ``group``."""
    ns = _channel_basis(out_label, in_label, group)
    return dataclasses.replace(ns, basis=ns.basis.clone(), singular_values=ns.singular_values.clone())


def harmonic_derivative(L: int) -> torch.Tensor:
    """``(2L+1, 2L+1)`` matrix ``D`` of ``d/dtheta`` on coefficients ordered ``1, cos t, sin t, ...,
    cos Lt, sin Lt``: ``W = sum_h c_h phi_h`` has ``dW/dtheta = sum_h (D c)_h phi_h``."""
    D = torch.zeros(2 * L + 1, 2 * L + 1, dtype=torch.float64)
    for l in range(1, L + 1):
        c, s = 2 * l - 1, 2 * l
        D[s, c] = -l  # d/dt (a cos lt) = -l a sin lt
        D[c, s] = l  # d/dt (b sin lt) = l b cos lt
    return D


def harmonic_values(L: int, theta: torch.Tensor) -> torch.Tensor:
    """``(2L+1, *theta.shape)``: ``1, cos t, sin t, ..., cos Lt, sin Lt`` at the angles ``theta``."""
    out = [torch.ones_like(theta)]
    for l in range(1, L + 1):
        out += [torch.cos(l * theta), torch.sin(l * theta)]
    return torch.stack(out)


def spectral_constraint(out_label: str, in_label: str, L: int, group: Group) -> torch.Tensor:
    """``C`` acting on harmonic coefficients ``c`` (``(2L+1, d_out, d_in)`` flattened)."""
    return _spectral_constraint(out_label, in_label, list(range(2 * L + 1)), L, group)


def _spectral_constraint(out_label: str, in_label: str, rows: list[int], L: int, group: str) -> torch.Tensor:
    """The constraint restricted to the harmonics ``rows`` (a set closed under ``d/dtheta``)."""
    _check_group(group)
    A_out, A_in = irrep_drho(out_label), irrep_drho(in_label)
    D = harmonic_derivative(L)[rows][:, rows]
    shape = (len(rows), irrep_dim(out_label), irrep_dim(in_label))
    # h=harmonic, g=harmonic, o=out component, i=in component
    blocks = [_stack_operator(lambda c: A_out @ c - c @ A_in - torch.einsum("hg,goi->hoi", D, c), shape)]
    if group == "O2":
        F_out, F_in = irrep_reflection(out_label), irrep_reflection(in_label)
        # theta -> -theta negates the sin coefficients (odd positions 2l of the full list)
        parity = torch.tensor([-1.0 if (h > 0 and h % 2 == 0) else 1.0 for h in rows], dtype=torch.float64)
        parity = parity[:, None, None]
        blocks.append(_stack_operator(lambda c: F_out @ c @ F_in.T - parity * c, shape))
    return torch.cat(blocks)


@functools.lru_cache(maxsize=None)
def _spectral_basis(out_label: str, in_label: str, L: int, group: str) -> tuple[NullSpace, tuple[int, ...]]:
    d_out, d_in = irrep_dim(out_label), irrep_dim(in_label)
    bases, orders, singular, tol, gap = [], [], [], 0.0, float("inf")
    for l in range(L + 1):
        # The constraint maps order l to order l only: solve each order on its own.
        rows = [0] if l == 0 else [2 * l - 1, 2 * l]
        C_l = _spectral_constraint(out_label, in_label, rows, L, group)
        ns = null_space(C_l, (len(rows), d_out, d_in))
        embedded = torch.zeros(ns.dim, 2 * L + 1, d_out, d_in, dtype=torch.float64)
        embedded[:, rows] = ns.basis
        bases.append(embedded)
        orders += [l] * ns.dim
        singular.append(ns.singular_values)
        tol, gap = max(tol, ns.tol), min(gap, ns.gap)
    s = torch.sort(torch.cat(singular), descending=True).values
    return NullSpace(torch.cat(bases), s, tol, gap), tuple(orders)


def spectral_basis(out_label: str, in_label: str, L: int, group: Group = "SO2") -> tuple[NullSpace, tuple[int, ...]]:
    """Angular kernel basis ``B_n`` as harmonic coefficients ``(n, 2L+1, d_out, d_in)``, and the
    harmonic order ``l`` of every ``B_n``. Evaluate with ``einsum("nhoi,h...->n...oi", basis,
    harmonic_values(L, theta))`` (n=basis, h=harmonic, o/i=out/in component)."""
    if not isinstance(L, int) or L < 0:
        raise ValueError(f"the harmonic cut-off L must be an integer >= 0, got {L!r}")
    _check_label(out_label)
    _check_label(in_label)
    ns, orders = _spectral_basis(out_label, in_label, L, group)
    return dataclasses.replace(ns, basis=ns.basis.clone(), singular_values=ns.singular_values.clone()), orders
