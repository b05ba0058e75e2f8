"""The point groups C4 and D4 as tables, and the pointwise equivariant linear maps of the G-FNO.

Hidden features of a group-equivariant operator live in the *regular representation*: ``c`` channels,
each with one copy per group element, stored ``(batch, c, |G|, H, W)``. An element ``g`` acts by

    (g.h)[:, :, k](x) = h[:, :, g^-1 k](A_g^-1 x)            (permute the copies, move the grid)

so any pointwise nonlinearity commutes with it. The linear maps between typed fields (``rho_in``,
``rho_out`` from :meth:`FieldType.rho`) and regular features must satisfy the intertwiner constraint
``K rho_in(g) = rho_reg(g) K``. We do not solve it numerically: the group average
``K = 1/|G| sum_g rho_reg(g)^-1 K0 rho_in(g)`` of a ``K0`` that only writes into the identity copy
(for the projection: only reads it) gives every solution exactly once (Frobenius reciprocity:
``Hom_G(V, regular) = Hom(V, R)``), in closed form, with no redundant parameters and no SVD
tolerance; ``tests/test_models_gfno.py`` checks that these maps span the numerical null space of the
constraint. The closed forms:

    lift     typed -> regular    (L u)_k = K0 rho_in(A_k)^-1 u               K0: (c_out, C_in)
    project  regular -> typed    P h     = sum_k rho_out(A_k) P0 h_k         P0: (C_out, c_in)
    mix      regular -> regular  (M h)_k = sum_m w(k^-1 m) h_m               w:  (c_out, c_in, |G|)

A bias must be invariant: per channel (shared by the copies) on regular features, and
``1/|G| sum_g rho_out(g) b0`` on typed outputs (zero for D4 on pseudoscalars and vectors).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fieldsym.fields import D4_MATRICES, FieldType, lattice_transform

GROUP_ELEMENTS: dict[str, tuple[str, ...]] = {
    "C4": ("e", "r1", "r2", "r3"),
    "D4": tuple(D4_MATRICES),
}


class PointGroup:
    """C4 or D4 as matrices ``A_g`` acting on ``(x, y)`` plus its multiplication table.

    ``matrices``: ``(|G|, 2, 2)`` float64; ``product[a, b]`` is the index of ``A_a A_b``;
    ``inverse[a]`` the index of ``A_a^-1``; ``quotient[k, m]`` the index of ``k^-1 m``.
    """

    def __init__(self, name: str) -> None:
        if name not in GROUP_ELEMENTS:
            raise ValueError(
                f"unknown point group {name!r}: expected one of {', '.join(GROUP_ELEMENTS)} "
                "(quarter turns, or quarter turns and axis/diagonal reflections)"
            )
        self.name = name
        self.element_names = GROUP_ELEMENTS[name]
        self.matrices = torch.tensor([D4_MATRICES[n] for n in self.element_names], dtype=torch.float64)
        keys = [tuple(A.flatten().tolist()) for A in self.matrices]
        self.product = torch.tensor(
            [[keys.index(tuple((A @ B).flatten().tolist())) for B in self.matrices] for A in self.matrices]
        )
        self.inverse = torch.tensor([keys.index(tuple(A.T.flatten().tolist())) for A in self.matrices])
        self.quotient = self.product[self.inverse]

    def __len__(self) -> int:
        return len(self.element_names)

    def rho(self, field_type: FieldType, inverse: bool = False) -> torch.Tensor:
        """``(|G|, C, C)``: ``rho(A_g)`` (or ``rho(A_g)^-1``) of every element, float64."""
        return torch.stack([field_type.rho(A.T if inverse else A) for A in self.matrices])

    def act_regular(self, h: torch.Tensor, g: int, periodic=(True, True)) -> torch.Tensor:
        """``(g.h)[:, :, k](x) = h[:, :, g^-1 k](A_g^-1 x)`` on ``h`` of shape ``(..., |G|, H, W)``."""
        copies = self.product[self.inverse[g]]  # k -> g^-1 k
        return lattice_transform(h[..., copies, :, :], self.matrices[g], periodic=periodic)


class Lift(nn.Module):
    """Typed field -> ``c_out`` regular channels: ``(b, C_in, H, W) -> (b, c_out, |G|, H, W)``."""

    def __init__(self, group: PointGroup, in_type: FieldType, c_out: int) -> None:
        super().__init__()
        self.c_out, self.n = c_out, len(group)
        self.register_buffer("rho_inv", group.rho(in_type, inverse=True).float(), persistent=False)
        self.weight = nn.Parameter(_uniform((c_out, in_type.num_channels)))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def matrix(self) -> torch.Tensor:
        """``(c_out |G|, C_in)``, rows ``(o, k)`` o-major: ``K0 rho_in(A_k)^-1`` stacked over ``k``."""
        # o=out channel, k=copy, e,d=typed channels
        return torch.einsum("oe,ked->okd", self.weight, self.rho_inv.to(self.weight.dtype)).flatten(0, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # A 1x1 convolution is the fastest pointwise matmul on CPU (twice einsum's speed).
        h = F.conv2d(u, self.matrix()[:, :, None, None], self.bias[:, None].expand(-1, self.n).flatten())
        return h.unflatten(1, (self.c_out, self.n))


class Project(nn.Module):
    """``c_in`` regular channels -> typed field: ``(b, c_in, |G|, H, W) -> (b, C_out, H, W)``."""

    def __init__(self, group: PointGroup, c_in: int, out_type: FieldType) -> None:
        super().__init__()
        rho = group.rho(out_type)
        self.register_buffer("rho_out", rho.float(), persistent=False)
        self.register_buffer("bias_projector", rho.mean(0).float(), persistent=False)
        # fan-in c_in |G|
        self.weight = nn.Parameter(_uniform((out_type.num_channels, c_in)) / len(group) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_type.num_channels))

    def matrix(self) -> torch.Tensor:
        """``(C_out, c_in |G|)``, columns ``(o, k)`` o-major: ``rho_out(A_k) P0`` side by side."""
        # k=copy, d,e=typed channels, o=regular channel
        return torch.einsum("kde,eo->dok", self.rho_out.to(self.weight.dtype), self.weight).flatten(1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        bias = self.bias_projector.to(self.bias.dtype) @ self.bias
        return F.conv2d(h.flatten(1, 2), self.matrix()[:, :, None, None], bias)


class RegularLinear(nn.Module):
    """Pointwise regular -> regular map ``(M h)_k = sum_m w(k^-1 m) h_m`` (+ per-channel bias).

    ``(b, c_in, |G|, H, W) -> (b, c_out, |G|, H, W)``; ``w``: ``(c_out, c_in, |G|)``, one dense
    ``(c_out |G|, c_in |G|)`` matrix is gathered per call and applied as a single matmul.
    """

    def __init__(self, group: PointGroup, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__()
        self.c_out, self.n = c_out, len(group)
        n = len(group)
        self.weight = nn.Parameter(_uniform((c_out, c_in, n)))  # fan-in c_in |G|
        # Where entry ((o, k), (i, m)) of the matrix reads the flattened weight: w[o, i, k^-1 m]. One gather
        # that lands in the matrix's layout (a gather of w[:, :, quotient] and a permute cost a copy more).
        o, k, i, m = torch.meshgrid(*(torch.arange(s) for s in (c_out, n, c_in, n)), indexing="ij")
        index = ((o * c_in + i) * n + group.quotient[k, m]).reshape(c_out * n, c_in * n)
        self.register_buffer("matrix_index", index, persistent=False)
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def matrix(self) -> torch.Tensor:
        """``(c_out |G|, c_in |G|)`` with rows ``(o, k)`` and columns ``(i, m)``, o- and i-major."""
        return self.weight.flatten()[self.matrix_index]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias[:, None].expand(-1, self.n).flatten()  # (o, k) o-major
        out = F.conv2d(h.flatten(1, 2), self.matrix()[:, :, None, None], bias)
        return out.unflatten(1, (self.c_out, self.n))


def _uniform(shape: tuple[int, ...]) -> torch.Tensor:
    """torch's default ``nn.Linear`` initialisation, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1 / math.sqrt(math.prod(shape[1:]))
    return torch.empty(shape).uniform_(-bound, bound)
