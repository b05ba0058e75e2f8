"""SteerableFNO: exact C4 (SO2) and D4 (O2) equivariance in float64 on the lattice; pointwise layers
that commute with rotations by any angle; a continuous-rotation Lie derivative that is small and shrinks
with resolution (32, 64, 128) while the unconstrained FieldFNO's stays O(1)."""

import math

import pytest
import torch

from fieldsym.constraints import Irreps, irrep_dim, irrep_drho
from fieldsym.grid import Grid
from fieldsym.groups import R
from fieldsym.lie import lie_derivative_errors
from fieldsym.models import FieldFNO, SteerableFNO, build_operator, count_parameters
from fieldsym.models.steerable import NormActivation, SteerableLinear, SteerableSpectralConv
from fieldsym.testing import assert_equivariant, smooth_random_field

COMBOS = [("s:scalar", "s:scalar"), ("w:pseudoscalar", "v:vector"), ("v:vector", "v:vector")]
HIDDEN = "3x0 + 2x0- + 2x1 + 1x2"


def small(in_type, out_type, group, **kw):
    return SteerableFNO(in_type, out_type, group=group, hidden_irreps=HIDDEN, n_modes=8, n_layers=2, **kw)


@pytest.mark.parametrize("activation", ["norm", "gate"])
@pytest.mark.parametrize("in_type, out_type", COMBOS)
@pytest.mark.parametrize("group, lattice", [("SO2", "C4"), ("O2", "D4")])
def test_exact_lattice_equivariance(in_type, out_type, group, lattice, activation):
    assert_equivariant(small(in_type, out_type, group, activation=activation), in_type, out_type, lattice)


@pytest.mark.parametrize("size", [16, 17])
def test_radial_embedding_keeps_d4_exact(size):
    grid = Grid.regular(size)
    model = small("v:vector", "w:pseudoscalar", "O2", positional_embedding=True)
    assert_equivariant(model, "v:vector", "w:pseudoscalar", "D4", grid=grid)


def block_rotation(irreps: Irreps, phi: float) -> torch.Tensor:
    blocks = [torch.linalg.matrix_exp(phi * irrep_drho(label)) for m, label in irreps.blocks for _ in range(m)]
    return torch.block_diag(*blocks)


def test_pointwise_layers_commute_with_any_rotation():
    irreps_in, irreps_out = Irreps.parse("2x0 + 2x1 + 1x2"), Irreps.parse("1x0 + 3x1 + 2x2")
    layer = SteerableLinear(irreps_in, irreps_out).double()
    act = NormActivation(irreps_out).double()
    with torch.no_grad():
        for p in act.parameters():
            p.normal_()
    x = torch.randn(3, irreps_in.num_channels, 4, 5, dtype=torch.float64)
    phi = 0.37
    rin, rout = block_rotation(irreps_in, phi), block_rotation(irreps_out, phi)
    # o=out, c=in channel, b=batch
    lhs = act(layer(torch.einsum("oc,bchw->bohw", rin, x)))
    rhs = torch.einsum("oc,bchw->bohw", rout, act(layer(x)))
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_kernel_of_real_fields_is_hermitian():
    """``W(-k) = conj(W(k))`` on the ``k_x = 0`` column, where both signs of ``k_y`` are stored."""
    conv = SteerableSpectralConv("2x0 + 2x1", "1x0- + 2x1", K=5).double()
    with torch.no_grad():
        W = conv.kernel()[..., 0]  # (out, in, k_y = -5..5)
    torch.testing.assert_close(W.flip(-1), W.conj(), atol=1e-14, rtol=0)


