"""An exactly equivariant operator plus an unconstrained one behind a learned gate.

``F(u) = E(u) + g B(u)``: ``E`` is equivariant by construction (a GroupFNO or SteerableFNO), ``B`` is
unconstrained (a FieldFNO with its grid embedding) and ``g`` is one learned scalar. This is the
residual pathway prior of Finzi, Benton and Wilson (NeurIPS 2021), with the prior on ``B`` supplied by a
symmetry penalty instead of a fixed weight decay: with ``symmetry.mode: promoted`` only the ``g B`` path
can make ``L_xi F`` or ``F(g.u) - g.F(u)`` non-zero, so promotion shrinks it where the data is
symmetric and lets it grow where the data breaks the symmetry (a forcing fixed in space).

Why a separate operator rather than a breaking input to the GroupFNO: coordinates lifted into the
regular representation learn a fixed forcing poorly (test error 0.32 against the FNO's 0.056 on
rotation_small's FNO-forced data, experiments/README.md), while the FNO's own path represents it.
"""

from __future__ import annotations

import torch
from torch import nn

from fieldsym.fields import FieldType


class ResidualPathway(nn.Module):
    """``u -> equivariant(u) + gate * free(u)``; both map ``in_type`` to ``out_type``."""

    def __init__(self, equivariant: nn.Module, free: nn.Module, in_type: FieldType | str,
                 out_type: FieldType | str, gate: float = 1.0) -> None:
        super().__init__()
        self.in_type, self.out_type = FieldType.parse(in_type), FieldType.parse(out_type)
        self.equivariant = equivariant
        self.free = free
        self.gate = nn.Parameter(torch.tensor(float(gate)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.equivariant(u) + self.gate * self.free(u)

    def extra_repr(self) -> str:
        return f"in_type='{self.in_type}', out_type='{self.out_type}'"
