"""Open and validate a dataset file: schema 1 (DESIGN.md section 3), or a user's own netCDF file.

Validation happens once, up front, and fails with a :class:`DatasetError` that names the file, the
variable and the fix, because the alternative is a shape error or a NaN loss hours into training.
It uses xarray (decoded metadata, clear dimension names) for the cheap structural checks and raw
``netCDF4`` block reads for the one expensive check, the NaN/inf scan over every sample, because raw
reads are 2-3x faster than xarray's (DESIGN.md section 5).

A file is accepted if each requested variable has dimensions, after the optional renaming ``dims``
(user name -> schema name), of one of

    (sample, time, y, x)              scalar or pseudoscalar
    (sample, time, component, y, x)   vector, component of size 2, x first
    (sample, y, x), (sample, component, y, x)   a field constant in time (a coefficient, a forcing)

with 1-D, uniform, increasing coordinate variables ``x`` and ``y``. Periodicity comes from the
coordinates' ``fieldsym_periodic`` attribute or, for a user's file without it, from the caller.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from fieldsym.fields import KINDS
from fieldsym.grid import Grid

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
FIELD_TYPE_ATTR = "fieldsym_field_type"
PERIODIC_ATTR = "fieldsym_periodic"
_UNIFORM_RTOL = 1e-4  # coordinates are often stored in float32: relative rounding ~1e-7 per value
_SCAN_CHUNK_BYTES = 64 * 2**20
_CORRUPT_ADVICE = (
    "the file may be truncated (an interrupted copy or a solver killed while writing) or not a "
    "netCDF4/HDF5 file: check it with `ncdump -h`, then re-copy it or re-run the data script"
)


class DatasetError(ValueError):
    """A dataset file that cannot be used as asked; the message names the file, variable and fix."""


@dataclasses.dataclass(frozen=True)
class VariableInfo:
    """One field variable as found in the file.

    ``kind``: the ``fieldsym_field_type`` attribute, ``None`` when the file has none.
    ``has_time``: whether it has a ``time`` dimension (else it is constant in time).
    ``has_component``: whether it has a ``component`` dimension of size 2 (a stored vector).
    """

    name: str
    kind: str | None
    has_time: bool
    has_component: bool


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What validation learnt about one file: its grid, sizes and the requested variables."""

    path: Path
    grid: Grid
    num_samples: int
    num_times: int
    variables: dict[str, VariableInfo]

    def variable(self, name: str) -> VariableInfo:
        return self.variables[name]


def inspect_file(
    path: str | Path,
    variables: Sequence[str],
    *,
    dims: Mapping[str, str] | None = None,
    periodic: tuple[bool, bool] | None = None,
    check_finite: bool = True,
) -> FileInfo:
    """Validate ``variables`` of the file at ``path`` and describe it.

    Args:
        path: a netCDF4 file.
        variables: the field variables that will be read.
        dims: renaming of the file's dimension names to the schema's, e.g. ``{"batch": "sample"}``.
        periodic: ``(y, x)`` periodicity; overrides the coordinates' ``fieldsym_periodic``.
        check_finite: scan every sample of ``variables`` for NaN, inf and missing values.

    Raises:
        DatasetError: with the file, the variable and the fix.
    """
    path = Path(path)
    rename = dict(dims or {})
    with _open_xarray(path) as ds:
        _check_schema_version(path, ds)
        names = {schema: user for user, schema in rename.items()}
        infos = {v: _inspect_variable(path, ds, v, rename) for v in variables}
        grid = _grid(path, ds, names.get("y", "y"), names.get("x", "x"), periodic)
        num_samples, num_times = _sizes(path, ds, infos, rename)
    if check_finite:
        scan_finite(path, variables)
    logger.info("validated %s: %d samples, %d times, grid %s", path, num_samples, num_times, grid.shape)
    return FileInfo(path, grid, num_samples, num_times, infos)


def check_same_grid(infos: Sequence[FileInfo]) -> None:
    """Raise unless every file has the grid of the first (shape, spacing, origin, periodicity)."""
    first = infos[0]
    for other in infos[1:]:
        same = (
            first.grid.shape == other.grid.shape
            and first.grid.periodic == other.grid.periodic
            and np.allclose(first.grid.spacing, other.grid.spacing, rtol=_UNIFORM_RTOL, atol=0)
            and np.allclose(first.grid.origin, other.grid.origin, rtol=_UNIFORM_RTOL,
                            atol=_UNIFORM_RTOL * max(first.grid.spacing))
        )
        if not same:
            raise DatasetError(
                f"the splits are on different grids: {first.path} has {_describe(first.grid)} but "
                f"{other.path} has {_describe(other.grid)}; every split must share one grid: "
                "regenerate or regrid the odd file"
            )


