"""A spectral convolution in real arithmetic, with a plain stacked kernel, for exported graphs.

Why it exists: ONNX's dynamo exporter fails on complex tensors (DESIGN.md section 5), and an exported
graph should carry the kernel the forward applies, not the factorisation or the group-orbit
construction that produced it. :class:`RealSpectralConv` takes any complex kernel on the kept wave
numbers (a neuralop/``FieldFNO`` weight, reconstructed densely, or ``GroupSpectralConv.kernel()``) and
applies it with real tensors only: the coefficients travel as ``(real, imaginary)`` pairs and the
complex product becomes one real matmul with the block matrix

    [x_re, x_im] @ [[W_re, W_im], [-W_im, W_re]] = [Re(x W), Im(x W)].

The transforms are truncated DFTs (real matmuls against cosine and sine tables), with the
normalisation and phase convention of :mod:`fieldsym.models.spectral`:

    c(k_y, k_x) = 1/(H W) sum_{y, x} u(y, x) exp(-2 pi i (k_y y / H + k_x x / W))
    u(y, x)     = sum_{k_y, k_x} w(k_x) Re[c(k_y, k_x) exp(+2 pi i (k_y y / H + k_x x / W))]

``k_y = -K_y..K_y`` (centred order, so corner blocks of the FFT grid, never an ``fftshift``),
``k_x = 0..K_x``, ``w(0) = 1`` and ``w(k_x > 0) = 2``. The tables are built from the input's shape
inside the graph (phases from ``k j mod N`` in float64, so whole-cell shifts stay exact), which is
what lets an export keep the grid size dynamic. Both axes must resolve the kept modes:
``H >= 2 K_y + 1``, ``W >= 2 K_x + 1`` (checked with ``torch._check``, which survives export).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RealSpectralConv(nn.Module):
    """``(b, C_in, H, W) -> (b, C_out, H, W)``: ``irdft(K(k) rdft(x)(k)) + bias`` in real arithmetic.

    ``kernel``: complex ``(2 K_y + 1 (k_y = -K_y..K_y), K_x + 1 (k_x = 0..K_x), C_in, C_out)``, stored as
    the real block matrix ``(modes, 2 C_in, 2 C_out)``. ``bias``: ``(C_out,)`` or ``None``. The FFT normalisation
    of the source layer does not matter: with the same norm forward and back, ``backward``, ``forward``
    and ``ortho`` all give ``1/(HW)`` in total, as here.
    """

    def __init__(self, kernel: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if not kernel.is_complex() or kernel.ndim != 4 or kernel.shape[0] % 2 != 1:
            raise ValueError(
                "RealSpectralConv needs a complex kernel (2 K_y + 1, K_x + 1, C_in, C_out) with an odd "
                f"number of k_y rows, got {kernel.dtype} {tuple(kernel.shape)}"
            )
        rows, cols, c_in, c_out = kernel.shape
        self.ky, self.kx, self.c_in, self.c_out = (rows - 1) // 2, cols - 1, c_in, c_out
        k = kernel.detach().transpose(0, 1).flatten(0, 1)  # (s, i, o), s = (k_x, k_y) row-major
        # Rows (p_in, i), columns (p_out, o): [x_re, x_im] @ [[W_re, W_im], [-W_im, W_re]].
        block = torch.cat([torch.cat([k.real, k.imag], dim=2), torch.cat([-k.imag, k.real], dim=2)], dim=1)
        self.weight = nn.Parameter(block.contiguous(), requires_grad=False)  # (s, 2 i, 2 o)
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(c_out, 1, 1).clone(),
                                                           requires_grad=False)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if output_shape is not None:
            raise ValueError("RealSpectralConv keeps the grid; resample outside the operator")
        b, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        i, o, rows, cols = self.c_in, self.c_out, 2 * self.ky + 1, self.kx + 1
        torch._check(H >= rows, lambda: f"the grid needs at least {rows} rows for the kept modes")
        torch._check(W >= 2 * cols - 1, lambda: f"the grid needs at least {2 * cols - 1} columns for the kept modes")
        cos_x, sin_x = _phases(W, torch.arange(cols, device=x.device), x.dtype)  # (k_x, W)
        C, S = _phases(H, torch.arange(-self.ky, self.ky + 1, device=x.device), x.dtype)  # (k_y, H)
        # Every transform is one large matmul over a grid axis; (real, imaginary) pairs sit next to that
        # axis, so the complex arithmetic is in the block tables: exp(-i t) (r + i m) = (C r + S m) + i (C m - S r)
        # forward, exp(+i t) (r + i m) = (C r - S m) + i (S r + C m) inverse. p = part (re, im).

        # Forward along x: (b i H, W) @ (W, [cos | -sin] k_x) / W -> (b, i, H, p, k_x).
        a = (x @ (torch.cat([cos_x, -sin_x]).T / W)).unflatten(-1, (2, cols))
        # Along y: (b i k_x, p H) @ (p H, p k_y) -> c (b, i, k_x, p, k_y).
        to_y = torch.cat([torch.cat([C.T, -S.T], dim=1), torch.cat([S.T, C.T], dim=1)]) / H
        c = (a.permute(0, 1, 4, 3, 2).reshape(-1, 2 * H) @ to_y).reshape(b, i, cols, 2, rows)

        # Kernel: (s, b, p i) @ (s, p i, p o) -> (s, b, p o); s = (k_x, k_y) mode, b=batch, i,o=channel.
        z = c.permute(2, 4, 0, 3, 1).reshape(cols * rows, b, 2 * i)
        out = torch.bmm(z, self.weight).reshape(cols, rows, b, 2, o)

        # Inverse along y: (b o k_x, p k_y) @ (p k_y, p H) -> (b, o, k_x, p, H).
        from_y = torch.cat([torch.cat([C, S], dim=1), torch.cat([-S, C], dim=1)])
        g = (out.permute(2, 4, 0, 3, 1).reshape(-1, 2 * rows) @ from_y).reshape(b, o, cols, 2, H)
        # Along x: sum_kx w(k_x) (Re cos - Im sin), w = 1 for k_x = 0 (read as Hermitian, like irfft2), else 2.
        weight = torch.cat([torch.ones(1, 1, dtype=x.dtype, device=x.device),
                            torch.full((cols - 1, 1), 2.0, dtype=x.dtype, device=x.device)])
        from_x = torch.cat([weight * cos_x, -weight * sin_x])  # (p k_x, W)
        y = (g.permute(0, 1, 4, 3, 2).reshape(-1, 2 * cols) @ from_x).reshape(b, o, H, W)
        return y if self.bias is None else y + self.bias

    def transform(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """neuralop's skip path asks the convolution to resample; this one keeps the grid."""
        return x

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, modes=(|k_y| <= {self.ky}, k_x <= {self.kx})"


def _phases(n, k: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of ``2 pi k j / n`` for ``j = 0..n-1``: ``(len(k), n)``, angles from ``k j mod n``."""
    # A tensor modulus: ONNX's exporter cannot take the remainder by a symbolic Python int.
    modulus = torch.full((), n, dtype=torch.int64, device=k.device)
    kj = torch.remainder(k[:, None] * torch.arange(n, device=k.device)[None, :], modulus)
    angle = (2 * math.pi / n) * kj.to(torch.float64)
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)
