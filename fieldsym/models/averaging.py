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

from fieldsym.fields import D4_MATRICES, FieldType, _is_signed_permutation
from fieldsym.groups import GroupElement, finite_group


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
        moved = torch.cat([g.act(u, self.in_type, self.periodic) for g in self.elements])
        outs = self.op(moved).chunk(len(self.elements))
        total = 0
        for g, out in zip(self.elements, outs):
            total = total + g.inverse().act(out, self.out_type, self.periodic)
        return total / len(self.elements)

    def extra_repr(self) -> str:
        return f"elements={len(self.elements)}, periodic={self.periodic}"


def _element_list(group_elements) -> Sequence:
    if isinstance(group_elements, str):
        return finite_group(group_elements).elements
    if hasattr(group_elements, "elements"):  # a FiniteGroup
        return group_elements.elements
    return list(group_elements)


def _as_element(g) -> GroupElement:
    """A :class:`GroupElement` from a D4 element name, a matrix or an object with ``A`` / ``shift``."""
    if isinstance(g, str):
        if g not in D4_MATRICES:
            raise ValueError(f"unknown D4 element {g!r}; known: {', '.join(D4_MATRICES)}")
        return GroupElement(g, D4_MATRICES[g])
    A, shift = (g.A, getattr(g, "shift", (0, 0))) if hasattr(g, "A") else (g, (0, 0))
    A_t = torch.as_tensor(A, dtype=torch.float64)
    if A_t.shape != (2, 2) or not _is_signed_permutation(A_t):
        raise ValueError(f"a group element needs a (2, 2) signed permutation matrix, got {A!r}")
    A_int = tuple(tuple(int(v) for v in row) for row in A_t.tolist())
    return GroupElement(getattr(g, "name", str(A_int)), A_int, (int(shift[0]), int(shift[1])))  # type: ignore[arg-type]


def _check_closed(elements: Sequence[GroupElement]) -> None:
    """Raise unless the linear parts are closed under products.

    Shifts are not checked: whether they close depends on the grid size, known only at run time.
    """
    linear = {g.A for g in elements}
    for A in linear:
        for B in linear:
            AB = tuple(tuple(sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)) for i in range(2))
            if AB not in linear:
                raise ValueError(
                    f"group_elements are not closed under products ({A} @ {B} = {AB} is missing): the "
                    "average is equivariant only over a group; list all of C4 or D4 or a subgroup"
                )
