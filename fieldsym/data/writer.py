"""Write a schema-1 netCDF file (DESIGN.md section 3) from in-memory arrays.

Why it looks the way it does:

- Every input is validated *before* anything touches the disk, and the file is written to a temporary
  name in the target directory and moved into place with ``os.replace``. A failed write (bad data, a
  full disk, an interrupt) therefore never leaves a partial file where a reader expects a dataset, and
  never clobbers an existing good one.
- Field variables are float32 and chunked one sample per chunk, uncompressed: training reads whole
  samples at random, and zlib roughly halves read throughput (DESIGN.md section 5).
- The symmetry travels with the data: every field variable carries ``fieldsym_field_type``, and a
  vector field stores its two components on a ``component`` dimension (``"x"`` first) placed before
  ``y``, so a reader never guesses a layout from a shape.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
FIELD_TYPES = ("scalar", "pseudoscalar", "vector")
_UNIFORM_RTOL = 1e-6


@dataclass(frozen=True)
class FieldSpec:
    """One field to write.

    ``data`` has shape ``(sample, time, y, x)`` for a scalar or pseudoscalar field and
    ``(sample, time, 2, y, x)`` for a vector field (x component first).
    """

    data: np.ndarray
    field_type: str
    units: str
    long_name: str


def write_dataset(
    path: str | os.PathLike,
    fields: Mapping[str, FieldSpec],
    *,
    x: np.ndarray,
    y: np.ndarray,
    time: np.ndarray,
    periodic: bool | tuple[bool, bool],
    pde: str,
    parameters: Mapping[str, object],
    seed: int,
    title: str,
    source: str,
    per_sample: Mapping[str, np.ndarray] | None = None,
    history: str | None = None,
    attrs: Mapping[str, str | int | float] | None = None,
) -> Path:
    """Validate ``fields`` and write them atomically to ``path`` as a schema-1 netCDF4 file.

    Args:
        path: target file; its parent directories are created.
        fields: variable name -> :class:`FieldSpec`, in channel order.
        x, y: uniform, increasing 1-D coordinates, shapes ``(W,)`` and ``(H,)``.
        time: increasing 1-D coordinate, shape ``(T,)``.
        periodic: whether the axes are periodic; one bool for both or ``(x_periodic, y_periodic)``.
        pde: short PDE name stored as ``fieldsym_pde``.
        parameters: solver parameters, stored as JSON in ``fieldsym_parameters``.
        seed: the random seed that produced the data (``fieldsym_seed``).
        title, source: CF global attributes; ``source`` names the solver and its version.
        per_sample: optional per-sample parameters, name -> array of shape ``(sample,)``.
        history: CF ``history`` line; a timestamped default is written when omitted.
        attrs: further global attributes (strings or numbers), e.g. provenance; they are in the file
            from the moment it appears under ``path``, and may not replace the schema's own.

    Returns:
        The path written.

    Raises:
        ValueError / TypeError: on invalid input, before any file is created.
    """
    path = Path(path)
    x, y, time = (_coordinate(name, values) for name, values in (("x", x), ("y", y), ("time", time)))
    _check_uniform("x", x)
    _check_uniform("y", y)
    periodic_x, periodic_y = _periodic_flags(periodic)
    arrays = {name: _field_array(name, spec, len(time), len(y), len(x)) for name, spec in _items(fields)}
    n_samples = _common_sample_count(arrays)
    per_sample = {name: _per_sample_array(name, v, n_samples) for name, v in (per_sample or {}).items()}
    clashes = set(per_sample) & (set(fields) | {"x", "y", "time", "component", "sample"})
    if clashes:
        raise ValueError(f"per_sample names {sorted(clashes)} clash with field or coordinate names; rename them.")
    attrs = _global_attrs(pde, parameters, seed, title, source, history) | _extra_attrs(attrs)

    dataset = _build_dataset(fields, arrays, per_sample, x, y, time, periodic_x, periodic_y, attrs)
    encoding = _encoding(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_to_netcdf(dataset, path, encoding)
    logger.info("wrote %s (%d samples, fields %s)", path, n_samples, list(fields))
    return path


def history_entry(action: str) -> str:
    """A CF ``history`` line: ``"<UTC time, ISO 8601>: <action>"``."""
    return f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}: {action}"


def _items(fields: Mapping[str, FieldSpec]) -> list[tuple[str, FieldSpec]]:
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError(f"fields must be a non-empty mapping name -> FieldSpec; got {fields!r:.80}.")
    for name, spec in fields.items():
        if not isinstance(spec, FieldSpec):
            raise TypeError(f"field {name!r}: expected a FieldSpec(data, field_type, units, long_name), "
                            f"got {type(spec).__name__}.")
    return list(fields.items())


def _coordinate(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"coordinate {name!r} must be a non-empty 1-D array; got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"coordinate {name!r} contains NaN or inf; pass finite coordinate values.")
    if values.size > 1 and not np.all(np.diff(values) > 0):
        raise ValueError(f"coordinate {name!r} must be strictly increasing; got {values[:5]}...")
    return values


def _check_uniform(name: str, values: np.ndarray) -> None:
    if values.size < 2:
        raise ValueError(f"coordinate {name!r} needs at least 2 points; got {values.size}.")
    steps = np.diff(values)
    deviation = np.max(np.abs(steps - steps.mean()))
    if deviation > _UNIFORM_RTOL * abs(steps.mean()):
        raise ValueError(
            f"coordinate {name!r} must be uniform (schema 1); its spacing varies by {deviation:.3g} around "
            f"{steps.mean():.6g}. Resample the data onto a uniform grid, e.g. np.linspace."
        )


def _periodic_flags(periodic: bool | tuple[bool, bool]) -> tuple[bool, bool]:
    if isinstance(periodic, (bool, np.bool_)):
        return bool(periodic), bool(periodic)
    if isinstance(periodic, tuple) and len(periodic) == 2 and all(isinstance(p, (bool, np.bool_)) for p in periodic):
        return bool(periodic[0]), bool(periodic[1])
    raise TypeError(f"periodic must be a bool or a tuple (x_periodic, y_periodic) of bools; got {periodic!r}.")


def _field_array(name: str, spec: FieldSpec, n_time: int, n_y: int, n_x: int) -> np.ndarray:
    """Check one field's type, shape and values; return it as float32."""
    if spec.field_type not in FIELD_TYPES:
        raise ValueError(f"field {name!r}: unknown field type {spec.field_type!r}; expected one of {FIELD_TYPES}.")
    data = np.asarray(spec.data)
    if spec.field_type == "vector":
        expected, layout = (None, n_time, 2, n_y, n_x), "(sample, time, 2, y, x), x component first"
    else:
        expected, layout = (None, n_time, n_y, n_x), "(sample, time, y, x)"
    if data.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, data.shape)):
        shown = tuple("sample" if e is None else e for e in expected)
        raise ValueError(
            f"field {name!r} ({spec.field_type}): expected shape {layout} = {shown}; got {data.shape}. "
            "Check the coordinate lengths and the axis order (y before x)."
        )
    if data.shape[0] < 1:
        raise ValueError(f"field {name!r} has no samples; expected at least one.")
    with np.errstate(over="ignore"):  # overflow becomes inf, reported below with its sample index
        data = data.astype(np.float32)
    finite = np.isfinite(data.reshape(data.shape[0], -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"field {name!r} contains NaN or inf (after conversion to float32) in sample(s) "
            f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''} ({bad.size} of {data.shape[0]}). "
            "Reduce the solver time step or drop those samples."
        )
    return data


