"""A positional embedding that D4 leaves unchanged, for operators that must stay equivariant.

A forcing fixed in space breaks translations; an operator that never sees position cannot represent
it (DESIGN.md section 2). A forcing with the group's symmetry (NS-sym: ``cos 4 pi x + cos 4 pi y``)
only needs position features that the group leaves unchanged: then ``F(g.u) = g.F(u)`` still holds
because ``g.e = e`` for the appended channels ``e``. Per axis we use the coordinate ``s`` measured from
the centre that :func:`fieldsym.fields.lattice_transform` rotates and reflects about:

    periodic axis of N cells      s_j = j / N                     (centre index 0; cos 2 pi k s is even
                                                                   and 1-periodic, so j -> -j mod N
                                                                   leaves it unchanged)
    non-periodic axis of N nodes  s_j = (j - (N - 1) / 2) / (N - 1)   (middle node, s in [-1/2, 1/2])

and for each frequency ``k`` two D4-invariant features (symmetric under ``x <-> y`` and under
``x -> -x``, ``y -> -y``):

    cos 2 pi k s_x + cos 2 pi k s_y,        cos 2 pi k s_x * cos 2 pi k s_y.

With unit-period coordinates ``x = s`` on a periodic grid, NS-sym's forcing is the ``k = 2`` sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fieldsym.models.constants import cached_constant


class InvariantGridEmbedding(nn.Module):
    """Appends ``2 len(frequencies)`` D4-invariant scalar channels: ``(b, C, H, W) -> (b, C + 2F, H, W)``."""

    def __init__(self, periodic: tuple[bool, bool] = (True, True), frequencies: Sequence[int] = (1, 2)):
        super().__init__()
        if not frequencies or not all(isinstance(k, int) and k >= 1 for k in frequencies):
            raise ValueError(f"frequencies must be positive integers, e.g. (1, 2); got {frequencies!r}")
        self.periodic = tuple(bool(p) for p in periodic)
        self.frequencies = tuple(frequencies)

    @property
    def num_channels(self) -> int:
        return 2 * len(self.frequencies)

    def features(self, H: int, W: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(2 len(frequencies), H, W)``: for each k, the sum and the product feature (built once per
        grid, dtype and device; do not modify in place)."""
        return _features(H, W, tuple(self.periodic), tuple(self.frequencies), dtype,
                         None if device is None else torch.device(device))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        e = self.features(u.shape[-2], u.shape[-1], u.dtype, u.device)
        return torch.cat([u, e.expand(u.shape[0], -1, -1, -1)], dim=1)

    def extra_repr(self) -> str:
        return f"periodic={self.periodic}, frequencies={self.frequencies}"


@cached_constant
def _features(H: int, W: int, periodic: tuple[bool, bool], frequencies: tuple[int, ...], dtype, device):
    sy = _centred_coordinate(H, periodic[0], dtype, device)[:, None]
    sx = _centred_coordinate(W, periodic[1], dtype, device)[None, :]
    out = []
    for k in frequencies:
        cx, cy = torch.cos(2 * math.pi * k * sx), torch.cos(2 * math.pi * k * sy)
        out += [cx + cy, cx * cy]
    return torch.stack(out)


def _centred_coordinate(n: int, periodic: bool, dtype, device) -> torch.Tensor:
    """``|s_j|`` (the features are even in ``s``), computed so mirrored nodes get identical bits."""
    j = torch.arange(n, dtype=torch.float64, device=device)
    if periodic:
        return (torch.minimum(j, n - j) / n).to(dtype)
    return ((2 * j - (n - 1)).abs() / (2 * max(n - 1, 1))).to(dtype)
