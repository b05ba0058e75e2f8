import itertools

import pytest
import torch

from fieldsym.fields import D4_MATRICES, Field, FieldType

MIXED = "w:pseudoscalar, v:vector, s:scalar"


@pytest.mark.parametrize("text", [MIXED, "u:vector", "a:scalar, b:scalar", "vorticity:pseudoscalar"])
def test_string_round_trip(text):
    ft = FieldType.parse(text)
    assert str(ft) == text
    assert FieldType.parse(str(ft)) == ft


def test_channel_layout():
    ft = FieldType.parse(MIXED)
    assert ft.num_channels == 4
    assert ft.slices() == {"w": slice(0, 1), "v": slice(1, 3), "s": slice(3, 4)}
    assert (ft + "t:scalar").num_channels == 5


@pytest.mark.parametrize("text, fragment", [
    ("u:tensor", "unknown field type 'tensor'"),
    ("u:vector, u:scalar", "repeated: u"),
    ("u:vector,, v:scalar", "empty entry"),
])
def test_bad_strings_say_what_is_wrong(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        FieldType.parse(text)


def test_channel_count_mismatch_is_named():
    with pytest.raises(ValueError, match=r"needs \(\.\.\., 4, H, W\)"):
        FieldType.parse(MIXED).check(torch.zeros(2, 3, 8, 8))


def _random_matrix(seed, negative_det=False):
    A = torch.randn(2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if (torch.linalg.det(A) < 0) != negative_det:
        A = A[[1, 0]]
    return A


@pytest.mark.parametrize("neg_a, neg_b", list(itertools.product([False, True], repeat=2)))
def test_rho_is_a_homomorphism(neg_a, neg_b):
    ft = FieldType.parse(MIXED)
    A, B = _random_matrix(1, neg_a), _random_matrix(2, neg_b)
    torch.testing.assert_close(ft.rho(A @ B), ft.rho(A) @ ft.rho(B), rtol=1e-12, atol=1e-12)


def test_drho_is_the_derivative_of_rho():
    ft = FieldType.parse(MIXED)
    a = _random_matrix(3)
    t = 1e-6
    numeric = (ft.rho(torch.linalg.matrix_exp(t * a)) - ft.rho(torch.linalg.matrix_exp(-t * a))) / (2 * t)
    torch.testing.assert_close(numeric, ft.drho(a), rtol=1e-8, atol=1e-8)


def _random_u(C, H, W):
    return torch.randn(2, C, H, W, dtype=torch.float64)


@pytest.mark.parametrize("n", [6, 7])
@pytest.mark.parametrize("periodic", [True, False])
def test_actions_compose_like_the_matrices(n, periodic):
    ft = FieldType.parse(MIXED)
    u = _random_u(4, n, n)
    per = (periodic, periodic)
    for (na, A), (nb, B) in itertools.product(D4_MATRICES.items(), repeat=2):
        AB = (torch.tensor(A) @ torch.tensor(B)).tolist()
        lhs = ft.transform(ft.transform(u, B, periodic=per), A, periodic=per)
        torch.testing.assert_close(lhs, ft.transform(u, AB, periodic=per), rtol=0, atol=0, msg=f"{na}*{nb}")


def test_quarter_turn_is_rot90_on_a_node_centred_grid():
    # Independent computation: torch.rot90(k=1) turns the picture clockwise when y grows with the row
    # index (DESIGN.md section 5), so the counter-clockwise turn is k=-1; the components turn with J.
    ft = FieldType.parse("v:vector, w:pseudoscalar")
    u = _random_u(3, 9, 9)
    out = ft.transform(u, D4_MATRICES["r1"], periodic=(False, False))
    moved = torch.rot90(u, -1, dims=(-2, -1))
    expected = torch.stack([-moved[:, 1], moved[:, 0], moved[:, 2]], dim=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_quarter_turn_on_the_periodic_grid_is_about_the_domain_centre():
    # On a periodic axis the reflection is j -> -j mod N: rot90 about the middle node, then one cell.
    ft = FieldType.parse("s:scalar")
    u = _random_u(1, 8, 8)
    out = ft.transform(u, D4_MATRICES["r1"])
    expected = torch.roll(torch.rot90(u, -1, dims=(-2, -1)), shifts=1, dims=-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_a_vector_pointing_along_x_points_along_y_after_a_counter_clockwise_turn():
    ft = FieldType.parse("v:vector")
    u = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    u[:, 0] = 1
    out = ft.transform(u, D4_MATRICES["r1"])
    assert torch.all(out[:, 0] == 0) and torch.all(out[:, 1] == 1)


def test_pseudoscalar_changes_sign_under_reflections_only():
    ps, s = FieldType.parse("w:pseudoscalar"), FieldType.parse("w:scalar")
    u = torch.ones(1, 1, 4, 4)
    for name, A in D4_MATRICES.items():
        sign = round(float(torch.linalg.det(torch.tensor(A, dtype=torch.float64))))
        assert torch.all(ps.transform(u, A) == sign), name
        assert torch.all(s.transform(u, A) == 1), name


def test_shift_is_roll_and_is_refused_on_a_non_periodic_axis():
    ft = FieldType.parse("v:vector")
    u = _random_u(2, 6, 7)
    out = ft.transform(u, shift=(2, -1))
    torch.testing.assert_close(out, torch.roll(u, shifts=(-1, 2), dims=(-2, -1)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a symmetry of a non-periodic axis"):
        ft.transform(u, shift=(1, 0), periodic=(True, False))


def test_quarter_turn_needs_a_square_grid():
    with pytest.raises(ValueError, match="square grid"):
        FieldType.parse("s:scalar").transform(_random_u(1, 6, 7), D4_MATRICES["r1"])


def test_non_lattice_matrix_is_refused():
    with pytest.raises(ValueError, match="signed permutation"):
        FieldType.parse("s:scalar").transform(_random_u(1, 6, 6), [[0.6, -0.8], [0.8, 0.6]])


def test_field_rejects_unknown_kind_directly():
    with pytest.raises(ValueError, match="expected one of scalar, pseudoscalar, vector"):
        Field("u", "spinor")
