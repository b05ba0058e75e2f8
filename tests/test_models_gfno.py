"""GroupFNO and GroupAveraged: exact C4/D4 equivariance in float64 for typed fields on even and odd,
periodic and non-periodic grids; intertwiners that span the whole constraint space; an invariant
positional embedding."""

import dataclasses
import io
import math

import pytest
import torch

from fieldsym.fields import D4_MATRICES, FieldType
from fieldsym.models import (
    FieldFNO,
    GroupAveraged,
    GroupFNO,
    InvariantGridEmbedding,
    build_operator,
    count_parameters,
)
from fieldsym.models.gspectral import GroupSpectralConv
from fieldsym.models.regular import Lift, PointGroup, Project, RegularLinear

ELEMENTS = {"C4": ("r1", "r2", "r3"), "D4": tuple(n for n in D4_MATRICES if n != "e")}
COMBOS = [
    ("s:scalar", "s:scalar"),
    ("w:pseudoscalar", "v:vector"),
    ("v:vector", "v:vector"),
    ("v:vector, s:scalar", "v:vector"),
]
GRIDS = [(16, (True, True)), (17, (True, True)), (16, (False, False)), (17, (False, False))]


@torch.no_grad()
def equivariance_error(op, in_type, out_type, u, names, periodic) -> float:
    """``max_g ||F(g.u) - g.F(u)|| / ||F(u)||`` over the named D4 elements."""
    t_in, t_out = FieldType.parse(in_type), FieldType.parse(out_type)
    out = op(u)
    errors = []
    for name in names:
        A = D4_MATRICES[name]
        moved = op(t_in.transform(u, A, periodic=periodic))
        errors.append(float((moved - t_out.transform(out, A, periodic=periodic)).norm() / out.norm()))
    return max(errors)