def test_lie_derivative_shrinks_with_resolution_and_fno_does_not(capsys):
    """Relative Lie derivative of R on localized smooth fields, with the interior window. The steerable
    operator's error comes from aliasing of its pointwise nonlinearities (falls with resolution) and
    from the tails of its localized kernels at the seam (a floor that does not)."""
    torch.manual_seed(0)
    rows = []
    for in_type, out_type in COMBOS:
        steerable = SteerableFNO(in_type, out_type, hidden_irreps="4x0 + 4x1 + 2x2", n_modes=24,
                                 n_layers=2, n_radial=2)
        fno = FieldFNO(in_type, out_type, n_modes=(24, 24), hidden_channels=8, n_layers=2,
                       positional_embedding=False)
        errors = {"steerable": [], "fno": []}
        for size in (32, 64, 128):
            grid = Grid.regular(size)
            u = smooth_random_field(in_type, grid, localized=True)
            for name, model in (("steerable", steerable), ("fno", fno)):
                err = lie_derivative_errors(model.double(), u, [R], in_type, out_type, grid, window=grid.window())
                errors[name].append(err["R"])
        rows.append((f"{in_type} -> {out_type}", errors))
        s, f = errors["steerable"], errors["fno"]
        assert s[1] < s[0] / 3 and s[2] <= 1.05 * s[1] and s[2] < 1e-3, s
        assert min(f) > 0.3 and f[2] > 0.5 * f[0], f
    with capsys.disabled():
        print("\nrelative Lie derivative of R (windowed), N = 32 / 64 / 128")
        for label, errors in rows:
            for name, values in errors.items():
                print(f"  {label:32s} {name:10s} " + "  ".join(f"{v:.2e}" for v in values))


def test_build_and_errors():
    model = build_operator("steerable", "v:vector", "w:pseudoscalar", group="O2", n_modes=8, n_layers=1)
    assert isinstance(model, SteerableFNO) and count_parameters(model) > 0
    with pytest.raises(ValueError, match="more than 8 points per axis"):
        model(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="group must be 'SO2' or 'O2'"):
        SteerableFNO("s:scalar", "s:scalar", group="C4")
    with pytest.raises(ValueError, match="needs \\(..., 2, H, W\\)"):
        model(torch.randn(1, 1, 16, 16))
    assert math.isfinite(float(model(torch.randn(1, 2, 16, 16)).detach().sum()))


def test_hidden_irreps_that_cannot_reach_an_output_field_are_refused():
    with pytest.raises(ValueError, match="cannot reach the output irreps 0-"):
        SteerableFNO("v:vector", "w:pseudoscalar", group="O2", hidden_irreps="4x0 + 4x1 + 2x2", n_modes=6,
                     n_layers=1)


def test_kernel_assembly_matches_blockwise_reference():
    """``kernel()`` (one embedding bag over shared profile rows) against a plain loop that writes each
    weight's block in place: every weight lands in its own block, real or imaginary by parity."""
    torch.manual_seed(1)
    conv = SteerableSpectralConv("2x0 + 1x0- + 2x1 + 1x2", "1x0 + 2x1 + 1x2", K=3, group="O2").double()
    out_sl, in_sl = conv.irreps_out.slices(), conv.irreps_in.slices()
    ref = torch.zeros(conv.irreps_out.num_channels, conv.irreps_in.num_channels, 7, 4, 2, dtype=torch.float64)
    for (a, b, odd), w in zip(conv.pairs, conv.weights):
        (m_a, la), (m_b, lb) = conv.irreps_out.blocks[a], conv.irreps_in.blocks[b]
        basis = getattr(conv, f"basis_{a}_{b}_{int(odd)}")  # (q, o, c, y, x)
        d_a, d_b = irrep_dim(la), irrep_dim(lb)
        for i in range(m_a):
            for j in range(m_b):
                rows = slice(out_sl[a].start + i * d_a, out_sl[a].start + (i + 1) * d_a)
                cols = slice(in_sl[b].start + j * d_b, in_sl[b].start + (j + 1) * d_b)
                ref[rows, cols, ..., int(odd)] += torch.einsum("q,qocyx->ocyx", w[i, j].detach(), basis)
    assert {odd for _, _, odd in conv.pairs} == {False, True}
    with torch.no_grad():
        torch.testing.assert_close(conv.kernel(), torch.view_as_complex(ref), atol=1e-14, rtol=0)
    # and its gradient: d/dw of <kernel, G> is the reference's
    G = torch.randn(*ref.shape, dtype=torch.float64)
    (torch.view_as_real(conv.kernel()) * G).sum().backward()
    for (a, b, odd), w_grad in zip(conv.pairs, conv.split(conv.weight.grad)):
        (m_a, la), (m_b, lb) = conv.irreps_out.blocks[a], conv.irreps_in.blocks[b]
        basis = getattr(conv, f"basis_{a}_{b}_{int(odd)}")
        d_a, d_b = irrep_dim(la), irrep_dim(lb)
        g = G[out_sl[a], in_sl[b], ..., int(odd)].reshape(m_a, d_a, m_b, d_b, 7, 4)
        torch.testing.assert_close(w_grad, torch.einsum("iojcyx,qocyx->ijq", g, basis), atol=1e-12, rtol=0)


