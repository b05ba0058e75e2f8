"""Group spectral convolution: one learned Fourier kernel, its rotated and reflected copies tied over
the orbit of C4 or D4 (the G-FNO layer of Helwig et al., ICML 2023, on regular features).

On regular features ``h`` (``(b, c, |G|, H, W)``, see :mod:`fieldsym.models.regular`) the layer is

    out_k(x) = sum_m  kappa(k^-1 m, A_k^-1 .) * h_m        (* = circular convolution on the grid)

with one kernel ``kappa(n, .)`` per group element ``n``. Substituting ``h -> g.h`` gives ``out -> g.out``
because ``A_{g^-1 k}^-1 A_g^-1 = A_k^-1``. In Fourier space (DFT index ``xi = (xi_x, xi_y)``, the grid
move ``x -> A^-1 x`` is the index move ``xi -> A^-1 xi`` mod N) the kernel for output copy ``k`` and
input copy ``m`` is ``W(k^-1 m, A_k^-1 xi)``: the base kernel ``W(n, xi)`` with its wave-vector square
rotated, so one stacked ``(c_out |G|, c_in |G|)`` kernel is gathered per forward and applied in a
single batched matmul on the kept Fourier coefficients (:mod:`fieldsym.models.spectral`).

Exactness on the grid needs three things, all built in:

- the mode set ``|xi_x|, |xi_y| <= K`` is invariant under D4 and excludes the Nyquist wave number of
  even grids (``K <= (N - 1) // 2``), so it is invariant mod N on even and odd grids;
- the kernel is Hermitian, ``W(n, -xi) = conj W(n, xi)`` (a real kernel in space): only then does
  the inverse transform, which reads the ``xi_x = 0`` column as Hermitian but not the ``xi_y = 0``
  row, treat every rotated copy alike. We store the ``xi_x >= 0`` half and extend it, averaging the
  ``xi_x = 0`` column with its mirror;
- a circular convolution commutes with every cyclic shift, so rotating about the periodic centre
  (index 0) or about the middle node of a non-periodic axis (a rotation about 0 plus a cyclic shift)
  are both exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fieldsym.models.regular import PointGroup
from fieldsym.models.spectral import irfft2_modes, rfft2_modes


class GroupSpectralConv(nn.Module):
    """``(b, c_in, |G|, H, W) -> (b, c_out, |G|, H, W)``, wave numbers ``|k_x|, |k_y| <= max_mode``.

    Parameters: the ``k_x >= 0`` half of the base kernel, ``(c_out, c_in, |G|, 2K + 1, K + 1)`` complex
    (stored as real pairs so ``.to(dtype)`` and optimisers treat it as any real tensor), and one bias
    per output channel (shared by the copies, so invariant).
    """

    def __init__(self, group: PointGroup, c_in: int, c_out: int, max_mode: int) -> None:
        super().__init__()
        if max_mode < 0:
            raise ValueError(f"max_mode must be >= 0, got {max_mode}")
        n, K = len(group), max_mode
        self.K, self.n, self.c_out = K, n, c_out
        std = (2 / (n * (c_in + c_out))) ** 0.5  # neuralop's init_std over the flattened widths
        self.weight = nn.Parameter(torch.randn(c_out, c_in, n, 2 * K + 1, K + 1, 2) * std / 2**0.5)
        self.bias = nn.Parameter(std * torch.randn(c_out))
        half_column = torch.ones(2 * K + 1)
        half_column[K] = 0.5
        self.register_buffer("half_column", half_column, persistent=False)
        # complex conjugation of a real pair; a buffer, not a torch.tensor per call (on a GPU that is a copy
        # from pageable host memory, which waits, every layer and step)
        self.register_buffer("conj", torch.tensor([1.0, -1.0]), persistent=False)
        self.register_buffer("gather_index", _gather_index(group, K), persistent=False)

    def kernel(self) -> torch.Tensor:
        """Stacked kernel ``(2K + 1, K + 1, c_in |G|, c_out |G|)``.

        Axes: ``k_y = -K..K``, ``k_x = 0..K``, input ``(i, m)`` i-major, output ``(o, k)`` o-major.
        """
        K = self.K
        # Real pairs (..., 2) throughout: complex advanced indexing breaks torch.compile's fake kernels.
        half = self.weight  # (o, i, n, 2K+1, K+1, 2), k_x >= 0
        # Z(xi): the half for k_x > 0, half of it on k_x = 0, zero for k_x < 0; W = Z(xi) + conj Z(-xi).
        Z = F.pad(half, (0, 0, K, 0)) * self.half_column.to(half.dtype)[:, None]
        full = (Z + Z.flip(-3, -2) * self.conj.to(half.dtype)).flatten(2, 4)  # (o, i, n (2K+1)^2, 2), Hermitian
        W = full.permute(2, 1, 0, 3)[self.gather_index]  # (y, x, m, k, i, o, 2) = W(k^-1 m, A_k^-1 xi)[o, i]
        W = W.permute(0, 1, 4, 2, 5, 3, 6).flatten(4, 5).flatten(2, 3)
        return torch.view_as_complex(W.contiguous())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c_in, n, H, W = h.shape
        K = self.K
        ky_max, kx_max = min(K, (H - 1) // 2), min(K, (W - 1) // 2)
        h_hat = rfft2_modes(h.flatten(1, 2), ky_max, kx_max)  # (b, i m, 2 ky_max + 1, kx_max + 1)
        kernel = self.kernel()[K - ky_max : K + ky_max + 1, : kx_max + 1].to(h_hat.dtype)
        # One batched matmul over the kept wave numbers s = (k_y, k_x):
        # (s, b, i m) @ (s, i m, o k) -> (s, b, o k); b=batch i,o=channel m,k=copy in,out.
        # contiguous: CPU complex bmm is several times slower on a permuted operand at small sizes.
        x = h_hat.flatten(2).permute(2, 0, 1).contiguous()
        out_hat = torch.bmm(x, kernel.flatten(0, 1)).permute(1, 2, 0)
        out = irfft2_modes(out_hat.unflatten(-1, h_hat.shape[-2:]), H, W)
        return out.unflatten(1, (self.c_out, n)) + self.bias.to(out.dtype)[:, None, None, None]


def _gather_index(group: PointGroup, K: int) -> torch.Tensor:
    """Where ``W(k^-1 m, A_k^-1 xi)`` sits in the flattened ``(|G| (n), (2K+1)^2 (xi))`` full kernel.

    Shape ``(2K+1, K+1, |G| (m), |G| (k))``: ``xi`` runs over the kept half ``k_y = -K..K`` (rows) by
    ``k_x = 0..K`` (columns); the full square is flattened row-major, ``k_y`` and ``k_x`` from ``-K``.
    """
    side = 2 * K + 1
    ky, kx = torch.meshgrid(torch.arange(-K, K + 1), torch.arange(0, K + 1), indexing="ij")
    xi = torch.stack([kx, ky]).to(torch.float64)  # (2, 2K+1, K+1), x first
    source = torch.einsum("gji,jyx->gyxi", group.matrices, xi).round().long()  # A_g^-1 xi = A_g^T xi
    flat_xi = (source[..., 1] + K) * side + (source[..., 0] + K)  # (k, y, x)
    index = group.quotient[:, :, None, None] * side**2 + flat_xi[:, None]  # (k, m, y, x)
    return index.permute(2, 3, 1, 0)