def random_input(in_type, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, FieldType.parse(in_type).num_channels, n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("in_type, out_type", COMBOS)
@pytest.mark.parametrize("n, periodic", GRIDS)
def test_group_fno_is_exactly_equivariant(group, in_type, out_type, n, periodic):
    torch.manual_seed(0)
    op = GroupFNO(in_type, out_type, group, n_modes=8, hidden_channels=3, n_layers=2,
                  positional_embedding=True, periodic=periodic).double()
    u = random_input(in_type, n)
    assert equivariance_error(op, in_type, out_type, u, ELEMENTS[group], periodic) < 1e-10


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("n", [16, 17])
def test_group_fno_without_embedding_is_equivariant_and_shift_exact(group, n):
    torch.manual_seed(0)
    t = "w:pseudoscalar, v:vector"
    op = GroupFNO(t, t, group, n_modes=8, hidden_channels=3, n_layers=2).to(torch.float64)
    u = random_input(t, n)
    assert equivariance_error(op, t, t, u, ELEMENTS[group], (True, True)) < 1e-10
    ft = FieldType.parse(t)
    with torch.no_grad():
        out = op(u)
        shifted = op(ft.transform(u, shift=(3, -5)))
    assert (shifted - ft.transform(out, shift=(3, -5))).norm() / out.norm() < 1e-12


@pytest.mark.parametrize("embedding", [True, None])
@pytest.mark.parametrize("in_type, out_type", COMBOS)
def test_unconstrained_fno_fails_the_same_check(embedding, in_type, out_type):
    torch.manual_seed(0)
    op = FieldFNO(in_type, out_type, n_modes=(8, 8), hidden_channels=6, n_layers=2,
                  positional_embedding=embedding).double()
    u = random_input(in_type, 17)
    assert equivariance_error(op, in_type, out_type, u, ELEMENTS["D4"], (True, True)) > 1e-2


def test_invariant_embedding_breaks_translations():
    torch.manual_seed(0)
    t = FieldType.parse("v:vector")
    op = GroupFNO(t, t, "C4", n_modes=8, hidden_channels=3, n_layers=2, positional_embedding=True).double()
    u = random_input(t, 16)
    with torch.no_grad():
        out = op(u)
        assert (op(t.transform(u, shift=(4, 5))) - t.transform(out, shift=(4, 5))).norm() / out.norm() > 1e-2


# -- the pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("n, periodic", GRIDS)
def test_layers_on_regular_features_commute_with_the_group(group, n, periodic):
    """Each regular -> regular layer alone, so a failure of the whole operator can be located."""
    torch.manual_seed(0)
    G = PointGroup(group)
    h = torch.randn(2, 3, len(G), n, n, dtype=torch.float64)
    for layer in (GroupSpectralConv(G, 3, 2, max_mode=4).double(), RegularLinear(G, 3, 2).double()):
        with torch.no_grad():
            out = layer(h)
            for g in range(1, len(G)):
                moved = layer(G.act_regular(h, g, periodic))
                assert (moved - G.act_regular(out, g, periodic)).norm() / out.norm() < 1e-12


def regular_matrices(group: PointGroup, copies: int) -> torch.Tensor:
    """``(|G|, c |G|, c |G|)``: ``(rho_reg(g) h)_k = h_{g^-1 k}`` on ``c`` channels, (o, k) o-major."""
    n = len(group)
    P = torch.zeros(n, n, n, dtype=torch.float64)
    for g in range(n):
        for k in range(n):
            P[g, k, group.product[group.inverse[g], k]] = 1
    return torch.stack([torch.kron(torch.eye(copies, dtype=torch.float64), P[g]) for g in range(n)])


def constraint_null_dim(rho_in: torch.Tensor, rho_out: torch.Tensor) -> int:
    """Dimension of ``{K : K rho_in(g) = rho_out(g) K for all g}`` from the SVD of the stacked constraint."""
    rows = []
    for r_in, r_out in zip(rho_in, rho_out):
        # vec (row-major) of K r_in - r_out K
        rows.append(torch.kron(torch.eye(r_out.shape[0], dtype=torch.float64), r_in.T.contiguous())
                    - torch.kron(r_out, torch.eye(r_in.shape[0], dtype=torch.float64)))
    s = torch.linalg.svdvals(torch.cat(rows))
    return int((s < 1e-9).sum()) + max(0, rows[0].shape[1] - s.numel())


def span_dim(module) -> int:
    """Rank of the linear map weight -> module.matrix(), and a check that every image is exact."""
    images = []
    with torch.no_grad():
        weight = module.weight
        for i in range(weight.numel()):
            basis = torch.zeros(weight.numel(), dtype=torch.float64)
            basis[i] = 1
            weight.copy_(basis.reshape(weight.shape))
            images.append(module.matrix().flatten().clone())
    return int(torch.linalg.matrix_rank(torch.stack(images)))


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("field", ["w:pseudoscalar, v:vector, s:scalar", "v:vector"])
def test_lift_and_project_span_the_intertwiner_space(group, field):
    G, t, c = PointGroup(group), FieldType.parse(field), 2
    rho, reg = G.rho(t), regular_matrices(G, c)
    lift, project = Lift(G, t, c).double(), Project(G, c, t).double()
    assert span_dim(lift) == constraint_null_dim(rho, reg) == c * t.num_channels
    assert span_dim(project) == constraint_null_dim(reg, rho) == c * t.num_channels
    for g in range(len(G)):
        torch.testing.assert_close(lift.matrix() @ rho[g], reg[g] @ lift.matrix())
        torch.testing.assert_close(project.matrix() @ reg[g], rho[g] @ project.matrix())


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_regular_linear_spans_the_intertwiner_space(group):
    G = PointGroup(group)
    mix = RegularLinear(G, 1, 2).double()
    assert span_dim(mix) == constraint_null_dim(regular_matrices(G, 1), regular_matrices(G, 2)) == 2 * len(G)


@pytest.mark.parametrize("group, invariant", [("C4", 2), ("D4", 1)])
def test_output_bias_is_projected_onto_invariants(group, invariant):
    """A bias survives only where rho_out(g) b = b: scalars always, pseudoscalars under C4 only."""
    project = Project(PointGroup(group), 2, FieldType.parse("s:scalar, w:pseudoscalar, v:vector"))
    with torch.no_grad():
        project.bias.fill_(1.0)
        out = project(torch.zeros(1, 2, len(project.rho_out), 3, 3))
    assert int((out[0, :, 0, 0].abs() > 0.5).sum()) == invariant


@pytest.mark.parametrize("n, periodic", GRIDS)
def test_embedding_features_are_exactly_d4_invariant(n, periodic):
    e = InvariantGridEmbedding(periodic).features(n, n, torch.float64)
    scalars = FieldType.of(*["scalar"] * len(e))
    for A in D4_MATRICES.values():
        assert torch.equal(scalars.transform(e, A, periodic=periodic), e)


def test_embedding_contains_the_ns_sym_forcing():
    n = 32
    x = torch.arange(n, dtype=torch.float64) / n
    forcing = torch.cos(4 * math.pi * x)[None, :] + torch.cos(4 * math.pi * x)[:, None]
    e = InvariantGridEmbedding((True, True), frequencies=(1, 2)).features(n, n, torch.float64)
    torch.testing.assert_close(e[2], forcing)


# -- averaging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["C4", "D4"])
@pytest.mark.parametrize("in_type, out_type", COMBOS[1:3])
@pytest.mark.parametrize("n, periodic", [(16, (True, True)), (17, (False, False))])
def test_group_averaged_fno_is_exactly_equivariant(group, in_type, out_type, n, periodic):
    torch.manual_seed(0)
    inner = FieldFNO(in_type, out_type, n_modes=(8, 8), hidden_channels=6, n_layers=2)
    op = GroupAveraged(inner, in_type, out_type, group, periodic).double()
    u = random_input(in_type, n)
    assert equivariance_error(op, in_type, out_type, u, ELEMENTS[group], periodic) < 1e-10


@dataclasses.dataclass(frozen=True)
class Element:
    A: tuple
    shift: tuple = (0, 0)


def test_group_averaged_over_whole_cell_shifts():
    torch.manual_seed(0)
    t = FieldType.parse("v:vector")
    shifts = [Element(D4_MATRICES["e"], (dx, dy)) for dx in (0, 8) for dy in (0, 8)]
    op = GroupAveraged(FieldFNO(t, t, n_modes=(8, 8), hidden_channels=6, n_layers=2), t, t, shifts).double()
    u = random_input(t, 16)
    with torch.no_grad():
        out = op(u)
        assert (op(t.transform(u, shift=(8, 0))) - t.transform(out, shift=(8, 0))).norm() / out.norm() < 1e-12


def test_group_averaged_rejects_a_set_that_is_not_a_group():
    with pytest.raises(ValueError, match="not closed"):
        GroupAveraged(torch.nn.Identity(), "s:scalar", "s:scalar", ["e", "r1"])


# -- plumbing ----------------------------------------------------------------------------------------


def test_group_fno_trains_and_round_trips_weights_only():
    torch.manual_seed(0)
    op = GroupFNO("v:vector", "v:vector", "D4", n_modes=6, hidden_channels=2, n_layers=2)
    u = torch.randn(2, 2, 12, 12)
    op(u).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in op.parameters())
    buffer = io.BytesIO()
    torch.save(op.state_dict(), buffer)
    buffer.seek(0)
    fresh = GroupFNO("v:vector", "v:vector", "D4", n_modes=6, hidden_channels=2, n_layers=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    torch.testing.assert_close(fresh(u), op(u), rtol=0, atol=0)


def test_parameter_count_scales_with_the_group():
    """Spectral weights: c^2 |G| (2K+1)(K+1) complex per layer, |G| times a width-c FNO layer."""
    c, K, n_modes = 4, 3, 6
    for group, n in (("C4", 4), ("D4", 8)):
        op = GroupFNO("s:scalar", "s:scalar", group, n_modes, c, n_layers=1)
        assert count_parameters(op.convs[0]) == 2 * c * c * n * (2 * K + 1) * (K + 1) + c


def test_build_operator_kinds():
    assert isinstance(build_operator("gfno", "v:vector", "v:vector", group="D4", hidden_channels=2), GroupFNO)
    op = build_operator("averaged", "v:vector", "v:vector", inner="gfno", group_elements="C4",
                        group="C4", hidden_channels=2, periodic=(False, False))
    assert isinstance(op, GroupAveraged) and isinstance(op.op, GroupFNO) and op.periodic == (False, False)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same number of modes"):
        GroupFNO("s:scalar", "s:scalar", n_modes=(12, 8))
    with pytest.raises(ValueError, match="unknown point group"):
        GroupFNO("s:scalar", "s:scalar", group="C8")
    with pytest.raises(ValueError, match="2 channels"):
        GroupFNO("v:vector", "v:vector", hidden_channels=2)(torch.randn(1, 3, 8, 8))


def test_torch_export_with_dynamic_batch():
    op = GroupFNO("v:vector", "v:vector", "D4", n_modes=6, hidden_channels=2, n_layers=1,
                  positional_embedding=True)
    batch = torch.export.Dim("batch")
    program = torch.export.export(op, (torch.randn(2, 2, 12, 12),), dynamic_shapes=({0: batch},))
    u = torch.randn(5, 2, 12, 12)
    torch.testing.assert_close(program.module()(u), op(u))


def test_grid_embedding_starts_equivariant_and_its_gate_breaks_every_symmetry():
    from fieldsym.groups import shifts
    from fieldsym.testing import assert_equivariant

    torch.manual_seed(0)
    model = GroupFNO("v:vector", "v:vector", "C4", n_modes=8, hidden_channels=3, n_layers=2, grid_embedding=True)
    assert_equivariant(model, "v:vector", "v:vector", "C4")  # gate 0: exactly equivariant
    assert_equivariant(model, "v:vector", "v:vector", shifts([(3, 5), (8, 1)]))
    # The gate learns: its gradient is not zero at 0 (the lifting weights of the coordinates are not).
    u = torch.randn(2, 2, 16, 16)
    model(u).square().mean().backward()
    assert model.grid_gate.grad is not None and model.grid_gate.grad.abs() > 0
    with torch.no_grad():
        model.grid_gate.fill_(0.5)
    for group in ("C4", shifts([(3, 5), (8, 1)])):
        with pytest.raises(AssertionError, match="not"):
            assert_equivariant(model, "v:vector", "v:vector", group)
    started_broken = GroupFNO("v:vector", "v:vector", "C4", n_modes=8, hidden_channels=3, n_layers=2,
                              grid_embedding=True, grid_gate=1.0)
    assert float(started_broken.grid_gate) == 1.0
    with pytest.raises(AssertionError, match="not"):
        assert_equivariant(started_broken, "v:vector", "v:vector", "C4")
    assert count_parameters(model) == count_parameters(
        GroupFNO("v:vector", "v:vector", "C4", n_modes=8, hidden_channels=3, n_layers=2)) + 1 + 2 * 2 * 3


def test_residual_pathway_is_equivariant_exactly_when_its_gate_is_closed():
    from fieldsym.config import ConfigError, ExperimentConfig, build_model
    from fieldsym.grid import Grid
    from fieldsym.models import ResidualPathway
    from fieldsym.testing import assert_equivariant

    torch.manual_seed(0)
    options = {"equivariant": {"kind": "gfno", "group": "C4", "n_modes": 8, "hidden_channels": 2, "n_layers": 2},
               "free": {"kind": "fno", "n_modes": [8, 8], "hidden_channels": 4, "n_layers": 2}, "gate": 0.0}
    model = build_operator("residual", "v:vector", "v:vector", **options)
    assert isinstance(model, ResidualPathway)
    assert count_parameters(model) == count_parameters(model.equivariant) + count_parameters(model.free) + 1
    assert_equivariant(model, "v:vector", "v:vector", "C4")
    u = torch.randn(2, 2, 16, 16)
    model(u).square().mean().backward()
    assert model.gate.grad.abs() > 0  # the free path can open
    with torch.no_grad():
        model.gate.fill_(0.1)
    with pytest.raises(AssertionError, match="not C4-equivariant"):
        assert_equivariant(model, "v:vector", "v:vector", "C4")
    # Through a config, with the data's periodicity handed to the equivariant part; bad parts named.
    config = ExperimentConfig.from_dict({
        "dataset": {"path": "unused.nc"}, "task": {"inputs": ["v"], "outputs": ["v"]},
        "operators": [{"name": "rpp", "kind": "residual", "options": options}]})
    built = build_model(config.operators[0], FieldType.parse("v:vector"), FieldType.parse("v:vector"),
                        Grid.regular(16, periodic=False))
    assert isinstance(built.equivariant, GroupFNO) and isinstance(built.free, FieldFNO)
    bad = dict(options, free={"kind": "gfno"})
    with pytest.raises(ConfigError, match=r"operators\[0\]: options: residual: free must be .*kind one of fno"):
        ExperimentConfig.from_dict({  # refused with the config, before any data or model
            "dataset": {"path": "unused.nc"}, "task": {"inputs": ["v"], "outputs": ["v"]},
            "operators": [{"name": "rpp", "kind": "residual", "options": bad}]})


def test_invariant_features_are_cached_and_survive_inference_mode():
    """The C4-invariant grid features are built once per grid/dtype/device; one first built under
    ``torch.inference_mode`` must not break a later training step."""
    from fieldsym.models.embedding import InvariantGridEmbedding

    emb = InvariantGridEmbedding((True, True))
    with torch.inference_mode():
        first = emb.features(19, 19)
    assert emb.features(19, 19) is first  # cached
    u = torch.randn(2, 1, 19, 19, requires_grad=True)
    (emb(u) * torch.randn(2, 1 + emb.num_channels, 19, 19)).sum().backward()
    assert u.grad is not None
