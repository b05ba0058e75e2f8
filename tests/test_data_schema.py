"""Validation of dataset files: every failure names the file, the variable and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fieldsym.data.dataset import FieldDataset
from fieldsym.data.schema import DatasetError, inspect_file, scan_finite
from fieldsym.data.spec import DataSpec
from fieldsym.data.writer import FieldSpec, write_dataset

N, T, H, W = 6, 3, 8, 8


def _write(path, *, n=N, dx=1.0 / W, kinds=("pseudoscalar", "vector")):
    rng = np.random.default_rng(0)
    fields = {}
    if "pseudoscalar" in kinds:
        fields["w"] = FieldSpec(rng.standard_normal((n, T, H, W)), "pseudoscalar", "1/s", "vorticity")
    if "vector" in kinds:
        fields["v"] = FieldSpec(rng.standard_normal((n, T, 2, H, W)), "vector", "m/s", "velocity")
    return write_dataset(path, fields, x=np.arange(W) * dx, y=np.arange(H) / H, time=np.arange(T) * 0.1,
                         periodic=True, pde="test", parameters={}, seed=0, title="t", source="tests")


def _user_file(path, w, *, dims=("sample", "time", "y", "x"), x=None, attrs=None, coord_attrs=None):
    """A file written by hand with xarray, without fieldsym's writer (and its checks)."""
    sizes = dict(zip(dims, w.shape))
    coords = {d: (d, np.arange(sizes[d]) / sizes[d], dict(coord_attrs or {})) for d in dims if d in "xy"}
    if x is not None:
        coords["x"] = ("x", x, dict(coord_attrs or {}))
    ds = xr.Dataset({"w": (dims, w.astype(np.float32), dict(attrs or {}))}, coords=coords)
    ds.to_netcdf(path, engine="netcdf4")
    return path


PERIODIC = {"fieldsym_periodic": "true"}
SCALAR = {"fieldsym_field_type": "scalar"}


