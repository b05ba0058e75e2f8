"""Plain modules with the constraint baked in: what an exported graph holds.

Like escnn's ``export()``, a constrained layer becomes a plain layer whose weights are the ones its
forward applies: a ``GroupFNO`` keeps its kernels tied over the group orbit through a gather per
forward, and its lifting, mixing and projection maps are group averages of smaller weights. Baked, each
is one stacked matrix or kernel, so the exported graph holds no orbit construction, and the same plain
forward runs under ``torch.export``, ONNX and onnxruntime. Equivariance is then a property of the
numbers, measured on the export (the model card records it), not of the graph.

What changes in each operator:

- every spectral convolution becomes a :class:`RealSpectralConv` (real arithmetic, dense kernel; a
  factorised or separable neuralop weight is reconstructed);
- ``FieldFNO``'s grid embedding loses neuralop's per-resolution cache (module state that an export
  would specialise on) and computes the same coordinates on every call;
- ``GroupFNO``'s regular features are kept flat, ``(b, c |G|, H, W)``, and every pointwise map is a
  ``1x1`` convolution with its gathered matrix;
- normalisation (:class:`PhysicalOperator`) is part of the graph, so it takes and returns physical fields.

Modes: with ``grid`` given, a kernel keeps only the wave numbers that grid resolves, exactly what the
eager forward does on it; with ``grid=None`` it keeps every mode and needs grids that resolve them all.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from neuralop.layers.embeddings import GridEmbedding2D, GridEmbeddingND
from torch import nn

from fieldsym.data.normalization import FieldNormalizer
from fieldsym.export.realspectral import RealSpectralConv
from fieldsym.fields import FieldType
from fieldsym.models import FieldFNO, GroupFNO


class BakeError(ValueError):
    """An operator that cannot be turned into a plain exportable module; the message says why."""


class PhysicalOperator(nn.Module):
    """``u -> decode(F(encode(u)))``: physical fields ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    The statistics of :class:`~fieldsym.data.normalization.FieldNormalizer` as ``(C, 1, 1)`` float32
    buffers; they commute with the symmetry, so this has ``F``'s symmetries. Buffers, unlike
    ``fieldsym.train.NormalizedOperator``'s normaliser objects, are weights of the exported graph and
    entries of the state dict that ``safetensors`` stores.
    """

    def __init__(self, model: nn.Module, in_norm: FieldNormalizer, out_norm: FieldNormalizer) -> None:
        super().__init__()
        self.model = model
        self.in_type, self.out_type = in_norm.field_type, out_norm.field_type
        for name, value in (("in_shift", in_norm.shift), ("in_scale", in_norm.scale),
                            ("out_shift", out_norm.shift), ("out_scale", out_norm.scale)):
            self.register_buffer(name, value.to(torch.float32).reshape(-1, 1, 1).clone())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model((u - self.in_shift) / self.in_scale) * self.out_scale + self.out_shift


def bake(model: nn.Module, grid: tuple[int, int] | None) -> nn.Module:
    """A plain float32 copy of ``model`` (a ``FieldFNO`` or ``GroupFNO``) for export; ``model`` is untouched.

    ``grid``: ``(H, W)`` to keep only the modes it resolves, ``None`` to keep all (module docstring).
    """
    with torch.no_grad():
        if isinstance(model, FieldFNO):
            baked = _bake_field_fno(model, grid)
        elif isinstance(model, GroupFNO):
            baked = BakedGroupFNO(model, grid)
        else:
            raise BakeError(
                f"cannot export a {type(model).__name__}: export knows FieldFNO (kind fno) and GroupFNO "
                "(kind gfno); wrap other operators yourself and call torch.export on them"
            )
    return baked.float().eval()


def min_grid(baked: nn.Module) -> tuple[int, int]:
    """``(H, W)``: the smallest grid that resolves every mode of the baked operator's kernels."""
    convs = [m for m in baked.modules() if isinstance(m, RealSpectralConv)]
    return (max(2 * c.ky + 1 for c in convs), max(2 * c.kx + 1 for c in convs))


# -- FieldFNO ----------------------------------------------------------------------------------------------


def _bake_field_fno(model: FieldFNO, grid: tuple[int, int] | None) -> FieldFNO:
    plain = copy.deepcopy(model)
    fno = plain.fno
    blocks = fno.fno_blocks
    for i, conv in enumerate(blocks.convs):
        blocks.convs[i] = RealSpectralConv(_fno_kernel(conv, grid), conv.bias)
    if isinstance(fno.positional_embedding, (GridEmbeddingND, GridEmbedding2D)):
        fno.positional_embedding = GridEmbedding(fno.positional_embedding.grid_boundaries)
    return plain


