import math

import pytest
import torch

from fieldsym.grid import Grid


def test_spectral_derivatives_are_exact_on_trigonometric_polynomials():
    grid = Grid.regular((24, 30), extent=2.0)
    X, Y = grid.coords()
    u = torch.sin(2 * math.pi * 3 * X / 2) * torch.cos(2 * math.pi * 2 * Y / 2)
    dudx = (3 * math.pi) * torch.cos(3 * math.pi * X) * torch.cos(2 * math.pi * Y)
    dudyy = -(2 * math.pi) ** 2 * u
    torch.testing.assert_close(grid.derivative(u, "x"), dudx, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(grid.derivative(u, "y", 2), dudyy, rtol=1e-11, atol=1e-10)


def _fd_error(n):
    grid = Grid.regular(n, periodic=False)
    X, Y = grid.coords()
    u = torch.exp(X) * torch.sin(2 * Y)
    return float((grid.derivative(u, "x") - u).abs().max()), float(
        (grid.derivative(u, "y") - 2 * torch.exp(X) * torch.cos(2 * Y)).abs().max())


def test_finite_differences_converge_at_fourth_order_up_to_the_boundary():
    errs = [_fd_error(n) for n in (17, 33, 65)]
    for axis in range(2):
        orders = [math.log2(errs[i][axis] / errs[i + 1][axis]) for i in range(2)]
        assert all(3.6 < p < 4.6 for p in orders), orders


def test_from_coords_accepts_uniform_and_refuses_non_uniform():
    x = torch.linspace(0, 1, 9)
    g = Grid.from_coords(x, x, (False, False))
    assert g.spacing == pytest.approx((0.125, 0.125))
    bad = x.clone()
    bad[4] += 0.01
    with pytest.raises(ValueError, match="coordinate x is not uniform"):
        Grid.from_coords(x, bad, (False, False))


def test_centre_quadrature_and_window():
    g = Grid.regular(8)
    assert g.centre == pytest.approx((0.5, 0.5))
    gn = Grid.regular(9, periodic=False)
    assert gn.centre == pytest.approx((0.5, 0.5))
    assert float(gn.quadrature_weights().sum()) == pytest.approx(1.0)
    assert float(g.quadrature_weights().sum()) == pytest.approx(1.0)
    w = Grid.regular(64).window(0.2)
    assert float(w[32, 32]) == 1.0 and float(w[0, :].abs().max()) == 0.0
    assert float(w.min()) >= 0 and float(w.max()) <= 1


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match=">= 5 nodes"):
        Grid.regular(4, periodic=False)
    with pytest.raises(ValueError, match="grid is"):
        Grid.regular(8).derivative(torch.zeros(1, 9, 8), "x")
    with pytest.raises(ValueError, match="axis must be"):
        Grid.regular(8).derivative(torch.zeros(8, 8), "z")


def test_float32_coordinates_of_a_fine_uniform_grid_are_accepted():
    x = (torch.arange(2048, dtype=torch.float64) * 2 * math.pi / 2048).to(torch.float32)
    g = Grid.from_coords(x, x, (True, True))
    assert g.spacing[1] == pytest.approx(2 * math.pi / 2048, rel=1e-6)