@pytest.mark.parametrize("group", ["SO2", "O2"])
def test_linear_matrix_matches_blockwise_reference(group):
    """``SteerableLinear.matrix()`` (one gather) against ``sum_n w[i, j, n] B_n`` written block by block."""
    from fieldsym.constraints import channel_basis

    torch.manual_seed(2)
    layer = SteerableLinear("2x0 + 1x0- + 3x1 + 1x2", "1x0 + 2x0- + 2x1 + 2x2", group).double()
    out_sl, in_sl = layer.irreps_out.slices(), layer.irreps_in.slices()
    ref = torch.zeros(layer.irreps_out.num_channels, layer.irreps_in.num_channels, dtype=torch.float64)
    for (a, b), w in zip(layer.pairs, layer.weights):
        (m_a, la), (m_b, lb) = layer.irreps_out.blocks[a], layer.irreps_in.blocks[b]
        basis = channel_basis(la, lb, group).basis.double()
        d_a, d_b = irrep_dim(la), irrep_dim(lb)
        for i in range(m_a):
            for j in range(m_b):
                rows = slice(out_sl[a].start + i * d_a, out_sl[a].start + (i + 1) * d_a)
                cols = slice(in_sl[b].start + j * d_b, in_sl[b].start + (j + 1) * d_b)
                ref[rows, cols] = torch.einsum("n,noc->oc", w[i, j].detach(), basis)
    assert len(layer.pairs) >= 4  # the test covers several connected block pairs
    with torch.no_grad():
        torch.testing.assert_close(layer.matrix(), ref, atol=1e-15, rtol=0)
    # and its gradient: d/dw of <matrix, G> is G's projection onto each block's basis
    G = torch.randn(*ref.shape, dtype=torch.float64)
    (layer.matrix() * G).sum().backward()
    for (a, b), w_grad in zip(layer.pairs, layer.split(layer.weight.grad)):
        (m_a, la), (m_b, lb) = layer.irreps_out.blocks[a], layer.irreps_in.blocks[b]
        basis = channel_basis(la, lb, group).basis.double()
        g = G[out_sl[a], in_sl[b]].reshape(m_a, irrep_dim(la), m_b, irrep_dim(lb))
        torch.testing.assert_close(w_grad, torch.einsum("iojc,noc->ijn", g, basis), atol=1e-13, rtol=0)
    # scalar -> vector has no equivariant channel map: the matrix is zero
    empty = SteerableLinear("2x0", "1x1", group)
    assert not len(empty.weights) and empty.matrix().abs().max() == 0


def test_norm_activation_matches_per_copy_formula():
    """Runs of blocks gated together give the per-copy ``u sigmoid(|u|_eps + b)`` with each copy's bias."""
    torch.manual_seed(3)
    irreps = Irreps.parse("2x0 + 1x0- + 2x1 + 1x2 + 1x0")
    act = NormActivation(irreps).double()
    with torch.no_grad():
        for p in act.parameters():
            p.normal_()
    x = torch.randn(2, irreps.num_channels, 3, 4, dtype=torch.float64)
    biases = iter(torch.cat([b.detach() for b in act.biases]))
    parts = []
    for sl, (m, label) in zip(irreps.slices(), irreps.blocks):
        for copy in range(m):
            d = irrep_dim(label)
            u = x[:, sl.start + copy * d : sl.start + (copy + 1) * d]
            if label == "0":
                parts.append(torch.nn.functional.gelu(u))
            else:
                norm = torch.sqrt((u**2).sum(1, keepdim=True) + 1e-6)
                parts.append(u * torch.sigmoid(norm + next(biases)))
    torch.testing.assert_close(act(x), torch.cat(parts, 1), atol=1e-14, rtol=0)


