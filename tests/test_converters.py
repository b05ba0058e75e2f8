"""Converters from PDEBench HDF5 and neuraloperator .pt files: round trips through schema 1."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from fieldsym.data.converters import convert_neuralop, convert_pdebench
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.schema import DatasetError, inspect_file
from fieldsym.data.spec import DataSpec, TimeSelection

N, T, NX, NY = 3, 4, 8, 6  # a non-square grid catches a forgotten x/y swap


def _pdebench_cfd(path):
    """A flat PDEBench CFD file: arrays indexed [sample, time, x, y], t-coordinate with T + 1 entries."""
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal((N, T, NX, NY)).astype(np.float32) for k in ("density", "pressure", "Vx", "Vy")}
    with h5py.File(path, "w") as f:
        for k, a in arrays.items():
            f[k] = a
        f["x-coordinate"] = (np.arange(NX) + 0.5) / NX
        f["y-coordinate"] = (np.arange(NY) + 0.5) / NY
        f["t-coordinate"] = np.linspace(0, 1, T + 1)
    return arrays


def test_pdebench_cfd_round_trip(tmp_path):
    arrays = _pdebench_cfd(tmp_path / "cfd.hdf5")
    out = convert_pdebench(tmp_path / "cfd.hdf5", tmp_path / "cfd.nc", periodic=(True, True))
    info = inspect_file(out, ["density", "pressure", "velocity"])
    assert info.grid.shape == (NY, NX) and info.num_times == T and info.variable("velocity").kind == "vector"
    ds = FieldDataset(out, DataSpec(["density", "velocity"], ["pressure"], TimeSelection(t_in=1, t_out=2)))
    x, y = ds[2]
    # schema (y, x) = PDEBench [x, y] transposed; velocity = (Vx, Vy), x first
    assert np.array_equal(x[0].numpy(), arrays["density"][2, 1].T)
    assert np.array_equal(x[1].numpy(), arrays["Vx"][2, 1].T) and np.array_equal(x[2].numpy(), arrays["Vy"][2, 1].T)
    assert np.array_equal(y[0].numpy(), arrays["pressure"][2, 2].T)
    assert np.allclose(ds.grid.axis("x").numpy(), (np.arange(NX) + 0.5) / NX)


def test_pdebench_darcy_and_explicit_fields(tmp_path):
    rng = np.random.default_rng(1)
    nu, u = rng.random((N, NX, NY)), rng.random((N, 1, NX, NY))
    with h5py.File(tmp_path / "darcy.hdf5", "w") as f:
        f["nu"], f["tensor"] = nu, u
        f["x-coordinate"], f["y-coordinate"] = np.linspace(0, 1, NX), np.linspace(0, 1, NY)
    out = convert_pdebench(tmp_path / "darcy.hdf5", tmp_path / "darcy.nc", periodic=(False, False),
                           fields={"nu": "scalar", "tensor": "scalar"}, max_samples=2)
    ds = FieldDataset(out, DataSpec(["nu"], ["tensor"]))
    assert len(ds) == 2 and ds.grid.periodic == (False, False)
    x, y = ds[1]
    assert np.allclose(x[0].numpy(), nu[1].T) and np.allclose(y[0].numpy(), u[1, 0].T)


def test_pdebench_grouped_channels(tmp_path):
    """Reaction-diffusion layout: one group per sample, data (T, X, Y, C); C=2 here is two scalars."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((N, T, NX, NY, 2))
    with h5py.File(tmp_path / "rd.h5", "w") as f:
        for i in range(N):
            g = f.create_group(f"{i:04d}")
            g["data"] = data[i]
            g["grid/x"], g["grid/y"], g["grid/t"] = np.arange(NX) / NX, np.arange(NY) / NY, np.arange(T) * 0.1
    out = convert_pdebench(tmp_path / "rd.h5", tmp_path / "rd.nc", periodic=(True, True))
    ds = FieldDataset(out, DataSpec(["data_0", "data_1"], ["data_1"]))
    assert str(ds.in_type) == "data_0:scalar, data_1:scalar"
    x, _ = ds[1]
    assert np.allclose(x[1].numpy(), data[1, 0, :, :, 1].T)
    as_vector = convert_pdebench(tmp_path / "rd.h5", tmp_path / "rd_v.nc", periodic=(True, True),
                                 fields={"data": "vector"})
    assert inspect_file(as_vector, ["data"]).variable("data").kind == "vector"


def test_pdebench_ambiguous_or_bad_shapes(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["u"] = np.zeros((N, 5, 7))
        f["x-coordinate"], f["y-coordinate"] = np.arange(NX) / NX, np.arange(NY) / NY
    with pytest.raises(DatasetError, match=r"array 'u' has shape \(3, 5, 7\)"):
        convert_pdebench(tmp_path / "bad.h5", tmp_path / "bad.nc", periodic=(True, True))


def test_neuralop_round_trip(tmp_path):
    x = torch.randn(N, 3, NY, NX)  # a scalar and a vector
    y = torch.randn(N, NY, NX)
    torch.save({"x": x, "y": y}, tmp_path / "ns.pt")
    out = convert_neuralop(tmp_path / "ns.pt", tmp_path / "ns.nc", input_type="w:pseudoscalar, f:vector",
                           output_type="u:scalar", periodic=(True, False))
    ds = FieldDataset(out, DataSpec(["w", "f"], ["u"], TimeSelection(t_in=0, t_out=0)))
    assert str(ds.in_type) == "w:pseudoscalar, f:vector" and ds.grid.periodic == (True, False)
    assert np.allclose(ds.grid.axis("x").numpy(), np.arange(NX) / (NX - 1))
    a, b = ds.read(0, N)
    assert torch.equal(a, x) and torch.equal(b[:, 0], y)


def test_neuralop_channel_mismatch(tmp_path):
    torch.save({"x": torch.randn(N, 2, NY, NX), "y": torch.randn(N, NY, NX)}, tmp_path / "d.pt")
    with pytest.raises(DatasetError, match="needs \\(N, 1, H, W\\)"):
        convert_neuralop(tmp_path / "d.pt", tmp_path / "d.nc", periodic=(True, True))
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="cannot be loaded"):
        convert_neuralop(tmp_path / "junk.pt", tmp_path / "j.nc", periodic=(True, True))


def test_pdebench_missing_array(tmp_path):
    _pdebench_cfd(tmp_path / "cfd.hdf5")
    with pytest.raises(DatasetError, match="no array 'rho'; the file has"):
        convert_pdebench(tmp_path / "cfd.hdf5", tmp_path / "cfd.nc", periodic=(True, True), fields={"rho": "scalar"})
