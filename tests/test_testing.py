import pytest
import torch

from fieldsym.grid import Grid
from fieldsym.groups import shifts
from fieldsym.testing import assert_equivariant, assert_lie_derivative_small, smooth_random_field
from lie_operators import curl, laplacian


def test_assert_equivariant_passes_for_a_d4_equivariant_operator_and_returns_errors():
    grid = Grid.regular(15)
    errors = assert_equivariant(laplacian(grid), "v:vector, s:scalar", "v:vector, s:scalar", "D4", grid=grid)
    assert set(errors) == {"e", "r1", "r2", "r3", "flip_x", "flip_y", "flip_diag", "flip_antidiag"}


def test_assert_equivariant_names_the_failing_elements():
    grid = Grid.regular(16)
    with pytest.raises(AssertionError, match=r"not C4-equivariant .* r1: "):
        assert_equivariant(lambda u: grid.derivative(u, "x"), "v:vector", "v:vector", "C4", grid=grid)


def test_curl_is_equivariant_only_with_a_pseudoscalar_output():
    grid = Grid.regular(16)
    assert_equivariant(curl(grid), "v:vector", "w:pseudoscalar", "D4", grid=grid)
    with pytest.raises(AssertionError, match="flip_x"):
        assert_equivariant(curl(grid), "v:vector", "w:scalar", "D4", grid=grid)


def test_shifts_group_and_a_module_in_float32():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
    assert_equivariant(conv, "a:scalar, b:scalar", "a:scalar, b:scalar", shifts([(1, 0), (3, -2)]))
    u = torch.randn(2, 2, 16, 16)
    assert_equivariant(conv, "a:scalar, b:scalar", "a:scalar, b:scalar", shifts([(1, 0)]), u=u,
                       dtype=torch.float32)


def test_assert_lie_derivative_small():
    grid = Grid.regular(64)
    u = smooth_random_field("v:vector", grid, batch=1, max_mode=3)
    errors = assert_lie_derivative_small(laplacian(grid), "v:vector", "v:vector", "se2", u, grid, tol=1e-5)
    assert set(errors) == {"Tx", "Ty", "R"}
    with pytest.raises(AssertionError, match="S: "):
        assert_lie_derivative_small(laplacian(grid), "v:vector", "v:vector", ["S"], u, grid, tol=1e-3)
