"""The Lie-derivative null-space solver recovers the known SO(2)/O(2) intertwiners: channel maps
(vector -> vector is span{I, J} under SO(2), span{I} under O(2); scalar -> vector is empty) and angular
spectral kernels (gradient, divergence, curl), and every basis element passes a finite-rotation check."""

import math

import pytest
import torch

from fieldsym.constraints import (
    Irreps,
    channel_basis,
    harmonic_values,
    irrep_drho,
    irrep_reflection,
    null_space,
    spectral_basis,
)

J = [[0.0, -1.0], [1.0, 0.0]]
LABELS = ("0", "0-", "1", "2")


def assert_same_span(basis: torch.Tensor, expected: list) -> None:
    """``basis`` (``(n, ...)``, orthonormal) spans the same space as the ``expected`` tensors."""
    B = basis.reshape(basis.shape[0], -1)
    E = torch.stack([torch.as_tensor(e, dtype=torch.float64).reshape(-1) for e in expected])
    Q = torch.linalg.qr(E.T).Q
    assert B.shape[0] == E.shape[0], f"null space has dimension {B.shape[0]}, expected {E.shape[0]}"
    torch.testing.assert_close(B.T @ B, Q @ Q.T, atol=1e-12, rtol=0)


def harmonic(L: int, out_dim: int, in_dim: int, terms: dict) -> torch.Tensor:
    """Harmonic coefficients ``(2L+1, out, in)`` from ``{harmonic index: (out, in) matrix}``."""
    c = torch.zeros(2 * L + 1, out_dim, in_dim, dtype=torch.float64)
    for h, m in terms.items():
        c[h] = torch.as_tensor(m, dtype=torch.float64)
    return c


def rotation(label: str, phi: float) -> torch.Tensor:
    return torch.linalg.matrix_exp(phi * irrep_drho(label))


def test_channel_maps_vector_to_vector():
    assert_same_span(channel_basis("1", "1", "SO2").basis, [torch.eye(2), J])
    assert_same_span(channel_basis("1", "1", "O2").basis, [torch.eye(2)])


def test_channel_maps_scalar_to_vector_are_empty():
    for group in ("SO2", "O2"):
        ns = channel_basis("1", "0", group)
        assert ns.dim == 0 and ns.basis.shape == (0, 2, 1)


def test_channel_maps_between_scalars_and_pseudoscalars():
    assert channel_basis("0-", "0", "SO2").dim == 1  # the same irrep of SO(2)
    assert channel_basis("0-", "0", "O2").dim == 0  # told apart by the reflection
    assert channel_basis("2", "1", "SO2").dim == 0  # different frequencies never mix pointwise


def test_null_space_reports_tolerance_and_gap():
    ns = channel_basis("1", "1", "SO2")
    assert ns.singular_values.shape == (4,)
    assert ns.tol > 0 and ns.gap > 1e6
    assert ns.singular_values[-2:].abs().max() <= ns.tol < ns.singular_values[:2].min()
    with pytest.raises(ValueError, match=r"\(rows, dim\)"):
        null_space(torch.zeros(3))


def test_spectral_scalar_to_vector_is_the_gradient_direction():
    L = 3
    grad = harmonic(L, 2, 1, {1: [[1.0], [0.0]], 2: [[0.0], [1.0]]})  # (cos t, sin t)
    skew = harmonic(L, 2, 1, {1: [[0.0], [1.0]], 2: [[-1.0], [0.0]]})  # (-sin t, cos t)
    ns, orders = spectral_basis("1", "0", L, "SO2")
    assert orders == (1, 1)
    assert_same_span(ns.basis, [grad, skew])  # SO(2) cannot tell a scalar from a pseudoscalar
    ns, orders = spectral_basis("1", "0", L, "O2")
    assert orders == (1,)
    assert_same_span(ns.basis, [grad])
    ns, _ = spectral_basis("1", "0-", L, "O2")
    assert_same_span(ns.basis, [skew])  # velocity from a stream function


def test_spectral_vector_to_scalar_is_divergence_and_curl():
    L = 2
    div = harmonic(L, 1, 2, {1: [[1.0, 0.0]], 2: [[0.0, 1.0]]})  # (cos t, sin t)
    curl = harmonic(L, 1, 2, {1: [[0.0, 1.0]], 2: [[-1.0, 0.0]]})  # (-sin t, cos t)
    assert_same_span(spectral_basis("0", "1", L, "SO2")[0].basis, [div, curl])
    assert_same_span(spectral_basis("0", "1", L, "O2")[0].basis, [div])
    assert_same_span(spectral_basis("0-", "1", L, "O2")[0].basis, [curl])


def test_spectral_vector_to_vector_orders():
    assert spectral_basis("1", "1", 2, "SO2")[1] == (0, 0, 2, 2)
    assert spectral_basis("1", "1", 2, "O2")[1] == (0, 2)
    assert spectral_basis("2", "1", 4, "SO2")[1] == (1, 1, 3, 3)


@pytest.mark.parametrize("group", ["SO2", "O2"])
def test_every_spectral_basis_element_is_equivariant_under_finite_rotations(group):
    """``W(theta + phi) rho_in(phi) = rho_out(phi) W(theta)`` for a generic ``phi``, and for O(2)
    ``W(-theta) rho_in(F) = rho_out(F) W(theta)``: checks the derivation, not only the solver."""
    L, phi = 4, 0.7
    theta = torch.linspace(0, 2 * math.pi, 13, dtype=torch.float64)
    for lo in LABELS:
        for li in LABELS:
            ns, _ = spectral_basis(lo, li, L, group)
            # n=basis, h=harmonic, o/i=components, t=angle
            W = torch.einsum("nhoi,ht->ntoi", ns.basis, harmonic_values(L, theta))
            W_rot = torch.einsum("nhoi,ht->ntoi", ns.basis, harmonic_values(L, theta + phi))
            torch.testing.assert_close(W_rot @ rotation(li, phi), rotation(lo, phi) @ W, atol=1e-12, rtol=0)
            if group == "O2":
                W_ref = torch.einsum("nhoi,ht->ntoi", ns.basis, harmonic_values(L, -theta))
                torch.testing.assert_close(W_ref @ irrep_reflection(li), irrep_reflection(lo) @ W,
                                           atol=1e-12, rtol=0)


def test_cached_bases_are_copied():
    first = channel_basis("1", "1", "SO2")
    first.basis.zero_()
    assert channel_basis("1", "1", "SO2").basis.abs().sum() > 0


def test_irreps_round_trip_and_errors():
    text = "8x0 + 4x0- + 4x1 + 2x2"
    irreps = Irreps.parse(text)
    assert str(irreps) == text and Irreps.parse(str(irreps)) == irreps
    assert irreps.num_channels == 8 + 4 + 8 + 4 and irreps.max_frequency == 2
    assert str(Irreps.from_field_type("w:pseudoscalar, v:vector, s:scalar")) == "1x0- + 1x1 + 1x0"
    with pytest.raises(ValueError, match="unknown SO\\(2\\)/O\\(2\\) irrep '1e'"):
        Irreps.parse("2x1e")
    with pytest.raises(ValueError, match="group must be one of SO2, O2"):
        channel_basis("1", "1", "C4")