def test_jvp_and_its_weight_gradient_pass_through_the_kernel():
    """The Lie-derivative penalties take ``torch.func.jvp`` of the operator and differentiate the tangent
    with respect to the weights: both must pass through the kernel's embedding bag (a plain
    ``embedding_bag`` with trainable per-sample weights fails under ``torch.func.jvp``)."""
    torch.manual_seed(0)
    model = SteerableFNO("v:vector", "v:vector", hidden_irreps="2x0 + 2x1 + 1x2", n_modes=8, n_layers=2,
                         positional_embedding=True).double()
    u, v = torch.randn(2, 2, 16, 16, dtype=torch.float64), torch.randn(2, 2, 16, 16, dtype=torch.float64)
    _, tangent = torch.func.jvp(model, (u,), (v,))
    eps = 1e-6
    with torch.no_grad():
        central = (model(u + eps * v) - model(u - eps * v)) / (2 * eps)
    torch.testing.assert_close(tangent, central, atol=1e-8, rtol=0)

    def loss():
        return torch.func.jvp(model, (u,), (v,))[1].pow(2).sum()

    loss().backward()
    conv = model.convs[1]  # its vector -> vector block (scalars out of the last layer never reach a vector output)
    block = conv.pairs.index((1, 1, False))
    weight, grad = conv.weights[block], conv.split(conv.weight.grad)[block]
    assert grad.abs().max() > 0
    with torch.no_grad():
        step = torch.zeros_like(weight)
        step.view(-1)[0] = 1e-6
        weight += step
        plus = loss()
        weight -= 2 * step
        minus = loss()
        weight += step
    torch.testing.assert_close(grad.reshape(-1)[0], (plus - minus) / 2e-6, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("group", ["SO2", "O2"])
def test_gate_activation_commutes_with_any_rotation_and_lets_scalars_reach_vectors(group):
    """GateActivation: each non-scalar copy times sigmoid of its own gate; equivariant under any rotation
    (reflections: the D4 lattice test above); and, unlike the norm gate, scalars change the vectors."""
    from fieldsym.models.steerable import GateActivation

    irreps = Irreps.parse("2x0 + 1x0- + 2x1 + 1x2")
    act = GateActivation(irreps)
    assert act.n_gates == 4 and act.input_irreps.num_channels == irreps.num_channels + 4
    layer = SteerableLinear("3x0 + 2x1", act.input_irreps, group).double()
    x = torch.randn(2, 3 + 4, 5, 6, dtype=torch.float64)
    phi = 0.83
    rin, rout = block_rotation(Irreps.parse("3x0 + 2x1"), phi), block_rotation(irreps, phi)
    lhs = act(layer(torch.einsum("oc,bchw->bohw", rin, x)))
    rhs = torch.einsum("oc,bchw->bohw", rout, act(layer(x)))
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)
    # per copy: u * sigmoid(gate k) for the k-th non-scalar copy, GELU on the "0" channels
    y = torch.randn(2, act.input_irreps.num_channels, 3, 3, dtype=torch.float64)
    gates = torch.sigmoid(y[:, 9:])
    expected = torch.cat([torch.nn.functional.gelu(y[:, :2]), y[:, 2:3] * gates[:, 0:1], y[:, 3:5] * gates[:, 1:2],
                          y[:, 5:7] * gates[:, 2:3], y[:, 7:9] * gates[:, 3:4]], 1)
    torch.testing.assert_close(act(y), expected, atol=0, rtol=0)
    # scalars reach the vector output pointwise through the gates (the norm gate cannot do this)
    y2 = y.clone()
    y2[:, 9:] += 1.0
    assert (act(y2)[:, 3:5] - act(y)[:, 3:5]).abs().max() > 1e-3


def test_a_spectral_layer_without_any_equivariant_kernel_is_refused():
    with pytest.raises(ValueError, match="no O2-equivariant spectral kernel maps '1x0' to '1x0-'"):
        SteerableSpectralConv("1x0", "1x0-", K=3, group="O2")


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be 'norm' or 'gate'"):
        SteerableFNO("s:scalar", "s:scalar", activation="relu")


def test_channel_map_as_convolution_and_as_matmul_agree():
    """SteerableLinear's two ways to apply its matrix (1x1 convolution, batched matmul) are one map."""
    from fieldsym.models.steerable import CHANNEL_MAP_METHODS, channel_map

    M, x, b = (torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 3, 4, 6, dtype=torch.float64),
               torch.randn(5, dtype=torch.float64))
    expected = torch.einsum("oc,bchw->bohw", M, x) + b[:, None, None]
    for method in CHANNEL_MAP_METHODS:
        torch.testing.assert_close(channel_map(M, x, b, method), expected, atol=1e-14, rtol=0)
        torch.testing.assert_close(channel_map(M, x, None, method), expected - b[:, None, None], atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="method must be one of"):
        channel_map(M, x, b, "einsum")