def scan_finite(path: str | Path, variables: Sequence[str], chunk_bytes: int = _SCAN_CHUNK_BYTES) -> None:
    """Read ``variables`` in chunks of whole samples; raise at the first NaN, inf or missing value.

    Missing values (the variable's ``_FillValue``, e.g. never written) count as bad: they arrive masked.
    """
    path = Path(path)
    stat = path.stat()
    # Each split and each run opens the same file again: a file that passed is not read again while it
    # is unchanged (same size and modification time).
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, tuple(variables))
    if key in _SCANNED:
        return
    with _open_raw(path) as nc:
        for name in variables:
            var = nc.variables[name]
            var.set_auto_mask(True)
            per_sample = max(1, int(np.prod(var.shape[1:])) * var.dtype.itemsize)
            step = max(1, chunk_bytes // per_sample)
            for start in range(0, var.shape[0], step):
                block = _read_raw(path, name, lambda: var[start:start + step])
                _raise_if_bad(path, name, block, start)
    _SCANNED.add(key)


_SCANNED: set[tuple] = set()


def _raise_if_bad(path: Path, name: str, block, start: int) -> None:
    values = np.ma.getdata(block).reshape(block.shape[0], -1)
    bad = ~np.isfinite(values).all(axis=1) | np.ma.getmaskarray(block).reshape(block.shape[0], -1).any(axis=1)
    if bad.any():
        rows = (start + np.flatnonzero(bad)).tolist()
        more = f" (and {len(rows) - 1} more from sample {start} on)" if len(rows) > 1 else ""
        raise DatasetError(
            f"{path}: variable {name!r} has NaN, inf or missing values in sample {rows[0]}{more}; "
            f"the solver probably diverged: regenerate with a smaller time step, or drop the samples, "
            f"e.g. ds.drop_isel(sample={rows[:10]})"
        )


# -- opening ------------------------------------------------------------------------------------------


def _open_xarray(path: Path) -> xr.Dataset:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; check the path (a folder of splits needs train.nc)")
    try:
        # The ``component`` labels are never needed, and not reading them matters: netCDF-C crashes
        # (segfault) on the next open of a file whose variable-length strings were read through a
        # second handle, closed while another handle (a dataset's raw reader) was open.
        return xr.open_dataset(path, engine="netcdf4", decode_times=False, decode_timedelta=False,
                               cache=False, drop_variables=["component"])
    except (OSError, ValueError, RuntimeError) as error:
        raise DatasetError(f"{path}: cannot be opened ({error}); {_CORRUPT_ADVICE}") from error


def _open_raw(path: Path) -> netCDF4.Dataset:
    try:
        return netCDF4.Dataset(path, "r")
    except (OSError, RuntimeError) as error:
        raise DatasetError(f"{path}: cannot be opened ({error}); {_CORRUPT_ADVICE}") from error


def _read_raw(path: Path, name: str, read):
    """Call ``read()``; turn a netCDF/HDF5 failure into a :class:`DatasetError` naming the variable."""
    try:
        return read()
    except (OSError, RuntimeError, IndexError) as error:
        raise DatasetError(f"{path}: reading variable {name!r} failed ({error}); {_CORRUPT_ADVICE}") from error


def _check_schema_version(path: Path, ds: xr.Dataset) -> None:
    version = ds.attrs.get("fieldsym_schema_version")
    if version is not None and str(version) != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: fieldsym_schema_version is {version!r} but this fieldsym reads version "
            f"{SCHEMA_VERSION!r}; convert the file or upgrade fieldsym"
        )


# -- variables -----------------------------------------------------------------------------------------

_LAYOUTS = {
    ("sample", "time", "y", "x"): (True, False),
    ("sample", "time", "component", "y", "x"): (True, True),
    ("sample", "y", "x"): (False, False),
    ("sample", "component", "y", "x"): (False, True),
}


