"""The enforced discrete operator: a C4- or D4-equivariant FNO for scalar, pseudoscalar and vector fields.

G-FNO (Helwig et al., ICML 2023) lifts scalar fields to the regular representation of p4 / p4m and
ties its spectral kernels over the group orbit. fieldsym keeps that design and makes the two ends
typed, so vectors and pseudoscalars go in and come out with the right transformation law:

    u (typed) --Lift--> regular --[GroupSpectralConv + RegularLinear, GELU, channel MLP]*n_layers-->
    regular --Project--> F(u) (typed)

Every map commutes with the group action (``tests/test_models_gfno.py`` checks
``||F(g.u) - g.F(u)|| / ||F(u)|| < 1e-10`` in float64 for every element, on even and odd, periodic and
non-periodic grids): the lifting and projection solve the intertwiner constraint in closed form
(:mod:`fieldsym.models.regular`), the spectral kernels are tied over the orbit
(:mod:`fieldsym.models.gspectral`), GELU acts pointwise on regular features and so commutes with their
permutation. The block mirrors neuralop's FNO block (post-activation, linear skip around the spectral
convolution, soft-gated skip around a channel MLP of expansion 1/2, lifting and projection MLPs of
width ratio 2) so the two operators differ only in the symmetry constraint.

Cost: a training step costs about what an FNO as wide as the hidden tensor (``c |G|`` channels)
costs (0.9x-1.1x measured on CPU, where a step is bound by activation memory): the constraint itself
is nearly free. At equal parameter count, though, the hidden tensor is ``sqrt(|G|)`` times the FNO's
width (the spectral weights hold ``c^2 |G|`` complex numbers per mode against ``width^2``), so a step
costs 2x-3.6x (C4) and 3.3x-5.7x (D4) an FNO with as many parameters on a shared 2-core CPU; at equal
step cost it has ``1/|G|`` of the parameters. ``experiments/bench_gfno_step.py`` measures both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fieldsym.fields import FieldType
from fieldsym.models.embedding import InvariantGridEmbedding
from fieldsym.models.gspectral import GroupSpectralConv
from fieldsym.models.regular import Lift, PointGroup, Project, RegularLinear


class GroupFNO(nn.Module):
    """C4/D4-equivariant Fourier neural operator between typed fields.

    ``u``: ``(batch, in_type.num_channels, H, W)`` -> ``(batch, out_type.num_channels, H, W)``.

    ``group``: ``"C4"`` (quarter turns about the grid centre) or ``"D4"`` (also the axis and diagonal
    reflections; pseudoscalars change sign under them). ``n_modes``: an int ``m`` or a pair ``(m, m)``,
    wave numbers ``|k_x|, |k_y| <= m // 2`` (the convention of :class:`FieldFNO`; the two entries must
    agree so quarter turns map the mode set onto itself). ``hidden_channels``: regular channels ``c``;
    each carries ``|G|`` copies, so the hidden tensor has ``c |G|`` channels. ``positional_embedding``:
    append the D4-invariant features of :class:`InvariantGridEmbedding` (frequencies 1 and 2) to the
    input, so forcings with the group's symmetry are representable while the operator stays
    equivariant; it breaks translations. ``periodic``: ``(y, x)``, where the centre of the embedding
    lies (it must match the data's grid; the layers themselves are equivariant on both kinds).
    ``grid_embedding``: also append neuralop's grid coordinates ``x, y`` in ``[0, 1)`` as two scalar
    channels, scaled by one learned gate (initial value ``grid_gate``): at 0 the operator starts exactly
    equivariant and can break every candidate symmetry (translations and rotations) only by growing
    the gate; at 1 it starts as broken as an FNO with its grid embedding, for symmetry promotion to push
    back towards the group where the data allows (``experiments/README.md``, "Promotion on a GroupFNO":
    from 0 the gate hardly moves in 80 epochs, so the default for promotion is 1).
    ``channel_mlp_expansion``, ``lifting_channel_ratio``, ``projection_channel_ratio``: as in
    neuralop's FNO, in regular channels (ratio 1 keeps the lifting and projection tensors ``c |G|``
    wide instead of ``2 c |G|``: about 20% cheaper steps for C4, 10% for D4). Quarter turns need a
    square grid.
    """

    def __init__(
        self,
        in_type: FieldType | str,
        out_type: FieldType | str,
        group: str = "C4",
        n_modes: int | Sequence[int] = 12,
        hidden_channels: int = 16,
        n_layers: int = 4,
        positional_embedding: bool = False,
        grid_embedding: bool = False,
        grid_gate: float = 0.0,
        periodic: tuple[bool, bool] = (True, True),
        channel_mlp_expansion: float = 0.5,
        lifting_channel_ratio: float = 2,
        projection_channel_ratio: float = 2,
    ) -> None:
        super().__init__()
        self.in_type = FieldType.parse(in_type)
        self.out_type = FieldType.parse(out_type)
        self.group = PointGroup(group)
        self.n_modes = _square_modes(n_modes)
        if hidden_channels < 1 or n_layers < 1:
            raise ValueError(
                f"hidden_channels and n_layers must be >= 1, got {hidden_channels} and {n_layers}"
            )
        c = hidden_channels
        self.embedding = InvariantGridEmbedding(periodic) if positional_embedding else None
        lift_type = self.in_type
        if self.embedding is not None:
            names = ", ".join(f"embedding_{i}:scalar" for i in range(self.embedding.num_channels))
            lift_type = self.in_type + FieldType.parse(names)
        # The symmetry-breaking coordinates and their gate (0: exactly equivariant).
        self.grid_gate = nn.Parameter(torch.tensor(float(grid_gate))) if grid_embedding else None
        if grid_embedding:
            lift_type = lift_type + FieldType.parse("grid_x:scalar, grid_y:scalar")
        G = self.group
        c_lift, c_proj = round(lifting_channel_ratio * c), round(projection_channel_ratio * c)
        c_mlp = max(1, round(channel_mlp_expansion * c))

        self.lift_in = Lift(G, lift_type, c_lift)
        self.lift_out = RegularLinear(G, c_lift, c)
        self.convs = nn.ModuleList(GroupSpectralConv(G, c, c, self.n_modes // 2) for _ in range(n_layers))
        self.skips = nn.ModuleList(RegularLinear(G, c, c, bias=False) for _ in range(n_layers))
        self.mlp_in = nn.ModuleList(RegularLinear(G, c, c_mlp) for _ in range(n_layers))
        self.mlp_out = nn.ModuleList(RegularLinear(G, c_mlp, c) for _ in range(n_layers))
        # Soft gating: one weight per regular channel, shared by its copies (so invariant).
        self.gates = nn.Parameter(torch.ones(n_layers, c))
        self.proj_in = RegularLinear(G, c, c_proj)
        self.proj_out = Project(G, c_proj, self.out_type)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.in_type.check(u)
        if self.embedding is not None:
            u = self.embedding(u)
        if self.grid_gate is not None:
            u = torch.cat([u, self.grid_gate * _grid(u).expand(u.shape[0], -1, -1, -1)], dim=1)
        h = self.lift_out(F.gelu(self.lift_in(u)))  # (b, c, |G|, H, W)
        last = len(self.convs) - 1
        layers = zip(self.convs, self.skips, self.mlp_in, self.mlp_out)
        for i, (conv, skip, mlp_in, mlp_out) in enumerate(layers):
            gated = self.gates[i][:, None, None, None] * h
            h = conv(h) + skip(h)
            if i < last:
                h = F.gelu(h)
            h = mlp_out(F.gelu(mlp_in(h))) + gated
            if i < last:
                h = F.gelu(h)
        return self.proj_out(F.gelu(self.proj_in(h)))

    def extra_repr(self) -> str:
        return (
            f"in_type='{self.in_type}', out_type='{self.out_type}', group={self.group.name}, "
            f"n_modes={self.n_modes}"
        )


def _grid(u: torch.Tensor) -> torch.Tensor:
    """``(2, H, W)``: ``x`` then ``y`` in ``[0, 1)`` (neuralop's ``GridEmbedding2D`` on the unit square)."""
    H, W = u.shape[-2:]
    y = torch.arange(H, dtype=u.dtype, device=u.device) / H
    x = torch.arange(W, dtype=u.dtype, device=u.device) / W
    return torch.stack(torch.meshgrid(x, y, indexing="xy"))


def _square_modes(n_modes: int | Sequence[int]) -> int:
    modes = (n_modes, n_modes) if isinstance(n_modes, int) else tuple(n_modes)
    if len(modes) != 2 or not all(isinstance(m, int) and m >= 1 for m in modes) or modes[0] != modes[1]:
        raise ValueError(
            f"GroupFNO needs the same number of modes on both axes, n_modes=m or (m, m) with m >= 1, "
            f"so that quarter turns map the kept wave numbers onto themselves; got {n_modes!r}"
        )
    return modes[0]
