"""bf16 autocast (what training on a GPU uses): every operator kind runs forward and backward under it,
close to its float32 output. Checked on CPU autocast here (CI has no GPU) and on CUDA in test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from fieldsym.models.build import build_operator
from fieldsym.testing import smooth_random_field
from fieldsym.grid import Grid

VEC = "v:vector"


@pytest.mark.parametrize("kind, options", [
    ("fno", dict(n_modes=(8, 8), hidden_channels=8, n_layers=2)),
    ("gfno", dict(group="D4", n_modes=8, hidden_channels=2, n_layers=2)),
    ("steerable", dict(group="SO2", n_modes=8, n_layers=2, hidden_irreps="4x0 + 2x1 + 1x2")),
])
def test_operator_runs_under_bf16_autocast_close_to_float32(kind, options):
    torch.manual_seed(0)
    model = build_operator(kind, VEC, VEC, **options)
    u = smooth_random_field(VEC, Grid.regular(16), batch=2, localized=False, dtype=torch.float32)
    want = model(u).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(u)
    assert torch.isfinite(got).all()
    error = (torch.linalg.norm(got.float() - want) / torch.linalg.norm(want)).item()
    assert 0 < error < 5e-2  # bf16 rounding shows (so autocast really ran), but only as rounding
    got.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
