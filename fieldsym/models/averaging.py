"""Exact equivariance for any operator by averaging over a finite group (the Reynolds operator).

    F_avg(u) = 1/|G| sum_g  g^-1 . F(g . u)

is equivariant to every element of ``G`` whatever ``F`` is: for ``h`` in ``G``,
``F_avg(h.u) = 1/|G| sum_g g^-1 . F(g h . u) = h . 1/|G| sum_g' g'^-1 . F(g' . u)`` with ``g' = g h``.
This needs the elements to form a group (closed under products); C4, D4 and their subgroups do, and
so do the whole-cell shifts of a periodic grid by a subgroup of the torus. Each forward costs ``|G|``
evaluations of ``F`` (batched into one call), and ``F_avg`` is equivariant only to the listed
elements: averaging over quarter turns does not make an operator translation-equivariant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fieldsym.fields import D4_MATRICES, FieldType


class GroupAveraged(nn.Module):
    """``F_avg(u) = 1/|G| sum_g g^-1 . F(g . u)`` for ``op``: ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    ``group_elements``: a name (``"C4"``, ``"D4"``) or a sequence of elements, each a D4 element name
    (``"r1"``), a ``(2, 2)`` signed permutation matrix acting on ``(x, y)``, or an object with
    attributes ``A`` (and optionally ``shift``, whole cells ``(dx, dy)``) like
    ``fieldsym.groups.GroupElement``. ``periodic``: ``(y, x)``, as in :meth:`FieldType.transform`.
    """

    def __init__(
        self,
        op: nn.Module,
        in_type: FieldType | str,
        out_type: FieldType | str,
        group_elements: str | Sequence = "D4",
        periodic: tuple[bool, bool] = (True, True),
    ) -> None:
        super().__init__()
        self.op = op
        self.in_type = FieldType.parse(in_type)
        self.out_type = FieldType.parse(out_type)
        self.periodic = tuple(bool(p) for p in periodic)
        self.elements = tuple(_as_element(g) for g in _element_list(group_elements))
        _check_closed(self.elements)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.in_type.check(u)
        moved = torch.cat([self.in_type.transform(u, A, b, self.periodic) for A, b in self.elements])
        outs = self.op(moved).chunk(len(self.elements))
        total = 0
        for (A, b), out in zip(self.elements, outs):
            A_inv = tuple(zip(*A))  # A^-1 = A^T for a signed permutation
            b_inv = tuple(-sum(A_inv[i][j] * b[j] for j in range(2)) for i in range(2))
            total = total + self.out_type.transform(out, A_inv, b_inv, self.periodic)
        return total / len(self.elements)

    def extra_repr(self) -> str:
        return f"elements={len(self.elements)}, periodic={self.periodic}"


_NAMED_GROUPS = {"C4": ("e", "r1", "r2", "r3"), "D4": tuple(D4_MATRICES)}

Element = tuple[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]


def _element_list(group_elements) -> Sequence:
    if isinstance(group_elements, str):
        if group_elements not in _NAMED_GROUPS:
            raise ValueError(
                f"unknown group {group_elements!r}: expected 'C4', 'D4' or a list of elements"
            )
        return _NAMED_GROUPS[group_elements]
    if hasattr(group_elements, "elements"):  # a FiniteGroup
        return group_elements.elements
    return list(group_elements)


def _as_element(g) -> Element:
    """``(A, shift)`` as integer tuples from a name, a matrix or an object with ``A`` / ``shift``."""
    if isinstance(g, str):
        if g not in D4_MATRICES:
            raise ValueError(f"unknown D4 element {g!r}; known: {', '.join(D4_MATRICES)}")
        A, shift = D4_MATRICES[g], (0, 0)
    elif hasattr(g, "A"):
        A, shift = g.A, getattr(g, "shift", (0, 0))
    else:
        A, shift = g, (0, 0)
    A_t = torch.as_tensor(A, dtype=torch.float64)
    if (
        A_t.shape != (2, 2)
        or not bool(((A_t == 0) | (A_t.abs() == 1)).all())
        or not bool((A_t.abs().sum(0) == 1).all() and (A_t.abs().sum(1) == 1).all())
    ):
        raise ValueError(f"a group element needs a (2, 2) signed permutation matrix, got {A!r}")
    A_int = tuple(tuple(int(v) for v in row) for row in A_t.tolist())
    return A_int, (int(shift[0]), int(shift[1]))  # type: ignore[return-value]


def _check_closed(elements: Sequence[Element]) -> None:
    """Raise unless the linear parts are closed under products.

    Shifts are not checked: whether they close depends on the grid size, known only at run time.
    """
    linear = {A for A, _ in elements}
    for A in linear:
        for B in linear:
            AB = tuple(tuple(sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)) for i in range(2))
            if AB not in linear:
                raise ValueError(
                    f"group_elements are not closed under products ({A} @ {B} = {AB} is missing): the "
                    "average is equivariant only over a group; list all of C4 or D4 or a subgroup"
                )
