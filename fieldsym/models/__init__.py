"""Operators between typed fields: unconstrained, group-equivariant by construction, group-averaged.

- :class:`FieldFNO` — neuraloperator's FNO on typed fields (no symmetry imposed; exact whole-cell shift
  equivariance without positional embedding and padding);
- :class:`GroupFNO` — C4/D4-equivariant FNO for scalar, pseudoscalar and vector fields;
- :class:`SteerableFNO` — SO(2)/O(2)-equivariant FNO whose layers solve the Lie-derivative constraint;
- :class:`GroupAveraged` — any operator averaged over a finite group, exactly equivariant to it;
- :class:`ResidualPathway` — an equivariant operator plus a gated unconstrained one (for promotion);
- :func:`build_operator`, :func:`count_parameters` — for the config layer and for fair comparisons.
"""

from fieldsym.models.averaging import GroupAveraged
from fieldsym.models.build import KINDS, build_operator, count_parameters
from fieldsym.models.embedding import InvariantGridEmbedding
from fieldsym.models.fno import FieldFNO, ShiftExactSpectralConv
from fieldsym.models.gfno import GroupFNO
from fieldsym.models.residual import ResidualPathway
from fieldsym.models.steerable import SteerableFNO

__all__ = [
    "FieldFNO",
    "GroupAveraged",
    "GroupFNO",
    "InvariantGridEmbedding",
    "KINDS",
    "ResidualPathway",
    "ShiftExactSpectralConv",
    "SteerableFNO",
    "build_operator",
    "count_parameters",
]
