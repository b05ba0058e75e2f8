import pytest
import torch

from fieldsym.grid import Grid
from fieldsym.groups import C4, D4, R, Tx, Ty
from fieldsym.penalties import Augmenter, LiePenalty, NuclearPenalty, nuclear_norm, ramp, singular_values_from_gram
from fieldsym.testing import smooth_random_field
from lie_operators import componentwise_square, laplacian

VEC = "v:vector"


def _grid_and_u(n=32, batch=4):
    grid = Grid.regular(n)
    return grid, smooth_random_field(VEC, grid, batch=batch, max_mode=3)


@pytest.mark.parametrize("method", ["jvp", "fd", "fd1"])
def test_penalties_vanish_for_an_equivariant_operator_and_not_otherwise(method):
    grid, u = _grid_and_u()
    for Penalty in (LiePenalty, NuclearPenalty):
        pen = Penalty([Tx, Ty, R], VEC, VEC, grid, gamma=1.0, method=method, ramp_epochs=0)
        sym, _ = pen(laplacian(grid), u)
        broken, info = pen(componentwise_square, u)
        assert float(sym) < 1e-3 * float(broken), (Penalty.__name__, float(sym), float(broken))
        assert info["lie/R"] > 0.1


def test_nuclear_norm_equals_the_sum_of_singular_values():
    M = torch.randn(500, 4, dtype=torch.float64)
    torch.testing.assert_close(nuclear_norm(M, eps=0.0), torch.linalg.svdvals(M).sum(), rtol=1e-12, atol=0)
    M[:, 3] = M[:, 0] - 2 * M[:, 1]  # rank 3: the zero singular value is resolved to sqrt(eps) s_max
    s = torch.linalg.svdvals(M)
    torch.testing.assert_close(singular_values_from_gram(M, 0.0).flip(0), s, rtol=1e-10, atol=1e-6 * float(s[0]))


def test_columns_do_not_depend_on_the_scale_of_a_generator():
    grid, u = _grid_and_u()
    a = NuclearPenalty([Tx, R], VEC, VEC, grid, method="jvp", ramp_epochs=0, delta=None)
    b = NuclearPenalty([Tx.scaled(10.0), R.scaled(0.1)], VEC, VEC, grid, method="jvp", ramp_epochs=0, delta=None)
    torch.testing.assert_close(a(componentwise_square, u)[0], b(componentwise_square, u)[0], rtol=1e-10, atol=0)


def test_a_symmetry_that_is_a_combination_of_candidates_is_an_exact_null_vector():
    # F(u) = f(x + y) u commutes with the translation Tx - Ty only; M (Tx - Ty in normalised units) = 0.
    grid = Grid.regular(32)
    X, Y = grid.coords()
    f = torch.sin(2 * torch.pi * (X + Y))
    u = smooth_random_field("s:scalar", grid, batch=4, localized=False)
    pen = NuclearPenalty([Tx, Ty], "s:scalar", "s:scalar", grid, method="jvp", sub_batch=4)
    M = pen._cols.columns(lambda v: f * v, u)
    s = torch.linalg.svdvals(M)
    assert float(s[1]) < 1e-12 * float(s[0])


def test_ramp():
    assert ramp(2.0, 0, 4) == 0.0 and ramp(2.0, 2, 4) == 1.0 and ramp(2.0, 9, 4) == 2.0 and ramp(2.0, 0, 0) == 2.0


def test_augmented_pairs_of_an_equivariant_operator_stay_consistent():
    grid = Grid.regular(16)
    x = smooth_random_field("v:vector, w:pseudoscalar", grid, batch=6, localized=False)
    op = laplacian(grid)
    aug = Augmenter(D4.elements, "v:vector, w:pseudoscalar", "v:vector, w:pseudoscalar", shifts=True,
                    generator=torch.Generator().manual_seed(1))
    xa, ya = aug(x, op(x))
    torch.testing.assert_close(op(xa), ya, rtol=1e-10, atol=1e-10)
    assert not torch.equal(xa, x)


def test_augmenter_transforms_inputs_and_outputs_with_their_own_types():
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    aug = Augmenter([C4.element("r2")], VEC, "w:pseudoscalar")
    y = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    xa, ya = aug(x, y)
    torch.testing.assert_close(xa, C4.element("r2").act(x, VEC))
    torch.testing.assert_close(ya, C4.element("r2").act(y, "w:pseudoscalar"))