def _error(path, variables=("w",), **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        inspect_file(path, variables, **kwargs)
    return str(info.value)


def test_valid_file_is_described(tmp_path):
    info = inspect_file(_write(tmp_path / "a.nc"), ["w", "v"])
    assert (info.num_samples, info.num_times, info.grid.shape) == (N, T, (H, W))
    assert info.grid.periodic == (True, True)
    assert info.variable("w").kind == "pseudoscalar" and info.variable("v").has_component


def test_missing_variable(tmp_path):
    path = _write(tmp_path / "a.nc")
    message = _error(path, ["vorticity"])
    assert str(path) in message and "'vorticity' is missing" in message and "the file has v, w" in message
    # Both users are told where the name lives: a config's task.inputs / task.outputs, or a DataSpec.
    assert "task.inputs / task.outputs in a config, the DataSpec in Python" in message
    assert "did you mean" not in message  # nothing like 'vorticity' in the file


def test_missing_variable_suggests_a_close_name(tmp_path):
    message = _error(_write(tmp_path / "a.nc"), ["ww"])
    assert "'ww' is missing (did you mean 'w'?); the file has v, w: fix the name" in message


def test_wrong_dimensions(tmp_path):
    path = _user_file(tmp_path / "a.nc", np.zeros((N, T, W, H + 1)), dims=("sample", "time", "x", "y"),
                      attrs=SCALAR, coord_attrs=PERIODIC)
    message = _error(path)
    assert str(path) in message and "'w'" in message and "('sample', 'time', 'x', 'y')" in message
    assert "transpose" in message


def test_non_uniform_coordinate(tmp_path):
    x = np.cumsum(np.linspace(0.1, 0.2, W))
    path = _user_file(tmp_path / "a.nc", np.zeros((N, T, H, W)), x=x, attrs=SCALAR, coord_attrs=PERIODIC)
    message = _error(path)
    assert str(path) in message and "coordinate 'x' is not uniform" in message and "resample" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_value_names_the_sample(tmp_path, bad):
    w = np.zeros((N, T, H, W))
    w[4, 1, 2, 3] = bad
    path = _user_file(tmp_path / "a.nc", w, attrs=SCALAR, coord_attrs=PERIODIC)
    message = _error(path)
    assert str(path) in message and "'w'" in message and "in sample 4" in message
    inspect_file(path, ["w"], check_finite=False)  # structurally fine: only the scan objects


def test_non_finite_scan_reads_in_chunks(tmp_path):
    w = np.zeros((N, T, H, W))
    w[5, 0, 0, 0] = np.nan
    path = _user_file(tmp_path / "a.nc", w, attrs=SCALAR, coord_attrs=PERIODIC)
    with pytest.raises(DatasetError, match="in sample 5"):
        scan_finite(path, ["w"], chunk_bytes=2 * T * H * W * 4)  # two samples per read


def test_unknown_field_type(tmp_path):
    path = _user_file(tmp_path / "a.nc", np.zeros((N, T, H, W)), attrs={"fieldsym_field_type": "tensor"},
                      coord_attrs=PERIODIC)
    message = _error(path)
    assert str(path) in message and "'w'" in message and "'tensor'" in message and "pseudoscalar" in message


def test_grids_differ_between_splits(tmp_path):
    _write(tmp_path / "train.nc")
    _write(tmp_path / "valid.nc", dx=2.0 / W)
    with pytest.raises(DatasetError) as info:
        FieldDataset(tmp_path, DataSpec(["w"], ["w"]), "train")
    message = str(info.value)
    assert "different grids" in message and "train.nc" in message and "valid.nc" in message


def test_truncated_file(tmp_path):
    path = _write(tmp_path / "a.nc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _error(path)
    assert str(path) in message and "truncated" in message and "ncdump" in message


def test_corrupt_file(tmp_path):
    path = tmp_path / "a.nc"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    message = _error(path)
    assert str(path) in message and "cannot be opened" in message


def test_missing_file(tmp_path):
    assert "no such file" in _error(tmp_path / "nope.nc")


def test_user_file_needs_periodicity_or_mapping(tmp_path):
    """A file without fieldsym attributes is read once the spec supplies what the file lacks."""
    w = np.arange(N * T * H * W, dtype=np.float32).reshape(N, T, H, W)
    path = tmp_path / "user.nc"
    ds = xr.Dataset({"w": (("batch", "t", "lat", "lon"), w)},
                    coords={"lat": np.linspace(0, 1, H, endpoint=False), "lon": np.linspace(0, 1, W, endpoint=False)})
    ds.to_netcdf(path, engine="netcdf4")
    rename = {"batch": "sample", "t": "time", "lat": "y", "lon": "x"}
    assert "'batch'" in _error(path)  # unknown dimension names
    assert "fieldsym_periodic" in _error(path, dims=rename)
    info = inspect_file(path, ["w"], dims=rename, periodic=(True, False))
    assert info.grid.periodic == (True, False) and info.variable("w").kind is None
    spec = DataSpec([("w", "w")], [("w", "w", "scalar")], dims=rename, periodic=(True, True))
    with pytest.raises(DatasetError, match="no fieldsym_field_type attribute"):
        FieldDataset(path, spec)
    spec = DataSpec([("w", "w", "scalar")], [("w", "w", "scalar")], dims=rename, periodic=(True, True))
    x, y = FieldDataset(path, spec)[2]
    assert np.array_equal(x[0].numpy(), w[2, 0]) and np.array_equal(y[0].numpy(), w[2, -1])


def test_wrong_schema_version(tmp_path):
    path = tmp_path / "a.nc"
    xr.Dataset({"w": (("sample", "time", "y", "x"), np.zeros((1, 1, H, W), np.float32))},
               attrs={"fieldsym_schema_version": "2"}).to_netcdf(path, engine="netcdf4")
    assert "fieldsym_schema_version is '2'" in _error(path)


def test_kind_override_must_match_layout(tmp_path):
    path = _write(tmp_path / "a.nc")
    with pytest.raises(DatasetError, match="read as a vector but variable 'w' has no component"):
        FieldDataset(path, DataSpec([("w", "w", "vector")], ["w"]))
