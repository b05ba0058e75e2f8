"""FieldDataset: field selection, time selection, splits, laziness; symmetric normalisation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import xarray as xr

from fieldsym.data.dataset import FieldDataset
from fieldsym.data.normalization import FieldNormalizer, fit_normalizers
from fieldsym.data.schema import DatasetError
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset
from fieldsym.fields import D4_MATRICES, FieldType

N, T, H, W = 10, 4, 8, 8


def _value(sample, time, channel=0):
    """Every grid point of sample ``s`` at time ``t`` holds ``100 s + 10 t + channel`` (+ a pattern)."""
    return 100 * sample + 10 * time + channel


def _write(path, n=N):
    s = np.arange(n)[:, None, None, None]
    t = np.arange(T)[None, :, None, None]
    pattern = np.linspace(0, 0.5, H * W).reshape(1, 1, H, W)
    w = _value(s, t) + pattern
    fields = {
        "w": FieldSpec(w, "pseudoscalar", "1/s", "vorticity"),
        "v": FieldSpec(np.stack([w + 1, w + 2], axis=2), "vector", "m/s", "velocity"),
        "u": FieldSpec(w + 3, "scalar", "m/s", "x velocity"),
        "uy": FieldSpec(w + 4, "scalar", "m/s", "y velocity"),
    }
    return write_dataset(path, fields, x=np.arange(W) / W, y=np.arange(H) / H, time=np.arange(T) * 0.5,
                         periodic=True, pde="test", parameters={}, seed=0, title="t", source="tests")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("data") / "a.nc")


def _corner(t):
    return t[..., 0, 0].round().long().tolist()


def test_one_step_pairs(path):
    ds = FieldDataset(path, DataSpec(["w", "v"], ["w"], TimeSelection(t_in=1)))
    assert str(ds.in_type) == "w:pseudoscalar, v:vector" and str(ds.out_type) == "w:pseudoscalar"
    assert len(ds) == N
    x, y = ds[3]
    assert x.shape == (3, H, W) and y.shape == (1, H, W) and x.dtype == torch.float32
    assert _corner(x) == [310, 311, 312] and _corner(y) == [330]
    assert ds.grid.shape == (H, W) and ds.grid.periodic == (True, True)
    assert np.allclose(ds.grid.axis("x").numpy(), np.arange(W) / W) and ds.grid.spacing == (1 / H, 1 / W)


def test_two_scalars_map_onto_one_vector(path):
    ds = FieldDataset(path, DataSpec([("velocity", ["u", "uy"])], [("velocity", ["u", "uy"])]))
    assert str(ds.in_type) == "velocity:vector"
    x, _ = ds[2]
    assert _corner(x) == [203, 204]
    # As a vector, its components turn with the grid: A = J sends (u_x, u_y) to (-u_y, u_x).
    r1 = D4_MATRICES["r1"]
    moved = FieldType.parse("a:scalar, b:scalar").transform(x, r1)
    assert torch.equal(ds.in_type.transform(x, r1), torch.stack([-moved[1], moved[0]]))


def test_multi_step_inputs_are_time_major_copies(path):
    ds = FieldDataset(path, DataSpec(["w", "v"], ["w"], TimeSelection("multi_step", t_in=1, steps=2)))
    assert str(ds.in_type) == "w_t0:pseudoscalar, v_t0:vector, w_t1:pseudoscalar, v_t1:vector"
    assert ds.resolved.in_groups == {"w_t0": "w", "v_t0": "v", "w_t1": "w", "v_t1": "v"}
    x, y = ds[5]
    assert _corner(x) == [510, 511, 512, 520, 521, 522] and _corner(y) == [530]


def test_rollout_pairs_every_consecutive_window(path):
    ds = FieldDataset(path, DataSpec(["w"], ["w"], TimeSelection("rollout")))
    assert len(ds) == N * (T - 1)
    x, y = ds.read(0, len(ds))
    assert _corner(x[:, 0]) == [100 * s + 10 * t for s in range(N) for t in range(T - 1)]
    assert torch.allclose(y, x + 10)


def test_time_selection_out_of_range(path):
    with pytest.raises(DatasetError, match="outside the file's 0..3"):
        FieldDataset(path, DataSpec(["w"], ["w"], TimeSelection("multi_step", t_in=2, steps=2)))


def test_in_memory_equals_streamed(path):
    spec = DataSpec(["w", ("uv", ["u", "uy"])], ["v"], TimeSelection("rollout", steps=2))
    streamed = FieldDataset(path, spec, in_memory=False)
    held = FieldDataset(path, spec, in_memory=True)
    automatic = FieldDataset(path, spec)  # a few kB: under the default limit
    assert not streamed.in_memory and held.in_memory and automatic.in_memory
    assert not FieldDataset(path, spec, memory_limit=1000).in_memory
    for start, stop in [(0, len(streamed)), (3, 7), (5, 6)]:
        a, b = streamed.read(start, stop), held.read(start, stop)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_split_of_one_file_is_seeded_and_disjoint(path):
    spec = DataSpec(["w"], ["w"])
    parts = {s: FieldDataset(path, spec, s, fractions=(0.6, 0.2, 0.2), seed=3).samples
             for s in ("train", "valid", "test")}
    assert [len(p) for p in parts.values()] == [6, 2, 2]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(N))
    again = FieldDataset(path, spec, "valid", fractions=(0.6, 0.2, 0.2), seed=3)
    assert np.array_equal(again.samples, parts["valid"])
    assert not np.array_equal(FieldDataset(path, spec, "train", fractions=(0.6, 0.2, 0.2), seed=4).samples,
                              parts["train"])
    x, _ = again[1]
    assert _corner(x) == [100 * parts["valid"][1]]


def test_folder_of_split_files(tmp_path):
    for split, n in (("train", 5), ("valid", 3)):
        _write(tmp_path / f"{split}.nc", n=n)
    spec = DataSpec(["w"], ["w"])
    assert len(FieldDataset(tmp_path, spec, "train")) == 5 and len(FieldDataset(tmp_path, spec, "valid")) == 3
    with pytest.raises(DatasetError, match="no test.nc"):
        FieldDataset(tmp_path, spec, "test")
    with pytest.raises(DatasetError, match="name the split"):
        FieldDataset(tmp_path, spec)


def test_pickles_without_its_file_handle(path):
    ds = FieldDataset(path, DataSpec(["w"], ["w"]), in_memory=False)
    before = ds[4]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store._handle is None
    assert torch.equal(clone[4][0], before[0])


def test_field_constant_in_time(tmp_path):
    """A variable without a time dimension (a coefficient) is read at every time."""
    path = _write(tmp_path / "a.nc")
    with xr.open_dataset(path, drop_variables=["component"]) as ds:
        ds = ds.load()
    ds["a"] = (("sample", "y", "x"), np.full((N, H, W), 7, np.float32), {"fieldsym_field_type": "scalar"})
    ds[["a", "w"]].to_netcdf(tmp_path / "b.nc", engine="netcdf4")
    data = FieldDataset(tmp_path / "b.nc", DataSpec(["a", "w"], ["w"], TimeSelection("rollout")))
    x, _ = data.read(0, len(data))
    assert len(data) == N * (T - 1) and (x[:, 0] == 7).all()


def test_index_out_of_range(path):
    ds = FieldDataset(path, DataSpec(["w"], ["w"]))
    with pytest.raises(IndexError):
        ds[N]
    assert torch.equal(ds[-1][0], ds[N - 1][0])


# -- normalisation ---------------------------------------------------------------------------------------


TYPE = FieldType.parse("s:scalar, p:pseudoscalar, v:vector")


def _random_normalizer():
    u = torch.randn(16, 4, 6, 6, dtype=torch.float64) * torch.tensor([2.0, 3.0, 0.5, 4.0]).reshape(4, 1, 1)
    u = u + torch.tensor([5.0, 1.0, -2.0, 3.0]).reshape(4, 1, 1)
    return FieldNormalizer.fit([u[:8], u[8:]], TYPE), u


def test_normalizer_statistics_respect_field_types():
    norm, u = _random_normalizer()
    assert norm.shift[0] == pytest.approx(u[:, 0].mean().item()) and norm.shift[1:].eq(0).all()
    assert norm.scale[0] == pytest.approx(u[:, 0].std(unbiased=False).item())
    assert norm.scale[1] == pytest.approx(u[:, 1].pow(2).mean().sqrt().item())
    rms = (u[:, 2] ** 2 + u[:, 3] ** 2).mean().sqrt().item()
    assert norm.scale[2] == pytest.approx(rms) and norm.scale[3] == norm.scale[2]


@pytest.mark.parametrize("element", sorted(D4_MATRICES))
def test_normalizer_commutes_with_d4(element):
    norm, u = _random_normalizer()
    A = D4_MATRICES[element]
    for shift in ((0, 0), (2, 3)):
        lhs = norm.encode(TYPE.transform(u, A, shift))
        rhs = TYPE.transform(norm.encode(u), A, shift)
        assert torch.allclose(lhs, rhs, atol=1e-12)


def test_normalizer_round_trip_and_weights_only_state(tmp_path):
    norm, u = _random_normalizer()
    assert torch.allclose(norm.decode(norm.encode(u)), u, atol=1e-12)
    torch.save(norm.state_dict(), tmp_path / "n.pt")
    loaded = FieldNormalizer.from_state_dict(torch.load(tmp_path / "n.pt", weights_only=True))
    assert torch.equal(loaded.encode(u), norm.encode(u)) and str(loaded.field_type) == str(TYPE)


def test_normalizer_rejects_symmetry_breaking_state():
    with pytest.raises(ValueError, match="shift must be 0"):
        FieldNormalizer(TYPE, torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.ones(4))
    with pytest.raises(ValueError, match="one scale for both"):
        FieldNormalizer(TYPE, torch.zeros(4), torch.tensor([1.0, 1.0, 1.0, 2.0]))


def test_fit_normalizers_streams_the_dataset_and_pools_steps(path):
    ds = FieldDataset(path, DataSpec(["u", "w"], ["v"], TimeSelection("multi_step", steps=2)), in_memory=False)
    norm_in, norm_out = fit_normalizers(ds, block_size=3)
    x, y = ds.read(0, len(ds))
    steps = torch.cat([x[:, 0], x[:, 2]]).double()  # u at both input steps, pooled
    assert norm_in.shift[0] == pytest.approx(steps.mean().item()) and norm_in.shift[2] == norm_in.shift[0]
    assert norm_in.shift[1] == 0 and norm_out.shift.eq(0).all()
    assert norm_out.scale[0] == pytest.approx(y.double().pow(2).sum(1).mean().sqrt().item())