class _SpectralPlusLocal(torch.nn.Module):
    """F(u) = ifft(m(k) fft(u)) + c(x) u: the multiplier is translation-equivariant, c(x) breaks it."""

    def __init__(self, n, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.m = torch.nn.Parameter(torch.zeros(n, n, dtype=torch.float64))
        self.c = torch.nn.Parameter(0.5 * torch.randn(n, n, generator=g, dtype=torch.float64))

    def forward(self, u):
        return torch.fft.ifft2(torch.fft.fft2(u) * self.m).real + self.c * u


def _fit(gamma, steps=200):
    # One sample: the data cannot tell the translation-breaking c(x) u from the multiplier, so without
    # the penalty the random c(x) of the initialisation survives; promotion removes it.
    n = 24
    grid = Grid.regular(n)
    u = smooth_random_field("s:scalar", grid, batch=1, max_mode=4, seed=3)
    # Truth: an anisotropic smoothing, translation-equivariant but not rotation-equivariant.
    kx = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64)[None, :]
    ky = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64)[:, None]
    target = torch.fft.ifft2(torch.fft.fft2(u) * torch.exp(-(kx**2 + 4 * ky**2) / 8)).real
    model = _SpectralPlusLocal(n)
    pen = NuclearPenalty([Tx, Ty, R], "s:scalar", "s:scalar", grid, gamma=gamma, method="jvp",
                         sub_batch=1, ramp_epochs=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        pred = model(u)
        loss = (pred - target).pow(2).sum() / target.pow(2).sum()
        value, info = pen(model, u, prediction=pred)
        (loss + value).backward()
        opt.step()
    _, info = pen(model, u)
    return float(loss.detach()), info


def test_promotion_keeps_translation_and_breaks_rotation_on_anisotropic_data():
    loss0, plain = _fit(gamma=0.0)
    loss1, promoted = _fit(gamma=0.01)
    assert loss0 < 1e-3 and loss1 < 1e-2  # both fit the data
    assert promoted["lie/Tx"] < 0.2 * plain["lie/Tx"] and promoted["lie/Ty"] < 0.2 * plain["lie/Ty"]
    assert promoted["lie/R"] > 0.2  # the data breaks rotation, and promotion leaves it broken


def test_mixed_strengths_relax_the_broken_symmetry_and_keep_the_exact_one():
    from fieldsym.penalties import MixedPenalty

    grid = Grid.regular(32)
    X, Y = grid.coords()
    f = 1 + 0.5 * torch.sin(2 * torch.pi * Y)  # depends on y: Tx exact, Ty broken
    u = smooth_random_field("s:scalar", grid, batch=4, localized=False)
    pen = MixedPenalty([Tx, Ty], "s:scalar", "s:scalar", grid, update_epochs=[0], method="jvp")
    pen(lambda v: f * v, u, epoch=0)
    pen.end_epoch(0)
    levels = pen.levels()
    assert levels["Tx"] == 1.0 and levels["Ty"] < 1e-6
    fresh = MixedPenalty([Tx, Ty], "s:scalar", "s:scalar", grid)
    fresh.load_state_dict(pen.state_dict())
    assert fresh.levels() == levels


def test_small_singular_values_survive_float32_columns():
    U, _ = torch.linalg.qr(torch.randn(400, 3, dtype=torch.float64))
    M = (U * torch.tensor([1.0, 1e-3, 1e-5], dtype=torch.float64)).to(torch.float32)
    s = singular_values_from_gram(M, eps=0.0).flip(0)
    assert float(s[2]) == pytest.approx(1e-5, rel=0.05)


def test_promoting_discrete_elements_is_zero_for_an_equivariant_operator_and_positive_otherwise():
    grid = Grid.regular(16)
    u = smooth_random_field(VEC, grid, batch=2, localized=False)
    pen = NuclearPenalty([Tx], VEC, VEC, grid, gamma=1.0, method="jvp", ramp_epochs=0, elements=C4.elements)
    _, sym = pen(laplacian(grid), u)
    assert set(k for k in sym if k.startswith("elem/")) == {"elem/r1", "elem/r2", "elem/r3"}
    assert max(sym[f"elem/{g}"] for g in ("r1", "r2", "r3")) < 1e-12
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    value, broken = pen(lambda v: w * grid.derivative(v, "x"), u)
    assert broken["elem/r1"] > 0.1
    value.backward()
    assert w.grad is not None and torch.isfinite(w.grad)
