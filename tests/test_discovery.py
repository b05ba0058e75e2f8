"""Discovery recovers the known symmetry subalgebra of analytic operators (float64)."""

import json

import pytest
import torch

from fieldsym.discovery import discover, name_combination, name_subspace
from fieldsym.grid import Grid
from fieldsym.testing import smooth_random_field
from lie_operators import cubic, grad_div, laplacian, random_multiplier

GRID = Grid.regular(48)
VEC = smooth_random_field("v:vector", GRID, batch=6, max_mode=3)
SCA = smooth_random_field("s:scalar", GRID, batch=6, max_mode=3)
Y = GRID.coords()[1]


def _advect_along_x(u):
    """a(y) du/dx: moves along x with a speed that depends on y — symmetric under Tx only."""
    return torch.sin(2 * torch.pi * Y) * GRID.derivative(u, "x")


CASES = {
    "laplacian": (laplacian(GRID), VEC, "v:vector", {"1.00 Tx", "1.00 Ty", "1.00 R", "1.00 A[v]"}),
    "grad_div": (grad_div(GRID), VEC, "v:vector", {"1.00 Tx", "1.00 Ty", "1.00 R", "1.00 A[v]"}),
    "grad_div_without_fiber_term": (grad_div(GRID), VEC, "a:scalar, b:scalar",
                                    {"1.00 Tx", "1.00 Ty", "0.71 A[a] + 0.71 A[b]"}),
    "advection_along_x": (_advect_along_x, SCA, "s:scalar", {"1.00 Tx", "1.00 A[s]"}),
    "random_multiplier": (random_multiplier(GRID), SCA, "s:scalar", {"1.00 Tx", "1.00 Ty", "1.00 A[s]"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recovers_the_symmetry_subalgebra(name):
    op, u, ft, expected = CASES[name]
    result = discover(op, u, ft, ft, GRID)
    assert set(result.symmetries) == expected, result.table()
    assert result.gap > 1e3


def test_a_combination_is_named_as_one_direction():
    X = GRID.coords()[0]
    f = torch.sin(2 * torch.pi * (X + Y))  # depends on x + y: only Tx - Ty survives
    result = discover(lambda u: f * u, SCA, "s:scalar", "s:scalar", GRID, candidates="se2")
    assert result.symmetries == ["0.71 Tx - 0.71 Ty"], result.table()


def test_dilation_combined_with_amplitude_scaling():
    # |u|^2 u is homogeneous of degree 3: L_S = L_A = 2F, so S - A is the null direction, not S or A.
    result = discover(cubic, VEC, "v:vector", "v:vector", GRID)
    assert set(result.symmetries) == {"1.00 Tx", "1.00 Ty", "1.00 R", "0.71 S - 0.71 A[v]"}, result.table()


def test_report_parts_are_consistent_and_serialisable():
    result = discover(laplacian(GRID), VEC, "v:vector", "v:vector", GRID, bootstrap=50)
    assert result.singular_values == sorted(result.singular_values, reverse=True)
    assert len(result.singular_std) == len(result.candidates)
    dims = [d for _, d in result.sweep]
    assert dims == sorted(dims) and dims[0] == 0 and dims[-1] == len(result.candidates)
    assert max(result.discrete_errors.values()) < 1e-12
    assert max(result.floor) < 0.05  # gelu aliases a little even on smooth fields
    json.dumps(result.to_dict())
    assert "symmetries: 1.00 Tx" in result.table()


def test_naming_helpers():
    assert name_combination([0.0, -0.5, 0.5], ["Tx", "Ty", "R"]) == "0.71 Ty - 0.71 R"
    basis = torch.tensor([[0.6, 0.8], [0.8, -0.6], [0.0, 0.0]], dtype=torch.float64)
    assert name_subspace(basis, ["Tx", "Ty", "R"]) == ["1.00 Tx", "1.00 Ty"]


def test_without_a_clear_gap_nothing_above_the_floor_is_called_a_symmetry():
    X = GRID.coords()[0]
    # f varies along every direction, so no combination a Tx + b Ty is a symmetry, and both are broken alike
    f = 1 + 0.5 * torch.sin(2 * torch.pi * X) + 0.5 * torch.sin(2 * torch.pi * Y)
    u = smooth_random_field("s:scalar", GRID, batch=6, localized=False)
    result = discover(lambda v: f * v, u, "s:scalar", "s:scalar", GRID, candidates="translations")
    assert result.gap < 10 and result.symmetries == [], result.table()
    assert "no clear gap" in result.table()


def test_an_exactly_symmetric_operator_gives_a_finite_report():
    result = discover(lambda u: 2 * u, SCA, "s:scalar", "s:scalar", GRID, candidates="se2")
    assert result.symmetries == ["1.00 Tx", "1.00 Ty", "1.00 R"]
    json.loads(json.dumps(result.to_dict(), allow_nan=False))


def _heat(grid: Grid, t: float = 2e-3):
    """``exp(t lap)``: a radial spectral multiplier, rotation-equivariant and non-local like an FNO layer."""
    ky = torch.fft.fftfreq(grid.shape[0], grid.spacing[0])[:, None]
    kx = torch.fft.rfftfreq(grid.shape[1], grid.spacing[1])[None, :]
    multiplier = torch.exp(-t * (2 * torch.pi) ** 2 * (kx**2 + ky**2))
    return lambda u: torch.fft.irfft2(torch.fft.rfft2(u) * multiplier, s=grid.shape)


FULL = smooth_random_field("s:scalar", GRID, batch=6, max_mode=3, localized=False)  # fills the box


def test_fields_that_fill_a_periodic_box_are_localised_for_rotations():
    from fieldsym.groups import algebra
    from fieldsym.lie import localize, needs_localizing

    se2, translations = algebra("se2"), algebra("translations")
    assert needs_localizing(se2, GRID, FULL) and not needs_localizing(se2, GRID, SCA)
    assert not needs_localizing(translations, GRID, FULL)
    assert not needs_localizing(se2, Grid.regular(48, periodic=False), FULL)
    quiet = localize(FULL + 3.0, GRID)  # a background value is kept, the fluctuation localised
    assert not needs_localizing(se2, GRID, quiet)
    # Near the seam (the corner) it is the field's mean exactly; at the centre the field itself.
    mean = (FULL + 3.0).mean(dim=(-2, -1))
    assert torch.allclose(quiet[..., 0, 0], mean, rtol=0, atol=1e-14)
    assert torch.allclose(quiet[..., 24, 24], FULL[..., 24, 24] + 3.0, rtol=0, atol=1e-14)


def test_a_nonlocal_rotation_equivariant_operator_keeps_r_on_fields_that_fill_the_box():
    heat = _heat(GRID)
    found = discover(heat, FULL, "s:scalar", "s:scalar", GRID, candidates="se2")
    assert found.localized and set(found.symmetries) == {"1.00 Tx", "1.00 Ty", "1.00 R"}, found.table()
    # Without localising, R.u jumps at the seam and the operator spreads the jump: R looks broken.
    raw = discover(heat, FULL, "s:scalar", "s:scalar", GRID, candidates="se2", localized=False)
    assert not raw.localized and "1.00 R" not in raw.symmetries, raw.table()
    assert raw.column_norms["R"] > 10 * found.column_norms["R"]


def test_accuracy_floor_is_the_error_fields_motion_and_sets_the_threshold():
    heat = _heat(GRID)
    targets = heat(FULL)
    # A uniform 3% gain error: xi.E = 0.03 xi.y exactly, for every generator.
    found = discover(lambda u: 1.03 * heat(u), FULL, "s:scalar", "s:scalar", GRID, candidates="se2",
                     targets=targets)
    assert found.accuracy_floor == pytest.approx({"Tx": 0.03, "Ty": 0.03, "R": 0.03}, rel=1e-9)
    # A slightly broken operator: R broken at a level below what its own error hides -> R is kept ...
    X = GRID.coords()[0]
    bent = lambda u: heat(u) * (1 + 0.02 * torch.sin(2 * torch.pi * X))  # noqa: E731
    noisy = discover(bent, FULL, "s:scalar", "s:scalar", GRID, candidates="se2", targets=targets)
    assert min(noisy.accuracy_floor.values()) > 0 and noisy.threshold >= max(noisy.accuracy_floor.values())
    plain = discover(bent, FULL, "s:scalar", "s:scalar", GRID, candidates="se2")
    # ... while without targets only the discretisation floor bounds the threshold, and Tx is broken.
    assert "1.00 Tx" not in plain.symmetries and plain.threshold < noisy.threshold, plain.table()
    with pytest.raises(ValueError, match="one output per input"):
        discover(heat, FULL, "s:scalar", "s:scalar", GRID, candidates="se2", targets=targets[:2])


def test_null_space_names_single_generators_first_then_the_rest():
    from fieldsym.discovery import name_null_space

    names = ["Tx", "Ty", "S", "A"]
    # span{Tx, Ty, S - A} written in a tilted basis, as an SVD returns it
    basis = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    tilt = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    tilted = basis.double() @ tilt
    alone = torch.tensor([True, True, False, False])
    assert name_null_space(tilted, names, alone) == ["1.00 Tx", "1.00 Ty", "0.71 S - 0.71 A"]
    # Approximate null vectors lean towards S: row-echelon names carry the lean, single names do not.
    leaning = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, -0.2], [0.0, 0.0]], dtype=torch.float64) @ tilt[:2, :2]
    assert name_subspace(leaning, names) == ["0.96 Tx + 0.29 S", "0.98 Ty - 0.20 S"]
    assert name_null_space(leaning, names, torch.tensor([True, True, False, False])) == ["1.00 Tx", "1.00 Ty"]
    # More single candidates than null dimensions: no claim for each, the plain row-echelon names.
    assert name_null_space(tilted[:, :1], names, torch.tensor([True, True, True, False])) == \
        name_subspace(tilted[:, :1], names)
    assert name_null_space(torch.zeros(4, 0), names, torch.zeros(4, dtype=torch.bool)) == []
