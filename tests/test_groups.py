import math

import pytest
import torch

from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import (C4, D4, R, S, Generator, Tx, Ty, algebra, bracket, finite_group,
                             structure_constants)
from fieldsym.lie import flow, generator_action
from fieldsym.testing import smooth_random_field

MIXED = FieldType.parse("v:vector, w:pseudoscalar, s:scalar")


def _gen_vec(g):
    return torch.cat([g.matrix().flatten(), g.translation()])


@pytest.mark.parametrize("x, y, expected", [
    (R, Tx, Ty), (R, Ty, Tx.scaled(-1)), (S, Tx, Tx), (S, Ty, Ty), (Tx, Ty, Generator("0")), (R, S, Generator("0")),
])
def test_brackets_of_the_named_basis(x, y, expected):
    torch.testing.assert_close(_gen_vec(bracket(x, y)), _gen_vec(expected))


@pytest.mark.parametrize("x, y", [(R, Tx), (R, Ty), (S, Tx), (R, S)])
def test_bracket_matches_the_commutator_of_the_field_actions(x, y):
    # The action is a homomorphism: X_x X_y u - X_y X_x u = X_[x,y] u (stated in groups.py).
    grid = Grid.regular(64)
    u = smooth_random_field(MIXED, grid, batch=1, max_mode=3)

    def act(g, v):
        return generator_action(v, g, MIXED, grid)

    commutator = act(x, act(y, u)) - act(y, act(x, u))
    expected = act(bracket(x, y), u)
    # The fields vanish near the seam, where a (x - c) jumps, so spectral derivatives are exact.
    scale = torch.linalg.vector_norm(act(x, act(y, u)))
    assert float(torch.linalg.vector_norm(commutator - expected) / scale) < 1e-5
    if bool(expected.any()):
        # the opposite convention (an anti-homomorphism) is clearly distinguishable
        assert float(torch.linalg.vector_norm(commutator + expected) / scale) > 0.1


def test_structure_constants_of_se2():
    C = structure_constants([Tx, Ty, R])
    assert C[2, 0].tolist() == pytest.approx([0, 1, 0])  # [R, Tx] = Ty
    assert C[2, 1].tolist() == pytest.approx([-1, 0, 0])  # [R, Ty] = -Tx
    assert C[0, 1].abs().max() == 0
    with pytest.raises(ValueError, match="is not in span"):
        structure_constants([R, Tx])


def test_exponentials():
    A, b = R.exp(math.pi / 2)
    torch.testing.assert_close(A, torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64))
    A, b = Tx.exp(0.3)
    torch.testing.assert_close(b, torch.tensor([0.3, 0.0], dtype=torch.float64))
    A, _ = S.exp(math.log(2))
    torch.testing.assert_close(A, 2 * torch.eye(2, dtype=torch.float64))


def test_flow_of_R_for_a_quarter_turn_is_the_discrete_counter_clockwise_turn():
    # This pins the sign conventions of generators, rho and the lattice action together.
    grid = Grid.regular(64)
    X, Y = grid.coords(centred=True)
    blob = torch.exp(-((X - 0.12) ** 2 + (Y - 0.05) ** 2) / (2 * 0.05**2))
    u = torch.stack([blob * (1 + 3 * X), 3 * blob * Y, blob, blob * X])[None]
    turned = flow(u, R, math.pi / 2, MIXED, grid, steps=300)
    r1 = C4.element("r1").act(u, MIXED)
    r3 = C4.element("r3").act(u, MIXED)
    assert float(torch.linalg.vector_norm(turned - r1) / torch.linalg.vector_norm(r1)) < 1e-7
    assert float(torch.linalg.vector_norm(turned - r3) / torch.linalg.vector_norm(r3)) > 0.5


def test_flow_of_Tx_by_whole_cells_is_a_shift():
    grid = Grid.regular(32)
    u = smooth_random_field(MIXED, grid, batch=1, localized=False)
    moved = flow(u, Tx, 3 * grid.spacing[1], MIXED, grid, steps=60)
    torch.testing.assert_close(moved, torch.roll(u, 3, dims=-1), rtol=1e-7, atol=1e-7)


def test_groups_are_closed_and_act_as_homomorphisms():
    for group in (C4, D4):
        mats = {tuple(map(tuple, g.matrix().tolist())) for g in group}
        for g in group:
            for h in group:
                assert tuple(map(tuple, (g.matrix() @ h.matrix()).tolist())) in mats
    assert len(C4) == 4 and len(D4) == 8
    u = torch.randn(1, 4, 7, 7, dtype=torch.float64)
    for g in D4:
        back = g.inverse().act(g.act(u, MIXED), MIXED)
        torch.testing.assert_close(back, u, rtol=0, atol=0)


def test_algebra_specs():
    assert [g.name for g in algebra("se2")] == ["Tx", "Ty", "R"]
    assert [g.name for g in algebra("sim2+scalings", MIXED)][-3:] == ["A[v]", "A[w]", "A[s]"]
    assert [g.name for g in algebra(["Tx", "R"])] == ["Tx", "R"]
    with pytest.raises(ValueError, match="unknown generator or algebra 'Q'"):
        algebra("se2+Q")
    with pytest.raises(ValueError, match="needs the field type"):
        algebra("scalings")
    with pytest.raises(ValueError, match="unknown group"):
        finite_group("C8")


def test_generator_for_the_wrong_dimension_is_refused():
    with pytest.raises(ValueError, match=r"needs a \(2, 2\) matrix and a 2-vector"):
        Generator("bad", a=[[1.0, 0.0, 0.0]] * 3)
    with pytest.raises(ValueError, match="2-vector"):
        Generator("bad", beta=(1.0, 0.0, 0.0))


def test_combinations_are_named():
    g = Generator.combine([(0.71, Tx), (0.71, Ty)])
    assert g.name == "0.71 Tx + 0.71 Ty"
    assert g.beta == pytest.approx((0.71, 0.71))
