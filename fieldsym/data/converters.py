"""Convert other benchmarks' 2-D files into schema-1 netCDF (via :func:`~fieldsym.data.writer.write_dataset`).

Two sources:

- **PDEBench HDF5.** Either *flat*: top-level arrays ``(N, T, X, Y)``, ``(N, X, Y)`` (constant in time,
  e.g. Darcy's ``nu``), or with a trailing channel axis ``(N, [T,] X, Y, C)``, plus ``x-coordinate``,
  ``y-coordinate`` and optionally ``t-coordinate`` (the 2-D CFD files: ``density``, ``pressure``,
  ``Vx``, ``Vy``; Darcy: ``tensor (N, 1, X, Y)``, ``nu``); or *grouped*: one group per sample holding
  ``data (T, X, Y, C)`` and ``grid/x``, ``grid/y``, ``grid/t`` (reaction-diffusion, shallow water).
  PDEBench indexes space as ``[x, y]`` (its grids come from ``meshgrid(x, y, indexing="ij")``), so the
  spatial axes are swapped into the schema's ``(y, x)`` unless ``xy_order="yx"``. Which axis is time and
  which is a channel axis is read off the coordinate lengths, never guessed from a shape alone.
- **neuraloperator ``.pt``.** A dict with tensors ``x`` and ``y`` of ``(N, H, W)`` or ``(N, C, H, W)``
  (rows = ``y``), on the unit square; the field types of their channels are given by the caller.

Field types are the caller's to state: ``fields`` maps a source array to its kind and ``vectors`` maps two
scalar arrays onto one vector. By default every array is a scalar, except PDEBench's ``Vx``, ``Vy``, which
become the vector ``velocity`` (a vector stored as two scalars would lose its symmetry). The whole
selection is read into memory before writing: convert large files in pieces with ``max_samples``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import torch

from fieldsym.fields import FieldType

from .schema import DatasetError
from .writer import FieldSpec, write_dataset

logger = logging.getLogger(__name__)

_COORDS = ("x-coordinate", "y-coordinate", "t-coordinate")
PDEBENCH_VECTORS = {"velocity": ("Vx", "Vy")}


def convert_pdebench(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    periodic: tuple[bool, bool],
    fields: Mapping[str, str] | None = None,
    vectors: Mapping[str, tuple[str, str]] | None = None,
    xy_order: Literal["xy", "yx"] = "xy",
    max_samples: int | None = None,
    pde: str = "pdebench",
) -> Path:
    """Convert a PDEBench 2-D HDF5 file to schema 1 at ``dst``.

    Args:
        periodic: ``(y_periodic, x_periodic)``; PDEBench keeps it in the file name only.
        fields: source array -> ``scalar | pseudoscalar | vector`` (a vector needs a trailing channel
            axis of 2, x first; a scalar array with ``C > 1`` channels becomes ``name_0 .. name_{C-1}``).
            Default: every array not used by ``vectors``, as a scalar.
        vectors: new vector name -> ``(x source, y source)`` scalar arrays. When neither ``fields`` nor
            ``vectors`` is given: ``Vx, Vy -> velocity`` if both exist.
        xy_order: the order of the spatial axes in the file (PDEBench: ``"xy"``).
        max_samples: convert only the first samples.
    """
    src = Path(src)
    if xy_order not in ("xy", "yx"):
        raise ValueError(f"xy_order must be 'xy' (PDEBench) or 'yx'; got {xy_order!r}")
    raw, x, y, t, fields, vectors = _read_pdebench(src, max_samples, fields, vectors)
    paired = [s for pair in vectors.values() for s in pair]
    spatial = (len(x), len(y)) if xy_order == "xy" else (len(y), len(x))
    arrays = {k: _standard(src, k, raw[k], spatial, xy_order) for k in [*fields, *paired]}
    T = _time_length(src, arrays)
    specs: dict[str, FieldSpec] = {}
    for name, kind in fields.items():
        specs.update(_field_specs(src, name, kind, arrays[name], T))
    for name, pair in vectors.items():
        parts = [_scalar(src, s, arrays[s], T) for s in pair]
        specs[name] = FieldSpec(np.stack(parts, axis=2), "vector", "unknown", f"{name} from {', '.join(pair)}")
    time = t[:T] if t is not None and len(t) >= T else np.arange(T, dtype=np.float64)
    logger.info("converting %s: %s", src, ", ".join(f"{k}:{v.field_type}" for k, v in specs.items()))
    return write_dataset(
        dst, specs, x=x, y=y, time=time, periodic=(periodic[1], periodic[0]), pde=pde,
        parameters={"converted_from": src.name, "xy_order": xy_order}, seed=0,
        title=f"{src.stem} (PDEBench)", source=f"PDEBench file {src.name}, converted by fieldsym",
    )


def convert_neuralop(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    input_type: str | FieldType = "a:scalar",
    output_type: str | FieldType = "u:scalar",
    periodic: tuple[bool, bool],
    extent: tuple[float, float] = (1.0, 1.0),
    pde: str = "neuralop",
) -> Path:
    """Convert a neuraloperator ``.pt`` file (``{"x": ..., "y": ...}``) to schema 1 at ``dst``.

    Input and output fields are written at the single time 0; read them with
    ``DataSpec(inputs, outputs, TimeSelection(t_in=0, t_out=0))``. Coordinates: on a periodic axis of
    ``N`` points ``j L / N``, otherwise ``j L / (N - 1)``; ``extent`` and ``periodic`` are ``(y, x)``.
    """
    src = Path(src)
    try:
        data = torch.load(src, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise DatasetError(f"{src}: cannot be loaded as a tensor dict ({error}); expected a torch.save "
                           "of {'x': tensor, 'y': tensor}") from error
    if not isinstance(data, Mapping) or not {"x", "y"} <= set(data):
        raise DatasetError(f"{src}: expected a dict with tensors 'x' and 'y'; got "
                           f"{sorted(data) if isinstance(data, Mapping) else type(data).__name__}")
    types = (FieldType.parse(input_type), FieldType.parse(output_type))
    clash = set(types[0].names) & set(types[1].names)
    if clash:
        raise ValueError(f"input and output field names must differ in one file; both have {sorted(clash)}")
    specs = {}
    for key, field_type in zip(("x", "y"), types):
        specs.update(_typed_channels(src, key, data[key], field_type))
    H, W = next(iter(specs.values())).data.shape[-2:]
    y, x = (_axis(n, length, per) for n, length, per in zip((H, W), extent, periodic))
    return write_dataset(
        dst, specs, x=x, y=y, time=np.zeros(1), periodic=(periodic[1], periodic[0]), pde=pde,
        parameters={"converted_from": src.name, "input_type": str(types[0]), "output_type": str(types[1])},
        seed=0, title=f"{src.stem} (neuraloperator)", source=f"neuraloperator file {src.name}, converted by fieldsym",
    )


# -- PDEBench ------------------------------------------------------------------------------------------------


def _read_pdebench(src: Path, max_samples: int | None, fields, vectors):
    """``(arrays, x, y, t or None, fields, vectors)`` from a flat or grouped PDEBench file.

    Only the arrays of the selection (:func:`_select`) are read; arrays are ``(N, ...)`` in file order.
    """
    try:
        with h5py.File(src, "r") as f:
            if "z-coordinate" in f:
                raise DatasetError(f"{src}: a 3-D PDEBench file (z-coordinate found); fieldsym reads 2-D data")
            groups = [k for k in f if isinstance(f[k], h5py.Group)]
            if groups and all("data" in f[k] for k in groups):
                fields, vectors = _select(src, ["data"], fields, vectors)
                return (*_read_grouped(f, sorted(groups)[:max_samples]), fields, vectors)
            return _read_flat(src, f, max_samples, fields, vectors)
    except OSError as error:
        raise DatasetError(f"{src}: cannot be opened as HDF5 ({error}); check the file is complete") from error


def _select(src: Path, names: list[str], fields: Mapping[str, str] | None,
            vectors: Mapping[str, tuple[str, str]] | None) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The fields and vectors to convert, with the defaults of :func:`convert_pdebench`."""
    if fields is None and vectors is None:
        vectors = {k: v for k, v in PDEBENCH_VECTORS.items() if set(v) <= set(names)}
    vectors = dict(vectors or {})
    paired = [s for pair in vectors.values() for s in pair]
    fields = dict(fields) if fields is not None else {k: "scalar" for k in names if k not in paired}
    missing = sorted((set(fields) | set(paired)) - set(names))
    if missing:
        raise DatasetError(f"{src}: no array {', '.join(map(repr, missing))}; the file has {', '.join(names)}")
    return fields, vectors