def test_kernel_forward_mode_rule_and_no_silent_second_derivative():
    """``_ProfileBag``'s jvp rule, exercised with a tangent on the weights (``torch.func.jvp`` of the
    kernel as a function of its weights), against central differences; and a second derivative through
    the kernel raises instead of coming out as zero."""
    torch.manual_seed(4)

    class Kernel(torch.nn.Module):  # forward = the kernel, so functional_call can swap the weights
        def __init__(self):
            super().__init__()
            self.conv = SteerableSpectralConv("2x0 + 1x1", "1x0 + 1x1 + 1x2", K=3)

        def forward(self):
            return torch.view_as_real(self.conv.kernel())

    module = Kernel().double()
    params = {name: p.detach() for name, p in module.named_parameters()}
    tangents = {name: torch.randn_like(p) for name, p in params.items()}

    def kern(weights):
        return torch.func.functional_call(module, weights, ())

    _, tangent = torch.func.jvp(kern, (params,), (tangents,))
    eps = 1e-6
    plus = kern({n: p + eps * tangents[n] for n, p in params.items()})
    minus = kern({n: p - eps * tangents[n] for n, p in params.items()})
    assert tangent.abs().max() > 0
    torch.testing.assert_close(tangent, (plus - minus) / (2 * eps), atol=1e-9, rtol=0)

    # create_graph would give Hessians without the kernel's term: refused with a message
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(module().pow(2).sum(), module.conv.weight, create_graph=True)


def test_checkpoints_with_one_parameter_per_block_still_load():
    """The solved layers keep their blocks in one flat ``weight``; state dicts written when each block was
    its own parameter (``weights.0``, ``weights.1``, ...) load into it, block by block."""
    torch.manual_seed(5)
    old_model = SteerableFNO("v:vector", "v:vector", hidden_irreps="2x0 + 1x1 + 1x2", n_modes=6, n_layers=2)
    state = {}
    for key, value in old_model.state_dict().items():
        prefix, name = key.rsplit(".", 1) if "." in key else ("", key)
        layer = old_model.get_submodule(prefix) if prefix else old_model
        if name == "weight" and hasattr(layer, "block_shapes"):  # written the old way: one key per block
            state.update({f"{prefix}.weights.{i}": block.clone() for i, block in enumerate(layer.split(value))})
        else:
            state[key] = value
    assert any(".weights.3" in key for key in state) and not any(key.endswith("convs.0.weight") for key in state)
    torch.manual_seed(6)
    model = SteerableFNO("v:vector", "v:vector", hidden_irreps="2x0 + 1x1 + 1x2", n_modes=6, n_layers=2)
    u = torch.randn(2, 2, 16, 16)
    assert not torch.allclose(model(u), old_model(u))
    model.load_state_dict(state)
    torch.testing.assert_close(model(u), old_model(u), atol=0, rtol=0)


def test_float64_profiles_are_converted_once_per_dtype():
    """The kernels' profile rows stay float64 (exact in a float64 model); a float32 model converts them
    once, not every step, drops the copy when the module moves, and follows in-place changes."""
    conv = SteerableSpectralConv("1x0 + 1x1", "1x0 + 1x1", K=3)
    assert conv.profiles.dtype == torch.float64
    first = conv._profiles_as(torch.float32)
    assert conv._profiles_as(torch.float32) is first and first.dtype == torch.float32
    torch.testing.assert_close(first, conv.profiles.float(), atol=0, rtol=0)
    kernel = conv.kernel().detach()
    with torch.no_grad():
        conv.profiles.mul_(2)
    torch.testing.assert_close(conv.kernel().detach(), 2 * kernel)  # not the stale copy
    conv.to("meta")
    assert conv._cast == () and conv._profiles_as(torch.float32).device.type == "meta"
    fresh = SteerableSpectralConv("1x0 + 1x1", "1x0 + 1x1", K=3)
    with torch.inference_mode():  # a first conversion under inference mode must not poison training
        fresh.kernel()
    fresh.kernel().abs().sum().backward()
    assert fresh.weight.grad is not None
