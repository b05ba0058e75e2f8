"""The plain layers baked operators are built from, written for ``torch.export`` and the ONNX exporter.

Each replaces a piece of a fieldsym operator whose eager form an export cannot hold or should not:
module state keyed on the grid size, a loop over irrep blocks, an index table computed in Python from
the grid size. Every one computes what it needs from the input's shape inside the graph, in real
arithmetic, so the batch and (where the operator allows) the grid stay dynamic, and every one gives
the same bits as the eager layer on grid-preserving symmetries, so the exported operator keeps the
eager operator's exact lattice equivariance.

- :func:`pointwise`: an ``(out, in)`` matrix as a ``1x1`` convolution;
- :class:`GridEmbedding`: neuralop's grid coordinates without its resolution cache;
- :class:`RadialEmbedding`: ``SteerableFNO``'s distance to the grid centre;
- :class:`Gate`: ``SteerableFNO``'s :class:`~fieldsym.models.steerable.GateActivation`, gates spread by a
  ``1x1`` convolution;
- :class:`NormGate`: ``SteerableFNO``'s :class:`~fieldsym.models.steerable.NormActivation` on all
  channels at once;
- :class:`LatticeMove`: a lattice symmetry ``g.u`` as flips, a transpose and a roll (``GroupAveraged``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fieldsym.constraints import irrep_dim
from fieldsym.fields import FieldType
from fieldsym.groups import GroupElement
from fieldsym.models.steerable import NORM_EPS, GateActivation, NormActivation, radial_embedding


def pointwise(matrix: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """``(out, in)`` matrix and ``(out,)`` bias as an ``nn.Conv2d`` of kernel size 1."""
    conv = nn.Conv2d(matrix.shape[1], matrix.shape[0], 1, bias=bias is not None)
    conv.weight.data = matrix.detach()[:, :, None, None].clone()
    if bias is not None:
        conv.bias.data = bias.detach().clone()
    conv.requires_grad_(False)
    return conv


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


class RadialEmbedding(nn.Module):
    """``(b, C, H, W) -> (b, C + 1, H, W)``: appends :func:`~fieldsym.models.steerable.radial_embedding`.

    The eager function itself, called on the (possibly symbolic) grid size, so the bits are the eager
    operator's and mirrored nodes still get identical values. ``periodic``: ``(y, x)``.
    """

    def __init__(self, periodic: tuple[bool, bool]) -> None:
        super().__init__()
        self.periodic = tuple(bool(p) for p in periodic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = radial_embedding(x.shape[-2], x.shape[-1], self.periodic, x.dtype, x.device)
        return torch.cat([x, r.expand(x.shape[0], 1, -1, -1)], dim=1)

    def extra_repr(self) -> str:
        return f"periodic={self.periodic}"


class NormGate(nn.Module):
    """:class:`~fieldsym.models.steerable.NormActivation` as three whole-tensor ops, ``(b, C, H, W)`` kept.

    ``GELU(u)`` on the channels of ``"0"`` blocks; ``u sigmoid(sqrt(|u|^2 + eps^2) + b)`` on the others,
    where ``|u|^2`` of each irrep copy is a ``1x1`` convolution of ``u^2`` with the 0/1 matrix ``S``
    (``S[c, d] = 1`` when channels ``c`` and ``d`` are components of the same copy) and ``b`` is the
    copy's bias, repeated over its components. A copy has at most two components, so ``S u^2`` adds
    exactly the two squares the eager sum adds (the other terms are exact zeros): the gate keeps the
    eager layer's bits under quarter turns and reflections.
    """

    def __init__(self, act: NormActivation) -> None:
        super().__init__()
        C = act.irreps.num_channels
        scalar = torch.zeros(C, dtype=torch.bool)
        dtype = act.biases[0].dtype if len(act.biases) else torch.float32
        bias, same_copy = torch.zeros(C, dtype=dtype), torch.zeros(C, C, dtype=dtype)
        gated = iter(act.biases)
        for sl, (m, label) in zip(act.irreps.slices(), act.irreps.blocks):
            if label == "0":
                scalar[sl] = True
                continue
            d = irrep_dim(label)
            bias[sl] = next(gated).detach().repeat_interleave(d)
            for copy in range(m):
                start = sl.start + copy * d
                same_copy[start : start + d, start : start + d] = 1
        self.register_buffer("scalar", scalar[:, None, None].clone())
        self.register_buffer("bias", bias[:, None, None].clone())
        self.register_buffer("same_copy", same_copy[:, :, None, None].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(F.conv2d(x * x, self.same_copy.to(x.dtype)) + NORM_EPS**2)
        return torch.where(self.scalar, F.gelu(x), x * torch.sigmoid(norm + self.bias.to(x.dtype)))


class Gate(nn.Module):
    """:class:`~fieldsym.models.steerable.GateActivation` without an index op: each copy's gate is spread
    over its components by a ``1x1`` convolution with a 0/1 matrix (a single 1 in the row of each gated
    channel, zero rows for the ``"0"`` channels, which the ``where`` replaces by their GELU), then
    ``u sigmoid(gate)`` on the gated channels. In float32/float64 without TF32 the spread copies the gate
    exactly; the components of one copy always share one gate, so equivariance is exact either way."""

    def __init__(self, act: GateActivation) -> None:
        super().__init__()
        C, n = act.irreps.num_channels, act.n_gates
        spread = torch.zeros(C, max(n, 1))
        if n:
            spread[torch.arange(C), act.gate_of] = 1.0
        spread[act.scalar.flatten()] = 0.0
        self.channels, self.n_gates = C, n
        self.register_buffer("spread", spread[:, :, None, None].clone())
        self.register_buffer("scalar", act.scalar.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x[:, : self.channels]
        if not self.n_gates:
            return F.gelu(h)
        gates = F.conv2d(torch.sigmoid(x[:, self.channels :]), self.spread.to(x.dtype))
        return torch.where(self.scalar, F.gelu(h), h * gates)


class LatticeMove(nn.Module):
    """``g.u`` for a lattice symmetry ``g`` (:meth:`fieldsym.groups.GroupElement.act`), ``(b, C, H, W)`` kept.

    ``(g.u)(x) = rho(A) u(A^T (x - s))`` (``A^T = A^-1``), taken apart as: a roll by ``A^T s`` whole
    cells, ``v(x) = u(x - A^T s)``; then ``v(A^T x)``, a transpose when ``A`` swaps the axes and a
    reflection of each axis whose entry of ``A^T`` is ``-1`` (about the grid centre of
    :func:`~fieldsym.fields.lattice_transform`: ``j -> -j mod N``, a flip and a roll by one cell, on a
    periodic axis; ``j -> N - 1 - j``, a flip, otherwise); then ``rho(A)`` on the channels. Index moves
    instead of the eager gather through a table computed in Python, so an export does not fix the grid
    size; the values moved are the same. Swapping axes needs ``H = W``.
    """

    def __init__(self, g: GroupElement, field_type: FieldType, periodic: tuple[bool, bool]) -> None:
        super().__init__()
        A = g.matrix()
        shift = (A.T @ torch.tensor(g.shift, dtype=torch.float64)).round().to(torch.int64).tolist()
        self.name, self.periodic = g.name, tuple(bool(p) for p in periodic)
        self.roll = (int(shift[1]), int(shift[0]))  # (y, x) cells
        P = A.T.round().to(torch.int64).tolist()  # acts on (x, y): source = P x
        self.swap = P[0][0] == 0
        # Sign of the source coordinate along the target's (y, x) axes after the optional transpose.
        self.signs = (P[0][1], P[1][0]) if self.swap else (P[1][1], P[0][0])
        for axis, cells, periodic_axis in zip("yx", self.roll, self.periodic):
            if cells and not periodic_axis:
                raise ValueError(f"{g.name}: a shift of {cells} cells along {axis} is not a symmetry of a "
                                 "non-periodic axis")
        if self.swap and self.periodic[0] != self.periodic[1]:
            raise ValueError(f"{g.name}: swapping the axes needs the same periodicity on both, got {self.periodic}")
        self.register_buffer("rho", field_type.rho(A).to(torch.float32))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if any(self.roll):
            u = torch.roll(u, self.roll, dims=(-2, -1))
        if self.swap:
            u = u.transpose(-2, -1)
        for dim, sign, periodic in zip((-2, -1), self.signs, self.periodic):
            if sign < 0:
                u = torch.flip(u, (dim,))
                if periodic:
                    u = torch.roll(u, 1, dims=dim)
        # c=out channel, d=in channel, b=batch
        return torch.einsum("cd,bdhw->bchw", self.rho.to(u.dtype), u)

    def extra_repr(self) -> str:
        return f"{self.name}, periodic={self.periodic}"
