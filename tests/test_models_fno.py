"""FieldFNO: exact whole-cell shift equivariance on even and odd grids (and why neuralop's own spectral
convolution needed replacing), what the positional embedding breaks, plain-tensor state dicts."""

import io

import pytest
import tensorly as tl
import torch
from neuralop.layers.spectral_convolution import SpectralConv
from neuralop.models import FNO

from fieldsym.fields import D4_MATRICES, FieldType
from fieldsym.models import FieldFNO, GroupAveraged, build_operator, count_parameters
from fieldsym.models.spectral import irfft2_modes, rfft2_modes

IN, OUT = "w:pseudoscalar, v:vector", "v:vector, p:scalar"
SHIFTS = [(1, 0), (0, 1), (3, -5), (7, 11)]


@torch.no_grad()
def shift_error(op, in_type, out_type, u, shift) -> float:
    t_in, t_out = FieldType.parse(in_type), FieldType.parse(out_type)
    out = op(u)
    moved = op(t_in.transform(u, shift=shift))
    return float((moved - t_out.transform(out, shift=shift)).norm() / out.norm())


@pytest.mark.parametrize("n", [32, 33])
def test_shift_exact_without_embedding_even_and_odd(n):
    torch.manual_seed(0)
    op = FieldFNO(IN, OUT, n_modes=(12, 12), hidden_channels=8, n_layers=2, positional_embedding=None)
    op = op.double()
    u = torch.randn(2, 3, n, n, dtype=torch.float64)
    assert max(shift_error(op, IN, OUT, u, s) for s in SHIFTS) < 1e-12


