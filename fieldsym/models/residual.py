"""An exactly equivariant operator plus an unconstrained one behind a learned gate.

``F(u) = E(u) + g B(u)``: ``E`` is equivariant by construction (a GroupFNO or SteerableFNO), ``B`` is
unconstrained (a FieldFNO with its grid embedding) and ``g`` is one learned scalar. This is the
residual pathway prior of Finzi, Benton and Wilson (NeurIPS 2021), with the prior on ``B`` supplied by a
symmetry penalty instead of a fixed weight decay: with ``symmetry.mode: promoted`` only the ``g B`` path
can make ``L_xi F`` or ``F(g.u) - g.F(u)`` non-zero, so promotion shrinks it where the data is
symmetric and lets it grow where the data breaks the symmetry (a forcing fixed in space).
``free_weight_decay`` adds Finzi et al.'s own prior on top: a stronger (decoupled, AdamW) weight decay on
``B`` and ``g`` than on ``E``; :meth:`ResidualPathway.parameter_groups` hands it to the optimiser.

Why a separate operator rather than a breaking input to the GroupFNO: coordinates lifted into the
regular representation learn a fixed forcing poorly (test error 0.32 against the FNO's 0.056 on
rotation_small's FNO-forced data, experiments/README.md), while the FNO's own path represents it.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from fieldsym.fields import FieldType


class ResidualPathway(nn.Module):
    """``u -> equivariant(u) + gate * free(u)``; both map ``in_type`` to ``out_type``.

    ``free_weight_decay``: the AdamW weight decay of the free path (``free`` and ``gate``), ``None`` for
    the optimiser's own value, as for the equivariant part.
    """

    def __init__(self, equivariant: nn.Module, free: nn.Module, in_type: FieldType | str,
                 out_type: FieldType | str, gate: float = 1.0, free_weight_decay: float | None = None) -> None:
        super().__init__()
        if free_weight_decay is not None and (isinstance(free_weight_decay, bool) or not isinstance(
                free_weight_decay, Real) or not math.isfinite(free_weight_decay) or free_weight_decay < 0):
            raise ValueError(f"residual: free_weight_decay must be a finite number >= 0 (the free path's AdamW "
                             f"weight decay) or null for the optimiser's own; got {free_weight_decay!r}")
        self.in_type, self.out_type = FieldType.parse(in_type), FieldType.parse(out_type)
        self.equivariant = equivariant
        self.free = free
        self.gate = nn.Parameter(torch.tensor(float(gate)))
        self.free_weight_decay = None if free_weight_decay is None else float(free_weight_decay)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: everything at ``weight_decay`` (one group, as for any other operator)
        unless ``free_weight_decay`` is set; then the equivariant part at ``weight_decay`` and the free path
        at ``free_weight_decay`` -- its operator and the gate, since ``g`` and ``B``'s last layer trade
        scale freely and decaying one alone would not shrink ``g B``."""
        if self.free_weight_decay is None:
            return [{"params": list(self.parameters()), "weight_decay": weight_decay}]
        return [{"params": list(self.equivariant.parameters()), "weight_decay": weight_decay},
                {"params": [self.gate, *self.free.parameters()], "weight_decay": self.free_weight_decay}]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.equivariant(u) + self.gate * self.free(u)

    def extra_repr(self) -> str:
        decay = "" if self.free_weight_decay is None else f", free_weight_decay={self.free_weight_decay}"
        return f"in_type='{self.in_type}', out_type='{self.out_type}'{decay}"
