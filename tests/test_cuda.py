"""CUDA paths: the loader's side-stream prefetch, bf16-autocast training, and exact equivariance of the
enforced operators through cuFFT.

These run only where torch sees a GPU (CI has none; they were run on the lent H100/H200 machine, see
experiments/README.md "GPU"). Every check compares the GPU against an independent CPU computation or an
index-permutation group action, so each can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset
from fieldsym.grid import Grid
from fieldsym.groups import algebra
from fieldsym.lie import lie_derivative_errors
from fieldsym.models import FieldFNO
from fieldsym.models.build import build_operator
from fieldsym.penalties import NuclearPenalty
from fieldsym.testing import assert_equivariant, smooth_random_field
from datafiles import low_pass_file

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU-only checks)")

VEC = "v:vector"


@pytest.fixture(scope="module")
def ids_file(tmp_path_factory):
    """Item ``i`` has input value ``i`` everywhere and output ``i + 1`` (so order and pairing are visible)."""
    n, t, h, w = 41, 2, 8, 8
    values = (np.arange(n)[:, None] + np.arange(t)[None, :]).astype(np.float32)
    u = np.broadcast_to(values[:, :, None, None], (n, t, h, w)).copy()
    return write_dataset(tmp_path_factory.mktemp("cuda") / "ids.nc", {"u": FieldSpec(u, "scalar", "1", "id")},
                         x=np.arange(w) / w, y=np.arange(h) / h, time=np.arange(t) * 1.0, periodic=True,
                         pde="test", parameters={}, seed=0, title="ids", source="tests/test_cuda.py")


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_cuda_batches_equal_the_cpu_loaders(ids_file, workers):
    spec = DataSpec(["u"], ["u"], TimeSelection(t_in=0, t_out=1))
    data = FieldDataset(ids_file, spec, in_memory=False)
    cpu = make_loader(data, 6, shuffle=True, seed=3, num_workers=workers)
    gpu = make_loader(FieldDataset(ids_file, spec, in_memory=False), 6, shuffle=True, seed=3,
                      num_workers=workers, device="cuda")
    for epoch in (1, 2):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        got = list(gpu)
        want = list(cpu)
        assert len(got) == len(want) == math.ceil(41 / 6)
        for (xg, yg), (xc, yc) in zip(got, want):
            assert xg.device.type == "cuda" and yg.device.type == "cuda"
            # Every batch is used after the loop: a buffer reused before its copy finished would show here.
            assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
            assert torch.equal(yg[:, 0, 0, 0], xg[:, 0, 0, 0] + 1)


@pytest.mark.parametrize("kind, group, types", [
    ("gfno", "C4", ("w:pseudoscalar", VEC)),
    ("gfno", "D4", (VEC, VEC)),
    ("steerable", "C4", (VEC, VEC)),
])
def test_enforced_operators_stay_exact_on_cuda(kind, group, types):
    in_type, out_type = types
    if kind == "gfno":
        options = dict(group=group, n_modes=8, hidden_channels=4, n_layers=2)
    else:
        options = dict(group="SO2", n_modes=8, n_layers=2, hidden_irreps="4x0 + 2x1 + 1x2")
    torch.manual_seed(0)
    model = build_operator(kind, in_type, out_type, **options).double().cuda()
    grid = Grid.regular(17)  # odd: the Nyquist-free case; 16 is covered on CPU
    u = smooth_random_field(in_type, grid, localized=False).cuda()
    errors = assert_equivariant(model, in_type, out_type, group, u=u, grid=grid)
    assert max(errors.values()) < 1e-10
    # The GPU forward equals the CPU forward of the same weights.
    with torch.no_grad():
        gpu_out = model(u).cpu()
        cpu_out = model.cpu()(u.cpu())
    assert torch.allclose(gpu_out, cpu_out, rtol=0, atol=1e-12 * cpu_out.abs().max().item())


@pytest.mark.parametrize("method", ["conv", "bmm"])
def test_steerable_gradients_match_cpu_in_float64(method):
    """A steerable training step's gradients on the GPU (the kernel's embedding-bag backward through
    aten's per-sample-weight kernel, the pointwise maps as ``method``) against the CPU's (1x1 convolutions)."""
    from fieldsym.models import SteerableFNO
    from fieldsym.models.steerable import SteerableLinear

    torch.manual_seed(0)
    model = SteerableFNO(VEC, VEC, hidden_irreps="4x0 + 2x1 + 1x2", n_modes=8, n_layers=2).double()
    u, target = torch.randn(3, 2, 16, 16, dtype=torch.float64), torch.randn(3, 2, 16, 16, dtype=torch.float64)
    cpu_grads = torch.autograd.grad(torch.nn.functional.mse_loss(model(u), target), list(model.parameters()))
    model.cuda()
    for layer in model.modules():
        if isinstance(layer, SteerableLinear):
            layer.method = method
    loss = torch.nn.functional.mse_loss(model(u.cuda()), target.cuda())
    gpu_grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, _), gc, gg in zip(model.named_parameters(), cpu_grads, gpu_grads):
        assert gc.abs().max() > 0, name
        torch.testing.assert_close(gg.cpu(), gc, rtol=1e-9, atol=1e-14, msg=name)


def test_lie_derivatives_and_nuclear_penalty_match_cpu_in_float64():
    torch.manual_seed(0)
    grid = Grid.regular(32)
    model = FieldFNO(VEC, VEC, n_modes=(8, 8), hidden_channels=8, n_layers=2).double()
    u = smooth_random_field(VEC, grid, batch=3)
    gens = algebra("sim2", VEC)
    cpu_err = lie_derivative_errors(model, u, gens, VEC, VEC, grid, "jvp")
    penalty = NuclearPenalty(gens, VEC, VEC, grid, method="jvp", sub_batch=3)
    cpu_value, _ = penalty(model, u, 0)
    cpu_grad = torch.autograd.grad(cpu_value, list(model.parameters()))
    model.cuda()
    gpu_err = lie_derivative_errors(model, u.cuda(), gens, VEC, VEC, grid, "jvp")
    for name in cpu_err:
        assert gpu_err[name] == pytest.approx(cpu_err[name], rel=1e-9), name
    gpu_value, _ = penalty(model, u.cuda(), 0)
    gpu_grad = torch.autograd.grad(gpu_value, list(model.parameters()))
    assert gpu_value.item() == pytest.approx(cpu_value.item(), rel=1e-9)
    for gc, gg in zip(cpu_grad, gpu_grad):
        assert torch.allclose(gg.cpu(), gc, rtol=1e-7, atol=1e-12)


@pytest.fixture(scope="module")
def smooth_file(tmp_path_factory):
    """A low-pass filter of smooth random fields (an FNO learns it in a few steps), 32 samples of 16^2."""
    return low_pass_file(tmp_path_factory.mktemp("cuda") / "smooth.nc", 32, 16, "tests/test_cuda.py")


@pytest.mark.parametrize("symmetry, compile_mode", [("none", "off"), ("augmented", "off"), ("promoted", "off"),
                                                    ("promoted", "default")])
def test_bf16_training_on_cuda_learns_and_reloads_on_cpu(smooth_file, tmp_path, symmetry, compile_mode):
    """bf16 training on the GPU (also with the training forward compiled, ``training.compile``) learns, and
    its checkpoint reloads on CPU to float32 rounding."""
    from fieldsym.config import load_config
    from fieldsym.train import load_operator, train

    sym = {"none": "{mode: none}", "augmented": "{mode: augmented, group: C4}",
           "promoted": "{mode: promoted, gamma: 0.01}"}[symmetry]
    (tmp_path / "config.yaml").write_text(
        f"dataset: {{path: {smooth_file}, split: {{valid: 0.25, test: 0.0}}}}\n"
        "task: {inputs: [u], outputs: [u], times: {mode: one_step, t_in: 0, t_out: 1}}\n"
        "operators:\n"
        f"  - {{name: op, options: {{n_modes: [6, 6], hidden_channels: 8, n_layers: 2}}, symmetry: {sym}}}\n"
        "training: {epochs: 4, batch_size: 4, device: cuda, mixed_precision: auto, optimizer: {lr: 1.0e-2}, "
        f"eval_samples: 2, compile: {compile_mode}}}\n"
        f"experiment: {{name: cuda, out: {tmp_path}}}\n")
    config = load_config(tmp_path / "config.yaml")
    result = train(config)
    valid = [row["valid_rel_l2"] for row in result.metrics]
    assert all(math.isfinite(v) for v in valid) and valid[-1] < 0.8 * valid[0]
    assert next(result.operator.parameters()).device.type == "cuda"
    cpu = load_operator(result.out_dir / "last.pt")
    u = torch.randn(2, 1, 16, 16)
    # cuDNN's 1x1 convolutions round through TF32 by default (1e-3 relative): off, to compare float32 with float32.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            want = result.operator.eval()(u.cuda()).float().cpu()
            got = cpu(u)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