def _inspect_variable(path: Path, ds: xr.Dataset, name: str, rename: Mapping[str, str]) -> VariableInfo:
    if name not in ds.data_vars:
        names = sorted(str(v) for v in ds.data_vars)
        close = difflib.get_close_matches(name, names, n=1)
        raise DatasetError(
            f"{path}: variable {name!r} is missing{f' (did you mean {close[0]!r}?)' if close else ''}; the file "
            f"has {', '.join(names) or 'no variables'}: fix the name (task.inputs / task.outputs in a config, "
            "the DataSpec in Python) or regenerate the file"
        )
    var = ds[name]
    mapped = tuple(rename.get(str(d), str(d)) for d in var.dims)
    if mapped not in _LAYOUTS:
        raise DatasetError(
            f"{path}: variable {name!r} has dimensions {tuple(var.dims)}"
            f"{f' (renamed {mapped})' if mapped != var.dims else ''}; expected (sample, time, y, x) "
            "for a scalar or (sample, time, component, y, x) for a vector (time may be left out for a "
            "field constant in time). Fix: write it with ds.transpose(...) in that order, or map "
            "your dimension names with dims={'your_name': 'sample', ...}"
        )
    has_time, has_component = _LAYOUTS[mapped]
    if has_component and var.shape[mapped.index("component")] != 2:
        raise DatasetError(
            f"{path}: variable {name!r} has a component dimension of size "
            f"{var.shape[mapped.index('component')]}; a vector needs exactly 2 (x first). Store other "
            "multi-channel data as separate scalar variables"
        )
    kind = var.attrs.get(FIELD_TYPE_ATTR)
    if kind is not None and kind not in KINDS:
        raise DatasetError(
            f"{path}: variable {name!r} has {FIELD_TYPE_ATTR}={kind!r}; expected one of "
            f"{', '.join(KINDS)}. Fix the attribute, or give the kind in the data spec"
        )
    return VariableInfo(name, kind, has_time, has_component)


def _sizes(path: Path, ds: xr.Dataset, infos: Mapping[str, VariableInfo],
           rename: Mapping[str, str]) -> tuple[int, int]:
    """Number of samples and of times shared by the requested variables (1 if none has time)."""
    sizes: dict[str, set[int]] = {"sample": set(), "time": set()}
    for name in infos:
        for dim, n in zip(ds[name].dims, ds[name].shape):
            target = rename.get(str(dim), str(dim))
            if target in sizes:
                sizes[target].add(int(n))
    for dim, found in sizes.items():
        if len(found) > 1:
            raise DatasetError(
                f"{path}: the requested variables disagree on the {dim} dimension ({sorted(found)}); "
                "every field must have the same number of samples and times"
            )
    if not sizes["sample"] or min(sizes["sample"]) < 1:
        raise DatasetError(f"{path}: no samples in {', '.join(infos)}; the file is empty")
    return sizes["sample"].pop(), sizes["time"].pop() if sizes["time"] else 1


# -- grid ----------------------------------------------------------------------------------------------


def _grid(path: Path, ds: xr.Dataset, y_name: str, x_name: str,
          periodic: tuple[bool, bool] | None) -> Grid:
    y = _coordinate(path, ds, y_name)
    x = _coordinate(path, ds, x_name)
    flags = tuple(periodic) if periodic is not None else (
        _periodic_flag(path, ds, y_name), _periodic_flag(path, ds, x_name))
    try:
        return Grid.from_coords(y, x, flags, rtol=_UNIFORM_RTOL)  # type: ignore[arg-type]
    except ValueError as error:
        raise DatasetError(f"{path}: {error}") from error


def _coordinate(path: Path, ds: xr.Dataset, name: str) -> np.ndarray:
    if name not in ds.variables or ds[name].ndim != 1:
        raise DatasetError(
            f"{path}: no 1-D coordinate variable {name!r}; add one, e.g. "
            f"ds.assign_coords({name}=np.linspace(0, 1, n, endpoint=False))"
        )
    values = np.array(ds[name].values, dtype=np.float64)  # a writable copy
    steps = np.diff(values)
    if values.size < 2 or not np.all(np.isfinite(values)) or np.any(steps <= 0):
        raise DatasetError(
            f"{path}: coordinate {name!r} must be finite, strictly increasing and have >= 2 points; "
            f"got {values[:4].tolist()}... Reverse a decreasing axis with ds.isel({name}=slice(None, None, -1))"
        )
    worst = float(np.max(np.abs(steps - steps.mean())))
    if worst > _UNIFORM_RTOL * abs(float(steps.mean())):
        raise DatasetError(
            f"{path}: coordinate {name!r} is not uniform: spacing varies from {steps.min():.6g} to "
            f"{steps.max():.6g} (schema 1 needs a uniform grid); resample the data onto np.linspace"
        )
    return values


def _periodic_flag(path: Path, ds: xr.Dataset, name: str) -> bool:
    value = ds[name].attrs.get(PERIODIC_ATTR)
    if value not in ("true", "false"):
        raise DatasetError(
            f"{path}: coordinate {name!r} has {PERIODIC_ATTR}={value!r}; expected \"true\" or \"false\". "
            "Set the attribute, or pass periodic=(y_periodic, x_periodic) in the data spec"
        )
    return value == "true"


def _describe(grid: Grid) -> str:
    return (f"shape (H, W)={grid.shape}, spacing (dy, dx)={tuple(round(s, 8) for s in grid.spacing)}, "
            f"origin={tuple(round(o, 8) for o in grid.origin)}, periodic (y, x)={grid.periodic}")
