"""The Lie derivative on operators whose symmetry is known (float64 throughout)."""

import math

import pytest
import torch

from fieldsym.grid import Grid
from fieldsym.groups import C4, D4, R, S, Tx, Ty
from fieldsym.lie import equivariance_errors, generator_action, lie_derivative, lie_derivative_errors
from fieldsym.testing import smooth_random_field
from lie_operators import (componentwise_square, cubic, curl, divergence, grad_div, gradient, laplacian,
                           leray, random_multiplier)

SE2 = [Tx, Ty, R]
VEC, SCA, PSE = "v:vector", "s:scalar", "w:pseudoscalar"

EQUIVARIANT = {  # name: (operator factory, output type)
    "laplacian": (laplacian, VEC),
    "grad_div": (grad_div, VEC),
    "divergence": (divergence, SCA),
    "curl": (curl, PSE),
    "cubic": (lambda g: cubic, VEC),
}


@pytest.mark.parametrize("name", list(EQUIVARIANT))
def test_equivariant_operators_have_a_vanishing_lie_derivative_on_the_periodic_box(name):
    grid = Grid.regular(64)
    u = smooth_random_field(VEC, grid, batch=2, max_mode=3)
    factory, out_type = EQUIVARIANT[name]
    errors = lie_derivative_errors(factory(grid), u, SE2, VEC, out_type, grid)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("name", list(EQUIVARIANT))
def test_lie_derivative_shrinks_at_fourth_order_with_finite_differences(name):
    factory, out_type = EQUIVARIANT[name]
    errors = []
    for n in (32, 64, 128):
        grid = Grid.regular(n, periodic=False)
        u = smooth_random_field(VEC, grid, batch=1, max_mode=3)
        errors.append(lie_derivative_errors(factory(grid), u, [R], VEC, out_type, grid)["R"])
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(r > 8 for r in ratios), (errors, ratios)  # 4th order would be 16 in the limit
    assert errors[-1] < 1e-3


def test_leray_projection_is_rotation_equivariant():
    # Leray output must stay away from the seam too: build u = grad(phi) + perp-grad(psi) from localized
    # potentials, whose projection perp-grad(psi) is localized.
    grid = Grid.regular(64)
    phi, psi = smooth_random_field("p:scalar, q:scalar", grid, batch=2, max_mode=3).split(1, dim=1)
    grad = gradient(grid)
    perp = grad(psi)
    u = grad(phi) + torch.cat([perp[:, 1:2], -perp[:, 0:1]], dim=1)
    errors = lie_derivative_errors(leray(grid), u, SE2, VEC, VEC, grid)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("op_name", ["d/dx", "componentwise square", "random multiplier"])
def test_operators_without_rotation_symmetry_have_order_one_lie_derivative(op_name):
    grid = Grid.regular(64)
    u = smooth_random_field(VEC, grid, batch=2, max_mode=3)
    op = {"d/dx": lambda v: grid.derivative(v, "x"),
          "componentwise square": componentwise_square,
          "random multiplier": random_multiplier(grid)}[op_name]
    assert lie_derivative_errors(op, u, [R], VEC, VEC, grid)["R"] > 0.1
    if op_name != "random multiplier":  # these still commute with translations
        assert max(lie_derivative_errors(op, u, [Tx, Ty], VEC, VEC, grid).values()) < 1e-10


def test_dropping_the_fiber_term_makes_grad_div_look_broken():
    # Treating the two components as unrelated scalars drops d rho(a) u: grad-div then fails under R,
    # which proves the vector action really is applied in the test above.
    grid = Grid.regular(64)
    u = smooth_random_field(VEC, grid, batch=2, max_mode=3)
    as_vector = lie_derivative_errors(grad_div(grid), u, [R], VEC, VEC, grid)["R"]
    as_scalars = lie_derivative_errors(grad_div(grid), u, [R], "a:scalar, b:scalar", "a:scalar, b:scalar", grid)["R"]
    assert as_vector < 1e-5 and as_scalars > 0.1


def test_jvp_and_central_differences_agree_to_second_order():
    grid = Grid.regular(32)
    u = smooth_random_field(VEC, grid, batch=2, max_mode=3)
    exact = lie_derivative(cubic, u, [R, S, Tx], VEC, VEC, grid, method="jvp")
    diffs = []
    for step in (1e-2, 1e-3):
        fd = lie_derivative(cubic, u, [R, S, Tx], VEC, VEC, grid, method="fd", fd_step=step)
        diffs.append(float(torch.linalg.vector_norm(fd - exact) / torch.linalg.vector_norm(exact)))
    order = math.log10(diffs[0] / diffs[1])
    assert 1.8 < order < 2.2, (diffs, order)


def test_lie_derivative_is_differentiable_for_penalties():
    grid = Grid.regular(16)
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    u = smooth_random_field(VEC, grid, batch=1, localized=False)
    L = lie_derivative(lambda v: w * componentwise_square(v), u, [R], VEC, VEC, grid)
    L.pow(2).sum().backward()
    assert w.grad is not None and float(w.grad.abs()) > 0


def test_discrete_errors_of_a_spectral_laplacian_are_rounding():
    grid = Grid.regular(17)
    u = smooth_random_field("v:vector, w:pseudoscalar", grid, batch=2, localized=False)
    errors = equivariance_errors(laplacian(grid), u, D4, "v:vector, w:pseudoscalar", "v:vector, w:pseudoscalar")
    assert max(errors.values()) < 1e-12, errors
    broken = equivariance_errors(lambda v: grid.derivative(v, "x"), u[:, :2], C4, VEC, VEC)
    assert broken["e"] < 1e-14 and broken["r1"] > 0.1


def test_generator_action_checks_its_input():
    grid = Grid.regular(16)
    with pytest.raises(ValueError, match="needs \\(\\.\\.\\., 2, H, W\\)"):
        generator_action(torch.zeros(1, 3, 16, 16), R, VEC, grid)
    with pytest.raises(ValueError, match="grid is \\(16, 16\\)"):
        generator_action(torch.zeros(1, 2, 8, 8), R, VEC, grid)
    with pytest.raises(ValueError, match="batch, channel, H, W"):
        lie_derivative(cubic, torch.zeros(2, 16, 16), [R], VEC, VEC, grid)


@pytest.mark.parametrize("method", ["fd", "fd1"])
def test_finite_differences_survive_an_all_zero_sample(method):
    grid = Grid.regular(16)
    u = smooth_random_field(VEC, grid, batch=2, localized=False)
    u[1] = 0
    fd = lie_derivative(cubic, u, [Tx, R], VEC, VEC, grid, method=method)
    exact = lie_derivative(cubic, u, [Tx, R], VEC, VEC, grid, method="jvp")
    assert torch.isfinite(fd).all() and float(fd[:, 1].abs().max()) == 0.0
    assert float(torch.linalg.vector_norm(fd - exact) / torch.linalg.vector_norm(exact)) < 1e-2  # O(step) for fd1
