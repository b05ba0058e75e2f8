"""What to read from a dataset file: plain typed data, independent of any config library.

The config layer translates YAML into a :class:`DataSpec`; the dataset resolves it against a file
(:func:`resolve`) into the input and output :class:`~fieldsym.fields.FieldType` that models, penalties
and normalisation take. Keeping this step explicit is what lets the symmetry travel with the data:
the field type of every channel is decided here, from the file's ``fieldsym_field_type`` attribute or
an explicit override, and never guessed from a shape.

A field is read from one variable (scalar, pseudoscalar or a stored vector) or from two scalar
variables that are the x and y components of one vector (``velocity: [u, v]``).

Time selection (``T`` times in the file; ``k`` = ``steps``):

    one_step    input t_in                  -> output t_out (default: the last time); one item per sample
    multi_step  inputs t_in .. t_in + k - 1 -> output t_out (default: t_in + k); one item per sample
    rollout     inputs t .. t + k - 1       -> output t + k, for every t = t_in .. T - k - 1

With ``k > 1`` the input channels are time-major: every step is a copy of the input field type, named
``<field>_t0, <field>_t1, ...``, so a symmetry acts on each step as on the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from fieldsym.fields import KINDS, Field, FieldKind, FieldType

from .schema import DatasetError, FileInfo

TimeMode = Literal["one_step", "multi_step", "rollout"]


@dataclasses.dataclass(frozen=True)
class FieldSelection:
    """Field ``name`` read from ``variables`` (one, or two scalars as the x and y of a vector).

    ``kind``: ``scalar | pseudoscalar | vector``; ``None`` takes the file's ``fieldsym_field_type``.
    """

    name: str
    variables: tuple[str, ...]
    kind: FieldKind | None = None

    def __post_init__(self) -> None:
        if isinstance(self.variables, str):
            object.__setattr__(self, "variables", (self.variables,))
        object.__setattr__(self, "variables", tuple(self.variables))
        if len(self.variables) not in (1, 2):
            raise ValueError(
                f"field {self.name!r}: expected one variable, or two scalar variables for the x and y "
                f"components of a vector; got {list(self.variables)}"
            )
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if len(self.variables) == 2 and self.kind not in (None, "vector"):
            raise ValueError(
                f"field {self.name!r}: two variables {list(self.variables)} make a vector, but kind is "
                f"{self.kind!r}; drop the kind or list the variables as separate fields"
            )

    @classmethod
    def coerce(cls, item: FieldSelection | str | Sequence) -> FieldSelection:
        """Accept ``"w"``, ``("velocity", ["u", "v"])``, ``("w", "w", "pseudoscalar")`` or a selection."""
        if isinstance(item, FieldSelection):
            return item
        if isinstance(item, str):
            return cls(item, (item,))
        if isinstance(item, Sequence) and len(item) in (2, 3):
            return cls(*item)
        raise TypeError(
            f"a field selection is a variable name, (name, variables) or (name, variables, kind); "
            f"got {item!r}"
        )


@dataclasses.dataclass(frozen=True)
class TimeSelection:
    """Which times make an input and an output (module docstring); negative times count from the end."""

    mode: TimeMode = "one_step"
    t_in: int = 0
    t_out: int | None = None
    steps: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("one_step", "multi_step", "rollout"):
            raise ValueError(f"time mode {self.mode!r} unknown; expected one_step, multi_step or rollout")
        if self.steps < 1 or (self.mode == "one_step" and self.steps != 1):
            raise ValueError(
                f"steps={self.steps} with mode {self.mode!r}: one_step reads one input time; use "
                "mode='multi_step' (or 'rollout') for several input steps"
            )
        if self.mode == "rollout" and self.t_out is not None:
            raise ValueError("rollout pairs each window with the next time; t_out must be left unset")

    def windows(self, num_times: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(bases, in_offsets, out_offset)``: item ``(sample, b)`` reads inputs at ``b + in_offsets``
        and its output at ``b + out_offset``, for every base time ``b`` in ``bases``."""
        t_in = self.t_in + num_times if self.t_in < 0 else self.t_in
        offsets = np.arange(self.steps)
        if self.mode == "rollout":
            bases = np.arange(t_in, num_times - self.steps)
            out_offset = self.steps
        else:
            default = num_times - 1 if self.mode == "one_step" else t_in + self.steps
            t_out = default if self.t_out is None else self.t_out
            t_out = t_out + num_times if t_out < 0 else t_out
            bases = np.array([t_in])
            out_offset = t_out - t_in
        needed = bases[:, None] + np.append(offsets, out_offset)[None, :]
        if bases.size == 0 or needed.min() < 0 or needed.max() >= num_times:
            raise DatasetError(
                f"time selection {self} needs times outside the file's 0..{num_times - 1}; choose "
                "t_in, t_out and steps inside that range"
            )
        return bases, offsets, out_offset


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Input and output fields, the time selection, and the mapping for files without fieldsym attributes.

    ``periodic``: ``(y, x)``, overrides the coordinates' ``fieldsym_periodic``.
    ``dims``: renaming of the file's dimension names to the schema's, e.g. ``{"batch": "sample"}``.
    """

    inputs: tuple[FieldSelection, ...]
    outputs: tuple[FieldSelection, ...]
    time: TimeSelection = TimeSelection()
    periodic: tuple[bool, bool] | None = None
    dims: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        for side in ("inputs", "outputs"):
            items = getattr(self, side)
            items = (items,) if isinstance(items, (str, FieldSelection)) else items
            selections = tuple(FieldSelection.coerce(item) for item in items)
            if not selections:
                raise ValueError(f"DataSpec.{side} is empty; name at least one field")
            object.__setattr__(self, side, selections)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable read, each once, in first-use order."""
        names = [v for sel in self.inputs + self.outputs for v in sel.variables]
        return tuple(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class ResolvedSpec:
    """A :class:`DataSpec` checked against a file: the kinds are known and the field types built.

    ``in_type``: the model's input (multi-step inputs repeated per step, time-major).
    ``out_type``: the model's output. ``in_groups``: each ``in_type`` field -> its spec field, so
    normalisation can pool the statistics of the steps of one field.
    """

    spec: DataSpec
    in_fields: tuple[Field, ...]
    out_fields: tuple[Field, ...]
    in_type: FieldType
    out_type: FieldType
    in_groups: dict[str, str]
    bases: np.ndarray
    in_offsets: np.ndarray
    out_offset: int


def resolve(spec: DataSpec, info: FileInfo) -> ResolvedSpec:
    """Decide every field's kind from ``spec`` and the file, and build the field types."""
    in_fields = tuple(_resolve_field(sel, info) for sel in spec.inputs)
    out_fields = tuple(_resolve_field(sel, info) for sel in spec.outputs)
    base_in = _field_type(in_fields, info, "inputs")
    out_type = _field_type(out_fields, info, "outputs")
    bases, in_offsets, out_offset = spec.time.windows(info.num_times)
    if len(in_offsets) == 1:
        in_type, groups = base_in, {f.name: f.name for f in in_fields}
    else:
        steps = [(f"{f.name}_t{j}", f) for j in range(len(in_offsets)) for f in in_fields]
        in_type = FieldType(tuple(Field(name, f.kind) for name, f in steps))
        groups = {name: f.name for name, f in steps}
    return ResolvedSpec(spec, in_fields, out_fields, in_type, out_type, groups, bases, in_offsets, out_offset)


def _field_type(fields: tuple[Field, ...], info: FileInfo, side: str) -> FieldType:
    try:
        return FieldType(fields)
    except ValueError as error:
        raise DatasetError(f"{info.path}: {side}: {error}") from error


def _resolve_field(sel: FieldSelection, info: FileInfo) -> Field:
    found = [info.variable(v) for v in sel.variables]
    if len(found) == 2:
        for var in found:
            if var.has_component or var.kind not in (None, "scalar"):
                raise DatasetError(
                    f"{info.path}: field {sel.name!r} maps {list(sel.variables)} onto one vector, but "
                    f"{var.name!r} is a {var.kind or 'vector'} variable; both must be scalar components"
                )
        return _field(sel.name, "vector", info)
    var = found[0]
    kind = sel.kind or var.kind
    if kind is None:
        raise DatasetError(
            f"{info.path}: variable {var.name!r} has no fieldsym_field_type attribute; give the "
            f"kind in the data spec, e.g. ({sel.name!r}, {var.name!r}, 'scalar')"
        )
    if (kind == "vector") != var.has_component:
        layout = "has a component dimension" if var.has_component else "has no component dimension"
        raise DatasetError(
            f"{info.path}: field {sel.name!r} is read as a {kind} but variable {var.name!r} {layout}; "
            "a stored vector needs (sample, time, component, y, x), two scalars map as "
            f"({sel.name!r}, ['u', 'v'])"
        )
    return _field(sel.name, kind, info)


def _field(name: str, kind: str, info: FileInfo) -> Field:
    try:
        return Field(name, kind)  # type: ignore[arg-type]
    except ValueError as error:
        raise DatasetError(f"{info.path}: {error}") from error