def _read_flat(src: Path, f: h5py.File, max_samples: int | None, fields, vectors):
    missing = [c for c in _COORDS[:2] if c not in f]
    if missing:
        raise DatasetError(f"{src}: no {', '.join(missing)}; a flat PDEBench file needs x-coordinate and "
                           "y-coordinate datasets")
    available = [k for k in f if k not in _COORDS and isinstance(f[k], h5py.Dataset)]
    fields, vectors = _select(src, available, fields, vectors)
    wanted = [*fields, *(s for pair in vectors.values() for s in pair)]
    arrays = {k: np.asarray(f[k][:max_samples]) for k in wanted}
    t = np.asarray(f["t-coordinate"], dtype=np.float64) if "t-coordinate" in f else None
    x, y = np.asarray(f["x-coordinate"], np.float64), np.asarray(f["y-coordinate"], np.float64)
    return arrays, x, y, t, fields, vectors


def _read_grouped(f: h5py.File, names: list[str]):
    data = np.stack([np.asarray(f[k]["data"]) for k in names])  # (N, T, X, Y, C)
    grid = f[names[0]]["grid"]
    return ({"data": data}, np.asarray(grid["x"], np.float64), np.asarray(grid["y"], np.float64),
            np.asarray(grid["t"], np.float64))


