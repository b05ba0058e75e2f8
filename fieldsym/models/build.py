"""One constructor for every operator kind, a parameter count, and the options written out in full.

``build_operator("gfno", "w:pseudoscalar", "v:vector", group="D4", hidden_channels=12)`` returns the
module; the options are the keyword arguments of the class (an unknown one raises the class's own
``TypeError``). ``"averaged"`` wraps another kind: ``build_operator("averaged", t_in, t_out,
inner="fno", group_elements="C4", **inner_options)``; ``"residual"`` sums an equivariant and a free
operator: ``build_operator("residual", t_in, t_out, equivariant={"kind": "gfno", ...}, free={"kind":
"fno", ...}, gate=1.0, free_weight_decay=None)``. A plain dict, not a registry: adding a kind is one line here.

:func:`resolved_options` writes out every default the constructor would use. Why: a run stores its
options, and options that leave a default implicit rebuild a *different* model once that default
changes (SteerableFNO's ``activation`` went from norm to gate, ``n_radial`` from 3 to ``2 K``); the
resolved options rebuild the same model whatever the defaults become, and two spellings of one model
(a default written out or left implicit) resolve to the same options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from neuralop.models import FNO
from torch import nn

from fieldsym.constraints import Irreps
from fieldsym.fields import FieldType
from fieldsym.models.averaging import GroupAveraged
from fieldsym.models.fno import PASSTHROUGH_OPTIONS, FieldFNO
from fieldsym.models.gfno import GroupFNO
from fieldsym.models.residual import ResidualPathway
from fieldsym.models.steerable import SteerableFNO, default_hidden_irreps, default_n_radial

_CONSTRUCTORS = {"fno": FieldFNO, "gfno": GroupFNO, "steerable": SteerableFNO}
KINDS = (*_CONSTRUCTORS, "averaged", "residual")
# Kinds equivariant about the grid's centre: they take the data's periodicity as ``periodic`` (the
# residual kind hands it to its equivariant part).
EQUIVARIANT_KINDS = ("gfno", "steerable", "averaged")
CENTRED_KINDS = (*EQUIVARIANT_KINDS, "residual")
# Inner kinds of "averaged" whose positional embedding is centred by ``periodic``: they get the averaged
# operator's (a steerable inner used its own default, periodic, before session 4: wrong on non-periodic data).
_CENTRED_INNER = ("gfno", "steerable")


def build_operator(kind: str, in_type: FieldType | str, out_type: FieldType | str, **options) -> nn.Module:
    """The operator of kind ``"fno"``, ``"gfno"``, ``"steerable"``, ``"averaged"`` or ``"residual"`` from
    ``in_type`` to ``out_type``."""
    if kind == "residual":
        return _residual(in_type, out_type, **options)
    if kind == "averaged":
        return _averaged(in_type, out_type, **options)
    if kind not in _CONSTRUCTORS:
        raise ValueError(f"unknown operator kind {kind!r}: expected one of {', '.join(KINDS)}")
    return _CONSTRUCTORS[kind](in_type, out_type, **options)


def _averaged(in_type, out_type, inner: str = "fno", group_elements: str | list = "D4",
              periodic: tuple[bool, bool] = (True, True), **inner_options) -> GroupAveraged:
    _check_inner(inner)
    if inner in _CENTRED_INNER:
        inner_options["periodic"] = periodic
    op = _CONSTRUCTORS[inner](in_type, out_type, **inner_options)
    return GroupAveraged(op, in_type, out_type, group_elements, periodic)


def _residual(in_type, out_type, equivariant: dict | None = None, free: dict | None = None, gate: float = 1.0,
              free_weight_decay: float | None = None,
              periodic: tuple[bool, bool] | None = None) -> ResidualPathway:
    parts = {role: build_operator(kind, in_type, out_type, **options)
             for role, kind, options in _residual_parts(equivariant, free, periodic)}
    return ResidualPathway(parts["equivariant"], parts["free"], in_type, out_type, gate, free_weight_decay)


def _check_inner(inner: Any) -> None:
    if inner not in _CONSTRUCTORS:
        raise ValueError(f"averaged: inner={inner!r} is not one of {', '.join(_CONSTRUCTORS)}")


def _residual_parts(equivariant, free, periodic) -> list[tuple[str, str, dict]]:
    """``(role, kind, options)`` of the residual operator's two parts; the equivariant one gets ``periodic``
    unless its options name their own."""
    parts = []
    for role, spec, allowed in (("equivariant", equivariant, EQUIVARIANT_KINDS), ("free", free, ("fno",))):
        if not isinstance(spec, dict) or spec.get("kind") not in allowed:
            raise ValueError(f"residual: {role} must be a mapping with kind one of {', '.join(allowed)} and that "
                             f"kind's options, e.g. {{kind: {allowed[0]}, ...}}; got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "kind"}
        if role == "equivariant" and periodic is not None:
            options.setdefault("periodic", periodic)
        parts.append((role, spec["kind"], options))
    return parts


# -- options written out in full -------------------------------------------------------------------------


def check_options(kind: str, options: dict[str, Any]) -> None:
    """Raise ``TypeError`` / ``ValueError`` with the fix for options that no operator of ``kind`` takes
    (unknown names, at any depth of ``averaged`` and ``residual``), without the data's field types: what a
    config is checked with before any data is made or any operator trained."""
    resolved_options(kind, "u:scalar", "u:scalar", options)


def resolved_options(kind: str, in_type: FieldType | str, out_type: FieldType | str,
                     options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every keyword default of the operator's constructor written out, as plain data.

    ``build_operator(kind, in_type, out_type, **resolved_options(kind, in_type, out_type, options))`` builds
    the same model as ``build_operator(kind, in_type, out_type, **options)`` (same parameters, drawn in the
    same order), and keeps building it after a default changes. What is written out:

    - every keyword of the constructor's signature, given or defaulted; a default that depends on other
      arguments (SteerableFNO's ``hidden_irreps`` and ``n_radial``) as the value the constructor computes,
      by the same function;
    - ``fno``: also the defaults of neuralop's ``FNO`` options that FieldFNO passes through (those a config
      can write, i.e. plain data; ``non_linearity`` is a function and stays implicit);
    - ``averaged``: its ``inner``, ``group_elements`` and ``periodic``, and the inner kind's options resolved
      (without ``periodic``: the averaged operator's own is the one that counts);
    - ``residual``: ``equivariant`` and ``free`` as ``{kind: ..., **resolved options}``.

    Values are plain data as a config stores them (tuples become lists, irreps strings take their canonical
    form ``"16x0 + 8x1 + 4x2"``); resolving resolved options returns them unchanged. An option the
    constructor does not take raises ``TypeError``; a bad value is left for the constructor to refuse.
    """
    if kind == "residual":
        resolved = _bound(_residual, kind, in_type, out_type, options)
        for role, part, part_options in _residual_parts(resolved["equivariant"], resolved["free"],
                                                        resolved["periodic"]):
            resolved[role] = {"kind": part, **resolved_options(part, in_type, out_type, part_options)}
        return resolved
    if kind == "averaged":
        resolved = _bound(_averaged, kind, in_type, out_type, options)
        inner_options = {k: resolved.pop(k) for k in list(resolved) if k not in ("inner", "group_elements", "periodic")}
        _check_inner(resolved["inner"])
        if resolved["inner"] in _CENTRED_INNER:
            inner_options["periodic"] = resolved["periodic"]
        inner = resolved_options(resolved["inner"], in_type, out_type, inner_options)
        inner.pop("periodic", None)
        return {**resolved, **inner}
    if kind not in _CONSTRUCTORS:
        raise ValueError(f"unknown operator kind {kind!r}: expected one of {', '.join(KINDS)}")
    constructor = _CONSTRUCTORS[kind]
    resolved = _bound(constructor, kind, in_type, out_type, options)
    forwarded = _FORWARDED.get(constructor)
    if forwarded is not None:
        target, names = forwarded
        for name, parameter in inspect.signature(target).parameters.items():
            if name in names and name not in resolved and _is_plain(parameter.default):
                resolved[name] = _plain(parameter.default)
    if constructor in _DEPENDENT_DEFAULTS:
        _DEPENDENT_DEFAULTS[constructor](resolved)
    return resolved


