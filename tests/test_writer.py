"""The schema-1 writer: every attribute of DESIGN.md section 3, exact round trips, atomic failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from fieldsym.data.writer import FieldSpec, write_dataset

N_SAMPLES, N_TIME, N_Y, N_X = 3, 2, 6, 8


def _fields(rng: np.random.Generator) -> dict[str, FieldSpec]:
    return {
        "density": FieldSpec(rng.standard_normal((N_SAMPLES, N_TIME, N_Y, N_X)), "scalar", "kg m-3", "density"),
        "vorticity": FieldSpec(rng.standard_normal((N_SAMPLES, N_TIME, N_Y, N_X)), "pseudoscalar", "s-1",
                               "vorticity"),
        "velocity": FieldSpec(rng.standard_normal((N_SAMPLES, N_TIME, 2, N_Y, N_X)), "vector", "m s-1", "velocity"),
    }


def _write(path, fields, **overrides):
    arguments = dict(
        x=np.arange(N_X) / N_X, y=np.linspace(0.0, 1.0, N_Y), time=np.array([0.0, 0.5]), periodic=(True, False),
        pde="test_pde", parameters={"nu": 1e-3, "forcing": "none"}, seed=7, title="a test", source="tests 1.0",
        per_sample={"beta": np.arange(N_SAMPLES, dtype=float)}, history="2026-01-01T00:00:00+00:00: by hand",
    )
    arguments.update(overrides)
    return write_dataset(path, fields, **arguments)


def test_written_file_has_every_schema_attribute_and_round_trips(tmp_path):
    fields = _fields(np.random.default_rng(0))
    path = _write(tmp_path / "sub" / "data.nc", fields)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        assert ds.attrs["fieldsym_schema_version"] == "1"
        assert ds.attrs["title"] == "a test" and ds.attrs["source"] == "tests 1.0"
        assert ds.attrs["history"].endswith("by hand")
        assert ds.attrs["fieldsym_pde"] == "test_pde"
        assert json.loads(ds.attrs["fieldsym_parameters"]) == {"nu": 1e-3, "forcing": "none"}
        assert int(ds.attrs["fieldsym_seed"]) == 7
        for axis, periodic in (("x", "true"), ("y", "false")):
            assert ds[axis].attrs["axis"] == axis.upper()
            assert ds[axis].attrs["units"] == "1"
            assert ds[axis].attrs["fieldsym_periodic"] == periodic
        np.testing.assert_array_equal(ds["x"].values, np.arange(N_X) / N_X)
        np.testing.assert_array_equal(ds["time"].values, [0.0, 0.5])
        assert [c.decode() if isinstance(c, bytes) else c for c in ds["component"].values] == ["x", "y"]
        assert ds["velocity"].dims == ("sample", "time", "component", "y", "x")
        assert ds["density"].dims == ("sample", "time", "y", "x")
        np.testing.assert_array_equal(ds["beta"].values, np.arange(N_SAMPLES))
        assert ds["beta"].dims == ("sample",)
        for name, spec in fields.items():
            variable = ds[name]
            assert variable.dtype == np.float32
            assert variable.attrs["fieldsym_field_type"] == spec.field_type
            assert variable.attrs["units"] == spec.units and variable.attrs["long_name"] == spec.long_name
            assert variable.encoding["chunksizes"] == (1, *spec.data.shape[1:])
            assert not variable.encoding["zlib"]
            np.testing.assert_array_equal(variable.values, spec.data.astype(np.float32))


def test_component_coordinate_only_with_vector_fields(tmp_path):
    fields = {"density": _fields(np.random.default_rng(1))["density"]}
    with xr.open_dataset(_write(tmp_path / "scalar.nc", fields, periodic=True)) as ds:
        assert "component" not in ds.coords
        assert ds["y"].attrs["fieldsym_periodic"] == "true"


def test_nan_names_the_sample_and_leaves_no_file(tmp_path):
    fields = _fields(np.random.default_rng(2))
    fields["velocity"].data[2, 1, 0, 3, 4] = np.nan
    target = tmp_path / "data.nc"
    target.write_bytes(b"previous good file")
    with pytest.raises(ValueError, match=r"'velocity'.*sample\(s\) \[2\]"):
        _write(target, fields)
    assert target.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.nc"]


def test_float32_overflow_is_reported_as_inf(tmp_path):
    fields = _fields(np.random.default_rng(3))
    fields["density"].data[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"sample\(s\) \[0\]"):
        _write(tmp_path / "data.nc", fields)


def test_failed_write_removes_the_temporary_file(tmp_path, monkeypatch):
    def write_half_then_fail(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path / "data.nc", _fields(np.random.default_rng(4)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(velocity=FieldSpec(f["velocity"].data[:, :, :1], "vector", "1", "v")),
         r"expected shape \(sample, time, 2, y, x\)"),
        (lambda f: f.update(density=FieldSpec(f["density"].data[..., ::-1, :].swapaxes(-1, -2), "scalar", "1", "d")),
         r"'density' \(scalar\): expected shape"),
        (lambda f: f.update(density=FieldSpec(f["density"].data, "tensor", "1", "d")), "unknown field type 'tensor'"),
        (lambda f: f.update(density=FieldSpec(f["density"].data[:2], "scalar", "1", "d")), "same number of samples"),
    ],
)
def test_bad_fields_are_rejected_with_the_expectation(tmp_path, change, message):
    fields = _fields(np.random.default_rng(5))
    change(fields)
    with pytest.raises(ValueError, match=message):
        _write(tmp_path / "data.nc", fields)
    assert list(tmp_path.iterdir()) == []


def test_non_uniform_coordinate_is_rejected(tmp_path):
    x = np.arange(N_X) / N_X
    x[3] += 0.01
    with pytest.raises(ValueError, match="'x' must be uniform"):
        _write(tmp_path / "data.nc", _fields(np.random.default_rng(6)), x=x)


def test_bad_per_sample_and_parameters_are_rejected(tmp_path):
    fields = _fields(np.random.default_rng(7))
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        _write(tmp_path / "data.nc", fields, per_sample={"beta": np.zeros(4)})
    with pytest.raises(TypeError, match="JSON"):
        _write(tmp_path / "data.nc", fields, parameters={"array": np.zeros(2)})


def test_extra_attributes_are_written_and_logged_under_the_final_name(tmp_path, caplog):
    """Provenance goes in with the fields (no second write to a temporary file), and the log names the
    file the user will find, not the temporary name it was written under."""
    caplog.set_level("INFO", logger="fieldsym.data.writer")
    path = _write(tmp_path / "data.nc", _fields(np.random.default_rng(8)),
                  attrs={"fieldsym_input": "in.nc", "fieldsym_prediction_lead_steps": 2})
    with xr.open_dataset(path, engine="netcdf4") as ds:
        assert ds.attrs["fieldsym_input"] == "in.nc" and int(ds.attrs["fieldsym_prediction_lead_steps"]) == 2
        assert ds.attrs["fieldsym_pde"] == "test_pde"
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"wrote {path}"]


def test_extra_attributes_may_not_replace_the_schemas(tmp_path):
    fields = _fields(np.random.default_rng(9))
    with pytest.raises(ValueError, match=r"attrs \['fieldsym_seed'\] would replace the schema's own.*argument"):
        _write(tmp_path / "data.nc", fields, attrs={"fieldsym_seed": 3})
    with pytest.raises(TypeError, match=r"strings or numbers; got \{'bad': 'list'\}"):
        _write(tmp_path / "data.nc", fields, attrs={"bad": [1, 2]})
    assert list(tmp_path.iterdir()) == []