def _standard(src: Path, name: str, a: np.ndarray, spatial: tuple[int, int], xy_order: str) -> np.ndarray:
    """``a`` as ``(N, T or 1, Y, X, C or 1)``; time and channel axes are told apart by the grid sizes."""
    with_time = a.ndim in (4, 5) and a.shape[2:4] == spatial
    with_channel = a.ndim == 5 or (a.ndim == 4 and a.shape[1:3] == spatial)
    if a.ndim == 3 and a.shape[1:] == spatial:
        a = a[:, None, :, :, None]
    elif a.ndim == 4 and with_time != with_channel:
        a = a[..., None] if with_time else a[:, None]
    elif not (a.ndim == 5 and with_time):
        shape = "(N, T, X, Y), (N, X, Y), (N, X, Y, C) or (N, T, X, Y, C)"
        raise DatasetError(
            f"{src}: array {name!r} has shape {a.shape}; with the grid {spatial} (file order) expected "
            f"{shape}{' (ambiguous: T equals a grid size)' if with_time and with_channel else ''}; "
            "convert it by hand, or pass fields=... without it"
        )
    return np.swapaxes(a, 2, 3) if xy_order == "xy" else a


def _time_length(src: Path, arrays: Mapping[str, np.ndarray]) -> int:
    lengths = {a.shape[1] for a in arrays.values() if a.shape[1] > 1}
    if len(lengths) > 1:
        raise DatasetError(f"{src}: arrays have different numbers of time steps {sorted(lengths)}; "
                           "convert them into separate files")
    return lengths.pop() if lengths else 1


def _field_specs(src: Path, name: str, kind: str, a: np.ndarray, T: int) -> dict[str, FieldSpec]:
    """FieldSpecs of one standard array: a vector from 2 channels, else one scalar per channel."""
    a = np.broadcast_to(a, (a.shape[0], T, *a.shape[2:]))  # constant-in-time arrays repeat
    if kind == "vector":
        if a.shape[-1] != 2:
            raise DatasetError(f"{src}: {name!r} has {a.shape[-1]} channels; a vector needs 2 (x first)")
        return {name: FieldSpec(np.moveaxis(a, -1, 2), "vector", "unknown", name)}
    if a.shape[-1] == 1:
        return {name: FieldSpec(a[..., 0], kind, "unknown", name)}
    return {f"{name}_{c}": FieldSpec(a[..., c], kind, "unknown", f"{name} channel {c}") for c in range(a.shape[-1])}


def _scalar(src: Path, name: str, a: np.ndarray, T: int) -> np.ndarray:
    if a.shape[-1] != 1:
        raise DatasetError(f"{src}: {name!r} has {a.shape[-1]} channels; a vector component must be one")
    return np.broadcast_to(a[..., 0], (a.shape[0], T, *a.shape[2:4]))


# -- neuraloperator ------------------------------------------------------------------------------------------


def _typed_channels(src: Path, key: str, tensor, field_type: FieldType) -> dict[str, FieldSpec]:
    """Split ``tensor`` ``(N, [C,] H, W)`` into the fields of ``field_type``, each ``(N, 1, ...)`` in time."""
    a = torch.as_tensor(tensor).detach().cpu().numpy()
    a = a[:, None] if a.ndim == 3 else a
    if a.ndim != 4 or a.shape[1] != field_type.num_channels:
        raise DatasetError(
            f"{src}: {key!r} has shape {tuple(a.shape)}; the field type '{field_type}' needs "
            f"(N, {field_type.num_channels}, H, W) (or (N, H, W) for one channel); fix the field type"
        )
    specs = {}
    for f, sl in zip(field_type, field_type.slices().values()):
        part = a[:, None, sl] if f.kind == "vector" else a[:, None, sl.start]
        specs[f.name] = FieldSpec(part, f.kind, "unknown", f"{f.name} (neuraloperator {key!r})")
    return specs


def _axis(n: int, length: float, periodic: bool) -> np.ndarray:
    return np.arange(n) * (length / (n if periodic else n - 1))