def _bound(constructor: Callable, kind: str, in_type, out_type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` bound to ``constructor(in_type, out_type, **options)`` with its defaults applied, flat (the
    keywords a ``**kwargs`` parameter collects stay as they came), as plain data."""
    signature = inspect.signature(constructor)
    parameters = signature.parameters
    types = list(parameters)[:2]  # in_type, out_type
    keywords = [n for n, p in parameters.items() if n not in types and p.kind != p.VAR_KEYWORD]
    collects = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    forwarded = _FORWARDED.get(constructor, (None, ()))[1]  # what its **kwargs accept, when it says
    unknown = [k for k in options
               if k in types or (k not in keywords and not (collects and (not forwarded or k in forwarded)))]
    if unknown:
        also = f", and {', '.join(forwarded)} (passed to neuralop's FNO)" if forwarded else ""
        raise TypeError(f"{kind}: unknown option(s) {', '.join(map(repr, unknown))}; its options are "
                        f"{', '.join(keywords)}{also}: remove or rename them")
    bound = signature.bind(in_type, out_type, **options)
    bound.apply_defaults()
    resolved: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in types:
            continue
        if parameters[name].kind == parameters[name].VAR_KEYWORD:
            resolved.update({k: _plain(v) for k, v in value.items()})
            continue
        if name not in options and not _is_plain(value):
            raise TypeError(f"{kind}: the default {name}={value!r} of {constructor.__qualname__} is not plain data "
                            "(str, number, bool, None, lists, dicts), so a stored config cannot hold it; give the "
                            "constructor a plain default (e.g. a name) and resolve it inside")
        resolved[name] = _plain(value)
    return resolved


def _steerable_defaults(options: dict[str, Any]) -> None:
    """SteerableFNO's defaults that depend on other arguments, as its constructor computes them."""
    hidden = options["hidden_irreps"]
    options["hidden_irreps"] = (default_hidden_irreps(options["group"]) if hidden is None
                                else str(Irreps.parse(hidden)) if isinstance(hidden, (str, Irreps)) else hidden)
    if options["n_radial"] is None and isinstance(options["n_modes"], int):
        options["n_radial"] = default_n_radial(options["n_modes"])


def _pair_of_modes(options: dict[str, Any]) -> None:
    """FieldFNO reads ``n_modes: m`` as ``[m, m]``: one spelling, so both are the same options."""
    modes = options["n_modes"]
    if isinstance(modes, int) and not isinstance(modes, bool):
        options["n_modes"] = [modes, modes]


def _one_mode_count(options: dict[str, Any]) -> None:
    """GroupFNO reads ``n_modes: [m, m]`` as ``m``: one spelling, so both are the same options."""
    modes = options["n_modes"]
    if isinstance(modes, list) and len(modes) == 2 and modes[0] == modes[1]:
        options["n_modes"] = modes[0]


# constructor -> (the callable its **kwargs go to, the names it forwards)
_FORWARDED: dict[Callable, tuple[Callable, tuple[str, ...]]] = {FieldFNO: (FNO, PASSTHROUGH_OPTIONS)}
# constructor -> fills in, in place, the defaults (None in the signature) that depend on other arguments,
# and gives values the constructor reads alike one spelling
_DEPENDENT_DEFAULTS: dict[Callable, Callable[[dict[str, Any]], None]] = {
    SteerableFNO: _steerable_defaults, FieldFNO: _pair_of_modes, GroupFNO: _one_mode_count}


def _plain(value: Any) -> Any:
    """Tuples as lists (as a config stores them), irreps as their string, recursively."""
    if type(value) in (tuple, list):  # not a NamedTuple such as a GroupElement
        return [_plain(v) for v in value]
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Irreps):
        return str(value)
    return value


def _is_plain(value: Any) -> bool:
    if type(value) in (tuple, list):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (str, int, float, bool))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of real scalars in the parameters (a complex entry counts twice)."""
    return sum(
        p.numel() * (2 if p.is_complex() else 1)
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )
