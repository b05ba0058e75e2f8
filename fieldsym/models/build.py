"""One constructor for every operator kind, and a parameter count, for the config layer.

``build_operator("gfno", "w:pseudoscalar", "v:vector", group="D4", hidden_channels=12)`` returns the
module; the options are the keyword arguments of the class (an unknown one raises the class's own
``TypeError``). ``"averaged"`` wraps another kind: ``build_operator("averaged", t_in, t_out,
inner="fno", group_elements="C4", **inner_options)``; ``"residual"`` sums an equivariant and a free
operator: ``build_operator("residual", t_in, t_out, equivariant={"kind": "gfno", ...}, free={"kind":
"fno", ...}, gate=1.0, free_weight_decay=None)``. A plain dict, not a registry: adding a kind is one line here.
"""

from __future__ import annotations

from torch import nn

from fieldsym.fields import FieldType
from fieldsym.models.averaging import GroupAveraged
from fieldsym.models.fno import FieldFNO
from fieldsym.models.gfno import GroupFNO
from fieldsym.models.residual import ResidualPathway
from fieldsym.models.steerable import SteerableFNO

_CONSTRUCTORS = {"fno": FieldFNO, "gfno": GroupFNO, "steerable": SteerableFNO}
KINDS = (*_CONSTRUCTORS, "averaged", "residual")
# Kinds equivariant about the grid's centre: they take the data's periodicity as ``periodic`` (the
# residual kind hands it to its equivariant part).
EQUIVARIANT_KINDS = ("gfno", "steerable", "averaged")
CENTRED_KINDS = (*EQUIVARIANT_KINDS, "residual")


def build_operator(kind: str, in_type: FieldType | str, out_type: FieldType | str, **options) -> nn.Module:
    """The operator of kind ``"fno"``, ``"gfno"`` or ``"averaged"`` from ``in_type`` to ``out_type``."""
    if kind == "residual":
        return _residual(in_type, out_type, **options)
    if kind == "averaged":
        inner = options.pop("inner", "fno")
        if inner not in _CONSTRUCTORS:
            raise ValueError(f"averaged: inner={inner!r} is not one of {', '.join(_CONSTRUCTORS)}")
        group_elements = options.pop("group_elements", "D4")
        periodic = options.pop("periodic", (True, True))
        if inner == "gfno":
            options["periodic"] = periodic
        op = _CONSTRUCTORS[inner](in_type, out_type, **options)
        return GroupAveraged(op, in_type, out_type, group_elements, periodic)
    if kind not in _CONSTRUCTORS:
        raise ValueError(f"unknown operator kind {kind!r}: expected one of {', '.join(KINDS)}")
    return _CONSTRUCTORS[kind](in_type, out_type, **options)


def _residual(in_type, out_type, equivariant: dict | None = None, free: dict | None = None, gate: float = 1.0,
              free_weight_decay: float | None = None,
              periodic: tuple[bool, bool] | None = None) -> ResidualPathway:
    parts = {}
    for role, spec, allowed in (("equivariant", equivariant, EQUIVARIANT_KINDS),
                                ("free", free, ("fno",))):
        if not isinstance(spec, dict) or spec.get("kind") not in allowed:
            raise ValueError(f"residual: {role} must be a mapping with kind one of {', '.join(allowed)} and that "
                             f"kind's options, e.g. {{kind: {allowed[0]}, ...}}; got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "kind"}
        if role == "equivariant" and periodic is not None:
            options.setdefault("periodic", periodic)
        parts[role] = build_operator(spec["kind"], in_type, out_type, **options)
    return ResidualPathway(parts["equivariant"], parts["free"], in_type, out_type, gate, free_weight_decay)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of real scalars in the parameters (a complex entry counts twice)."""
    return sum(
        p.numel() * (2 if p.is_complex() else 1)
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )
