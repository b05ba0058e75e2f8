"""Plain modules with the constraint baked in: what an exported graph holds.

Like escnn's ``export()``, a constrained layer becomes a plain layer whose weights are the ones its
forward applies: a ``GroupFNO`` keeps its kernels tied over the group orbit through a gather per
forward, and its lifting, mixing and projection maps are group averages of smaller weights. Baked, each
is one stacked matrix or kernel, so the exported graph holds no orbit construction, and the same plain
forward runs under ``torch.export``, ONNX and onnxruntime. Equivariance is then a property of the
numbers, measured on the export (the model card records it), not of the graph.

What changes in each operator:

- every spectral convolution becomes a :class:`RealSpectralConv` (real arithmetic, dense kernel; a
  factorised or separable neuralop weight is reconstructed, a steerable kernel ``W(k)`` is sampled on
  the kept wave numbers, zero outside its disc ``|k| <= K``);
- ``FieldFNO``'s grid embedding loses neuralop's per-resolution cache (module state that an export
  would specialise on) and computes the same coordinates on every call;
- ``GroupFNO``'s regular features are kept flat, ``(b, c |G|, H, W)``, and every pointwise map is a
  ``1x1`` convolution with its gathered matrix;
- ``SteerableFNO``'s equivariant channel maps are ``1x1`` convolutions with their solved matrices, its
  norm nonlinearities whole-tensor ops (:class:`~fieldsym.export.layers.NormGate`);
- ``GroupAveraged`` bakes its inner operator and moves the fields with flips, transposes and rolls
  (:class:`~fieldsym.export.layers.LatticeMove`) instead of index tables built for one grid size;
- normalisation (:class:`PhysicalOperator`) is part of the graph, so it takes and returns physical fields.

Modes: with ``grid`` given, a kernel keeps only the wave numbers that grid resolves, exactly what the
eager forward does on it; with ``grid=None`` it keeps every mode and needs grids that resolve them all.
Every kernel here is a function of the wave number in cycles per domain, not of the grid size (a
steerable ``W(k)`` is sampled at the integer ``k`` every grid shares), so one baked operator serves
every grid that resolves its modes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from neuralop.layers.embeddings import GridEmbedding2D, GridEmbeddingND
from torch import nn

from fieldsym.data.normalization import FieldNormalizer
from fieldsym.export.layers import Gate, GridEmbedding, LatticeMove, NormGate, RadialEmbedding, pointwise
from fieldsym.export.realspectral import RealSpectralConv
from fieldsym.fields import FieldType
from fieldsym.models import FieldFNO, GroupAveraged, GroupFNO, ResidualPathway, SteerableFNO
from fieldsym.models.gfno import _grid as grid_coordinates
from fieldsym.models.steerable import GateActivation, NormActivation, SteerableLinear, steerable_layers


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


def bake(model: nn.Module, grid: tuple[int, int] | None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A plain copy of ``model`` for export, its weights in ``dtype``; ``model`` is untouched.

    ``model``: a ``FieldFNO``, ``GroupFNO``, ``SteerableFNO``, a ``GroupAveraged`` of one of them, or a
    ``ResidualPathway`` of two of them.
    ``grid``: ``(H, W)`` to keep only the modes it resolves, ``None`` to keep all (module docstring).
    ``dtype``: float32 for the exported graphs; float64 (of a float64 ``model``) to test the baking itself.
    """
    with torch.no_grad():
        baked = _bake(model, grid)
    return baked.to(dtype).eval()


def _bake(model: nn.Module, grid: tuple[int, int] | None) -> nn.Module:
    if isinstance(model, FieldFNO):
        return _bake_field_fno(model, grid)
    if isinstance(model, GroupFNO):
        return BakedGroupFNO(model, grid)
    if isinstance(model, SteerableFNO):
        return BakedSteerableFNO(model, grid)
    if isinstance(model, GroupAveraged):
        return BakedGroupAveraged(model, _bake(model.op, grid))
    if isinstance(model, ResidualPathway):
        return BakedResidual(_bake(model.equivariant, grid), _bake(model.free, grid), model.gate)
    raise BakeError(
        f"cannot export a {type(model).__name__}: export knows FieldFNO (kind fno), GroupFNO (kind gfno), "
        "SteerableFNO (kind steerable), GroupAveraged over one of them (kind averaged) and ResidualPathway "
        "(kind residual); wrap other "
        "operators yourself and call torch.export on them"
    )


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


# -- GroupFNO ----------------------------------------------------------------------------------------------