@pytest.mark.parametrize("n", [32, 33])
def test_grid_embedding_breaks_shifts(n):
    torch.manual_seed(0)
    op = FieldFNO(IN, OUT, n_modes=(12, 12), hidden_channels=8, n_layers=2).double()
    u = torch.randn(2, 3, n, n, dtype=torch.float64)
    assert shift_error(op, IN, OUT, u, (n // 4, n // 3)) > 1e-2


@pytest.mark.parametrize("n, broken", [(32, False), (33, True)])
def test_neuralop_spectral_conv_is_wrong_on_odd_grids(n, broken):
    """Same FNO with neuralop 2.0.0's SpectralConv: exact on 32x32, not on 33x33 (so the fix is needed)."""
    torch.manual_seed(0)
    fno = FNO(n_modes=(13, 12), in_channels=3, out_channels=3, hidden_channels=8, n_layers=2,
              positional_embedding=None, conv_module=SpectralConv)
    u = torch.randn(2, 3, n, n)
    err = max(shift_error(fno, IN, OUT, u, s) for s in SHIFTS)
    assert (err > 1e-2) if broken else (err < 1e-5)


def test_shift_exact_in_float32_matches_neuralop_on_even_grid():
    """On an even grid our forward and neuralop's agree: only the odd-grid inverse shift changed."""
    torch.manual_seed(0)
    ours = FieldFNO(IN, OUT, n_modes=(12, 12), hidden_channels=8, n_layers=2, positional_embedding=None)
    theirs = FNO(n_modes=(13, 12), in_channels=3, out_channels=3, hidden_channels=8, n_layers=2,
                 positional_embedding=None, conv_module=SpectralConv)
    theirs.load_state_dict(ours.fno.state_dict())
    u = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(u), theirs(u), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("embedding", [True, None])
@torch.no_grad()
def test_unconstrained_fno_is_not_rotation_equivariant(embedding):
    torch.manual_seed(0)
    t = FieldType.parse("v:vector")
    op = FieldFNO(t, t, n_modes=(8, 8), hidden_channels=8, n_layers=2, positional_embedding=embedding)
    op = op.double()
    u = torch.randn(2, 2, 17, 17, dtype=torch.float64)
    out = op(u)
    for name in ("r1", "flip_x"):
        A = D4_MATRICES[name]
        assert (op(t.transform(u, A)) - t.transform(out, A)).norm() / out.norm() > 1e-2


@pytest.mark.parametrize("factorization", ["tucker", "cp"])
def test_factorised_weights_keep_shifts_exact_and_save_parameters(factorization):
    torch.manual_seed(0)
    options = dict(hidden_channels=8, n_layers=2, n_modes=(8, 8), positional_embedding=None)
    op = FieldFNO(IN, OUT, factorization=factorization, rank=0.2, **options).double()
    assert count_parameters(op) < count_parameters(FieldFNO(IN, OUT, **options))
    u = torch.randn(2, 3, 17, 17, dtype=torch.float64)
    assert shift_error(op, IN, OUT, u, (3, 4)) < 1e-12


def test_mode_convention_is_symmetric():
    """n_modes=(12, 12): |k_y| <= 6 (13 rows), k_x = 0..6 (7 columns of the rfft half)."""
    op = FieldFNO("u:scalar", "u:scalar", n_modes=(12, 12), hidden_channels=4, n_layers=1)
    assert tuple(op.fno.fno_blocks.convs[0].weight.shape) == (4, 4, 13, 7)
    op = FieldFNO("u:scalar", "u:scalar", n_modes=(8, 5), hidden_channels=4, n_layers=1)
    assert tuple(op.fno.fno_blocks.convs[0].weight.shape) == (4, 4, 9, 3)


def test_small_grid_drops_unresolved_modes_and_stays_exact():
    torch.manual_seed(0)
    op = FieldFNO("u:scalar", "u:scalar", n_modes=(16, 16), hidden_channels=4, n_layers=1,
                  positional_embedding=None).double()
    u = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    assert shift_error(op, "u:scalar", "u:scalar", u, (2, 3)) < 1e-12


def test_state_dict_is_plain_tensors_and_round_trips_weights_only():
    torch.manual_seed(0)
    op = FieldFNO(IN, OUT, hidden_channels=8, n_layers=2, n_modes=(8, 8))
    state = op.state_dict()
    assert "_metadata" not in state and all(isinstance(v, torch.Tensor) for v in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = FieldFNO(IN, OUT, hidden_channels=8, n_layers=2, n_modes=(8, 8))
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    u = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fresh(u), op(u), rtol=0, atol=0)


def test_state_dict_of_a_module_holding_a_field_fno_is_plain():
    op = GroupAveraged(FieldFNO("u:scalar", "u:scalar", hidden_channels=4, n_layers=1, n_modes=(4, 4)),
                       "u:scalar", "u:scalar", "C4")
    state = op.state_dict()
    assert "_metadata" not in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    op.load_state_dict(torch.load(buffer, weights_only=True), strict=True)


def test_neuralop_metadata_entry_is_ignored_on_load():
    op = FieldFNO("u:scalar", "u:scalar", hidden_channels=4, n_layers=1, n_modes=(4, 4))
    state = dict(op.state_dict(), _metadata={"_version": "0.1.0"})
    op.load_state_dict(state, strict=True)


def test_tensorly_uses_default_einsum():
    assert tl.backend.current_backend().einsum.__name__ == "einsum"


def test_errors_name_the_problem():
    op = FieldFNO(IN, OUT, hidden_channels=4, n_layers=1, n_modes=(4, 4))
    with pytest.raises(ValueError, match="3 channels"):
        op(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="complex_data"):
        FieldFNO(IN, OUT, complex_data=True)
    with pytest.raises(ValueError, match="two positive integers"):
        FieldFNO(IN, OUT, n_modes=(12, 12, 12))


def test_build_operator_and_parameter_count():
    op = build_operator("fno", IN, OUT, hidden_channels=4, n_layers=1, n_modes=(4, 4))
    assert isinstance(op, FieldFNO)
    spectral = 4 * 4 * 5 * 3  # complex entries of the one spectral weight
    real = sum(p.numel() for p in op.parameters() if not p.is_complex())
    assert count_parameters(op) == real + 2 * spectral
    with pytest.raises(ValueError, match="unknown operator kind"):
        build_operator("unet", IN, OUT)


# -- the truncated DFT both spectral convolutions use ------------------------------------------------


@pytest.mark.parametrize("H, W", [(16, 16), (17, 17), (16, 17), (9, 12)])
def test_truncated_dft_matches_torch_fft(H, W):
    torch.manual_seed(0)
    u = torch.randn(2, 3, H, W, dtype=torch.float64)
    ky, kx = (H - 1) // 2, (W - 1) // 2 - 1
    rows = torch.arange(-ky, ky + 1) % H
    full = torch.fft.rfft2(u, norm="forward")
    c = rfft2_modes(u, ky, kx)
    torch.testing.assert_close(c, full[..., rows, : kx + 1], rtol=0, atol=1e-14)
    padded = torch.zeros_like(full)
    padded[..., rows, : kx + 1] = c
    reference = torch.fft.irfft2(padded, s=(H, W), norm="forward")
    torch.testing.assert_close(irfft2_modes(c, H, W), reference, rtol=0, atol=1e-13)


def test_truncated_dft_round_trips_band_limited_fields_and_has_gradients():
    torch.manual_seed(0)
    H, W, K = 15, 12, 4
    c = rfft2_modes(torch.randn(1, 2, H, W, dtype=torch.float64), K, K)
    u = irfft2_modes(c, H, W)  # band-limited and real: the transform pair is exact on it
    torch.testing.assert_close(irfft2_modes(rfft2_modes(u, K, K), H, W), u, rtol=0, atol=1e-13)
    x = torch.randn(1, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: irfft2_modes(rfft2_modes(v, 2, 2) * 1.5j, 7, 6), (x,))


def test_truncated_dft_refuses_unresolved_modes():
    with pytest.raises(ValueError, match="not all resolved on a 8x8 grid"):
        rfft2_modes(torch.randn(1, 8, 8), 4, 3)


def test_torch_export_with_dynamic_batch():
    op = FieldFNO(IN, OUT, hidden_channels=4, n_layers=1, n_modes=(6, 6))
    batch = torch.export.Dim("batch")
    program = torch.export.export(op, (torch.randn(2, 3, 12, 12),), dynamic_shapes=({0: batch},))
    u = torch.randn(5, 3, 12, 12)
    torch.testing.assert_close(program.module()(u), op(u))


def test_precision_changes_rebuild_the_cached_grid_embedding():
    model = FieldFNO("u:scalar", "u:scalar", n_modes=(4, 4), hidden_channels=4, n_layers=1)
    x = torch.randn(1, 1, 8, 8)
    model.double()(x.double())
    assert model.float()(x).dtype == torch.float32
    assert model.double()(x.double()).dtype == torch.float64


def test_inference_mode_call_does_not_poison_the_cached_dft_matrices():
    """The truncated DFT caches its matrices; one built under ``torch.inference_mode`` would be an
    inference tensor that a later training step cannot save for backward."""
    H, W = 13, 11  # a size no other test uses, so this call builds the cache entry
    with torch.inference_mode():
        rfft2_modes(torch.randn(1, 1, H, W), 3, 3)
        irfft2_modes(torch.zeros(1, 1, 7, 4, dtype=torch.complex64), H, W)
    x = torch.randn(1, 1, H, W, requires_grad=True)
    irfft2_modes(rfft2_modes(x, 3, 3) * 2.0, H, W).sum().backward()
    assert x.grad is not None
