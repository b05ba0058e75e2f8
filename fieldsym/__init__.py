"""fieldsym: symmetric field-to-field learning.

The public surface is what this module re-exports; implementation modules may change.
"""

from fieldsym.discovery import Discovery, discover
from fieldsym.fields import D4_MATRICES, Field, FieldType
from fieldsym.grid import Grid
from fieldsym.groups import (ALGEBRAS, C4, D4, FiniteGroup, Generator, GroupElement, R, S, Tx, Ty, algebra,
                             amplitude_scaling, bracket, finite_group, shifts, structure_constants)
from fieldsym.lie import (equivariance_error, equivariance_errors, flow, generator_action, lie_derivative,
                          lie_derivative_errors, lie_derivative_terms)

__version__ = "0.1.0"

__all__ = [
    "ALGEBRAS", "Discovery", "discover", "C4", "D4", "D4_MATRICES", "Field", "FieldType", "FiniteGroup", "Generator", "Grid",
    "GroupElement", "R", "S", "Tx", "Ty", "algebra", "amplitude_scaling", "bracket", "equivariance_error",
    "equivariance_errors", "finite_group", "flow", "generator_action", "lie_derivative",
    "lie_derivative_errors", "lie_derivative_terms", "shifts", "structure_constants",
]