def _fno_kernel(conv: nn.Module, grid: tuple[int, int] | None) -> torch.Tensor:
    """``(rows (k_y centred), cols (k_x >= 0), in, out)`` complex from neuralop's ``(in, out, rows, cols)``."""
    weight = conv.weight.to_tensor()
    if conv.separable:  # (channel, rows, cols): a diagonal channel map per mode
        weight = torch.diag_embed(weight.permute(1, 2, 0)).permute(2, 3, 0, 1)
    rows, cols = weight.shape[-2:]
    ky, kx = (rows - 1) // 2, cols - 1
    if grid is not None:
        ky, kx = min(ky, (grid[0] - 1) // 2), min(kx, (grid[1] - 1) // 2)
    centre = (rows - 1) // 2
    return weight[:, :, centre - ky : centre + ky + 1, : kx + 1].permute(2, 3, 0, 1)


class GridEmbedding(nn.Module):
    """neuralop's grid embedding, ``(b, C, H, W) -> (b, C + 2, H, W)``, without its resolution cache.

    Appends ``y`` then ``x``, ``start + (stop - start) j / N`` in float32: neuralop's
    ``linspace(start, stop, N + 1)[:-1]`` to rounding (``torch.linspace`` would fix ``N`` in an export).
    """

    def __init__(self, boundaries) -> None:
        super().__init__()
        self.boundaries = tuple(tuple(float(v) for v in pair) for pair in boundaries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        (y0, y1), (x0, x1) = self.boundaries
        Y, X = torch.meshgrid(_coordinates(y0, y1, H, x.device), _coordinates(x0, x1, W, x.device), indexing="ij")
        return torch.cat([x, Y.to(x.dtype).expand(b, 1, H, W), X.to(x.dtype).expand(b, 1, H, W)], dim=1)

    def extra_repr(self) -> str:
        return f"boundaries={self.boundaries}"


def _coordinates(start: float, stop: float, n, device) -> torch.Tensor:
    """``start + (stop - start) j / n`` for ``j = 0..n-1``, float32; ``n`` may be symbolic."""
    return start + torch.arange(n, device=device, dtype=torch.float32) * ((stop - start) / n)


# -- GroupFNO ----------------------------------------------------------------------------------------------


class BakedGroupFNO(nn.Module):
    """``GroupFNO`` with every tied weight materialised: ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    The forward is ``GroupFNO.forward`` on flat regular features ``(b, c |G|, H, W)`` (channel-major,
    the order of ``h.flatten(1, 2)``): lift, then per layer ``h = conv(h) + skip(h)``, GELU, a gated
    channel MLP, GELU (none after the last layer), then project. Every map is a plain ``1x1``
    convolution or a :class:`RealSpectralConv` holding the stacked kernel ``GroupSpectralConv.kernel()``.
    """

    def __init__(self, model: GroupFNO, grid: tuple[int, int] | None) -> None:
        super().__init__()
        n = len(model.group)
        self.in_type: FieldType = model.in_type
        self.out_type: FieldType = model.out_type
        self.group = model.group.name
        self.embedding = copy.deepcopy(model.embedding)
        self.lift_in = _pointwise(model.lift_in.matrix(), model.lift_in.bias.repeat_interleave(n))
        self.lift_out = _regular(model.lift_out)
        self.convs = nn.ModuleList(
            RealSpectralConv(_group_kernel(conv, grid), conv.bias.repeat_interleave(n)) for conv in model.convs
        )
        self.skips = nn.ModuleList(_regular(s) for s in model.skips)
        self.mlp_in = nn.ModuleList(_regular(m) for m in model.mlp_in)
        self.mlp_out = nn.ModuleList(_regular(m) for m in model.mlp_out)
        gates = model.gates.detach().repeat_interleave(n, dim=1)[:, :, None, None]  # (layer, c |G|, 1, 1)
        self.gates = nn.Parameter(gates.clone(), requires_grad=False)
        self.proj_in = _regular(model.proj_in)
        project = model.proj_out
        self.proj_out = _pointwise(project.matrix(), project.bias_projector.to(project.bias.dtype) @ project.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            u = self.embedding(u)
        h = self.lift_out(F.gelu(self.lift_in(u)))
        last = len(self.convs) - 1
        for i, (conv, skip, mlp_in, mlp_out) in enumerate(zip(self.convs, self.skips, self.mlp_in, self.mlp_out)):
            gated = self.gates[i] * h
            h = conv(h) + skip(h)
            if i < last:
                h = F.gelu(h)
            h = mlp_out(F.gelu(mlp_in(h))) + gated
            if i < last:
                h = F.gelu(h)
        return self.proj_out(F.gelu(self.proj_in(h)))

    def extra_repr(self) -> str:
        return f"in_type='{self.in_type}', out_type='{self.out_type}', group={self.group} (baked)"


def _group_kernel(conv: nn.Module, grid: tuple[int, int] | None) -> torch.Tensor:
    """``GroupSpectralConv.kernel()`` clipped to the modes ``grid`` resolves."""
    K = conv.K
    ky, kx = (K, K) if grid is None else (min(K, (grid[0] - 1) // 2), min(K, (grid[1] - 1) // 2))
    return conv.kernel()[K - ky : K + ky + 1, : kx + 1]


def _regular(layer: nn.Module) -> nn.Conv2d:
    """A ``RegularLinear`` as a ``1x1`` convolution on flat regular features."""
    bias = None if layer.bias is None else layer.bias.repeat_interleave(layer.n)
    return _pointwise(layer.matrix(), bias)


def _pointwise(matrix: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """``(out, in)`` matrix and ``(out,)`` bias as an ``nn.Conv2d`` of kernel size 1."""
    conv = nn.Conv2d(matrix.shape[1], matrix.shape[0], 1, bias=bias is not None)
    conv.weight.data = matrix.detach()[:, :, None, None].clone()
    if bias is not None:
        conv.bias.data = bias.detach().clone()
    conv.requires_grad_(False)
    return conv