def _common_sample_count(arrays: Mapping[str, np.ndarray]) -> int:
    counts = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"all fields must have the same number of samples; got {counts}.")
    return next(iter(counts.values()))


def _per_sample_array(name: str, values: np.ndarray, n_samples: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n_samples,):
        raise ValueError(f"per-sample parameter {name!r}: expected shape ({n_samples},); got {values.shape}.")
    return values


def _global_attrs(pde: str, parameters: Mapping[str, object], seed: int, title: str, source: str,
                  history: str | None) -> dict[str, object]:
    try:
        parameters_json = json.dumps(dict(parameters), sort_keys=True)
    except TypeError as error:
        raise TypeError(f"parameters must be JSON-serialisable (numbers, strings, lists); {error}.") from None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    for key, value in (("pde", pde), ("title", title), ("source", source)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a non-empty string; got {value!r}.")
    if history is None:
        history = history_entry("written by fieldsym.data.writer")
    return {
        "Conventions": "CF-1.10",
        "fieldsym_schema_version": SCHEMA_VERSION,
        "title": title,
        "source": source,
        "history": history,
        "fieldsym_pde": pde,
        "fieldsym_parameters": parameters_json,
        "fieldsym_seed": int(seed),
    }


def _extra_attrs(attrs: Mapping[str, str | int | float] | None) -> dict[str, str | int | float]:
    attrs = dict(attrs or {})
    clashes = sorted(set(attrs) & set(_global_attrs("pde", {}, 0, "title", "source", "history")))
    if clashes:
        raise ValueError(f"attrs {clashes} would replace the schema's own global attributes; pass those values "
                         "through the arguments of the same name (pde, parameters, seed, title, source, history), "
                         "or rename the attributes.")
    wrong = {k: type(v).__name__ for k, v in attrs.items()
             if isinstance(v, bool) or not isinstance(v, (str, int, float, np.integer, np.floating))}
    if wrong:
        raise TypeError(f"attrs must map names to strings or numbers; got {wrong}.")
    return attrs


def _axis_attrs(axis: str, periodic: bool) -> dict[str, str]:
    return {"units": "1", "axis": axis.upper(), "long_name": axis, "fieldsym_periodic": "true" if periodic else "false"}


def _build_dataset(fields, arrays, per_sample, x, y, time, periodic_x, periodic_y, attrs) -> xr.Dataset:
    coords = {
        "x": ("x", x, _axis_attrs("x", periodic_x)),
        "y": ("y", y, _axis_attrs("y", periodic_y)),
        "time": ("time", time, {"units": "1", "axis": "T", "long_name": "time"}),
    }
    if any(spec.field_type == "vector" for spec in fields.values()):
        # Fixed-width characters, not a variable-length string: reading a vlen string variable while another
        # netCDF4 handle has the file open and then reopening it crashes netCDF-C (seen with FieldDataset).
        coords["component"] = ("component", np.array(["x", "y"], dtype="S1"), {"long_name": "vector component"})
    data_vars = {}
    for name, spec in fields.items():
        dims = ("sample", "time", "y", "x")
        if spec.field_type == "vector":
            dims = ("sample", "time", "component", "y", "x")
        data_vars[name] = (dims, arrays[name], {
            "units": spec.units, "long_name": spec.long_name, "fieldsym_field_type": spec.field_type,
        })
    for name, values in per_sample.items():
        data_vars[name] = (("sample",), values, {"long_name": f"per-sample parameter {name}"})
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)


def _encoding(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, object]]:
    encoding: dict[str, dict[str, object]] = {
        name: {"dtype": "float32", "zlib": False, "chunksizes": (1, *a.shape[1:]), "_FillValue": None}
        for name, a in arrays.items()
    }
    for name in ("x", "y", "time"):
        encoding[name] = {"_FillValue": None}
    return encoding


def _atomic_to_netcdf(dataset: xr.Dataset, path: Path, encoding: dict) -> None:
    """Write to a temporary file beside ``path`` (same filesystem), then rename it into place.

    The temporary name is chosen here rather than by ``tempfile.mkstemp`` so that the netCDF library
    creates the file with the user's usual permissions (mkstemp's files are private, mode 0600).
    """
    tmp = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:12]}{path.suffix}.tmp")
    try:
        dataset.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