class BakedGroupFNO(nn.Module):
    """``GroupFNO`` with every tied weight materialised: ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    The forward is ``GroupFNO.forward`` on flat regular features ``(b, c |G|, H, W)`` (channel-major,
    the order of ``h.flatten(1, 2)``): embeddings (the invariant one, the gated grid coordinates), lift, then per layer ``h = conv(h) + skip(h)``, GELU, a gated
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
        self.grid_gate = None if model.grid_gate is None else nn.Parameter(model.grid_gate.detach().clone(),
                                                                           requires_grad=False)
        self.lift_in = pointwise(model.lift_in.matrix(), model.lift_in.bias.repeat_interleave(n))
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
        self.proj_out = pointwise(project.matrix(), project.bias_projector.to(project.bias.dtype) @ project.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            u = self.embedding(u)
        if self.grid_gate is not None:  # the eager coordinates: (2, H, W) computed from the input's shape
            u = torch.cat([u, self.grid_gate * grid_coordinates(u).expand(u.shape[0], -1, -1, -1)], dim=1)
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
    return _clip(conv.kernel(), conv.K, grid)


def _clip(kernel: torch.Tensor, K: int, grid: tuple[int, int] | None) -> torch.Tensor:
    """``kernel`` ``(2K+1 (k_y = -K..K), K+1 (k_x = 0..K), ...)`` clipped to the modes ``grid`` resolves."""
    ky, kx = (K, K) if grid is None else (min(K, (grid[0] - 1) // 2), min(K, (grid[1] - 1) // 2))
    return kernel[K - ky : K + ky + 1, : kx + 1]


def _regular(layer: nn.Module) -> nn.Conv2d:
    """A ``RegularLinear`` as a ``1x1`` convolution on flat regular features."""
    bias = None if layer.bias is None else layer.bias.repeat_interleave(layer.n)
    return pointwise(layer.matrix(), bias)


# -- SteerableFNO ------------------------------------------------------------------------------------------


class BakedSteerableFNO(nn.Module):
    """``SteerableFNO`` with its solved weights materialised: ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    The forward is ``SteerableFNO.forward``: optional radial embedding, lift, then per layer
    ``h = conv(h) + skip(h)`` and the activation (none after the last layer), then
    ``proj_out(act(proj_in(h)))``. Each :class:`SteerableLinear` is a ``1x1`` convolution with its
    matrix ``sum_n w_n B_n`` and its bias on the invariant blocks; each spectral convolution is a
    :class:`RealSpectralConv` holding ``W(k)`` sampled on the ``(2K+1) x (K+1)`` lattice block (zero
    outside the disc, where the radial taper vanishes); each ``NormActivation`` a :class:`NormGate`, each
    ``GateActivation`` a :class:`Gate`.
    """

    def __init__(self, model: SteerableFNO, grid: tuple[int, int] | None) -> None:
        super().__init__()
        self.in_type: FieldType = model.in_type
        self.out_type: FieldType = model.out_type
        self.group = model.group
        self.embedding = RadialEmbedding(model.periodic) if model.positional_embedding else None
        self.lift = _steerable(model.lift)
        self.convs = nn.ModuleList(
            RealSpectralConv(_clip(conv.kernel().permute(2, 3, 1, 0), conv.K, grid), None) for conv in model.convs
        )
        self.skips = nn.ModuleList(_steerable(s) for s in model.skips)
        self.acts = nn.ModuleList(_activation(a) for a in model.acts)
        self.proj_in = _steerable(model.proj_in)
        self.proj_act = _activation(model.proj_act)
        self.proj_out = _steerable(model.proj_out)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            u = self.embedding(u)
        return steerable_layers(self, u)

    def extra_repr(self) -> str:
        return f"in_type='{self.in_type}', out_type='{self.out_type}', group={self.group} (baked)"


def _activation(act: nn.Module) -> nn.Module:
    """A ``NormActivation`` as a :class:`NormGate`, a ``GateActivation`` as a :class:`Gate`."""
    if isinstance(act, NormActivation):
        return NormGate(act)
    if isinstance(act, GateActivation):
        return Gate(act)
    raise BakeError(f"no baked form of the steerable activation {type(act).__name__}: "
                    "expected NormActivation or GateActivation")


def _steerable(layer: SteerableLinear) -> nn.Conv2d:
    """A ``SteerableLinear`` as a ``1x1`` convolution; its bias masked to the invariant blocks."""
    bias = None if layer.bias is None else layer.bias * layer.bias_mask
    return pointwise(layer.matrix(), bias)


# -- ResidualPathway and GroupAveraged ---------------------------------------------------------------------


class BakedResidual(nn.Module):
    """``ResidualPathway`` of two baked operators: ``E(u) + gate B(u)``, the gate a constant."""

    def __init__(self, equivariant: nn.Module, free: nn.Module, gate: torch.Tensor) -> None:
        super().__init__()
        self.equivariant, self.free = equivariant, free
        self.register_buffer("gate", gate.detach().clone().reshape(()))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.equivariant(u) + self.gate * self.free(u)


class BakedGroupAveraged(nn.Module):
    """``GroupAveraged`` around a baked inner operator: ``(b, C_in, H, W) -> (b, C_out, H, W)``.

    ``F_avg(u) = 1/|G| sum_g g^-1 . F(g . u)`` as the eager forward computes it: the ``|G|`` moved
    copies of the batch in one call of ``F``, then the inverse moves summed in the order of the
    elements. Each move is a :class:`LatticeMove`.
    """

    def __init__(self, model: GroupAveraged, inner: nn.Module) -> None:
        super().__init__()
        self.in_type: FieldType = model.in_type
        self.out_type: FieldType = model.out_type
        self.op = inner
        self.moves = nn.ModuleList(LatticeMove(g, model.in_type, model.periodic) for g in model.elements)
        self.returns = nn.ModuleList(LatticeMove(g.inverse(), model.out_type, model.periodic) for g in model.elements)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = len(self.moves)
        outs = self.op(torch.cat([move(u) for move in self.moves])).unflatten(0, (n, -1))  # (|G|, b, C, H, W)
        total = 0
        for i, back in enumerate(self.returns):
            total = total + back(outs[i])
        return total / n

    def extra_repr(self) -> str:
        return f"in_type='{self.in_type}', out_type='{self.out_type}', elements={len(self.moves)} (baked)"
