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
        k = kernel.detach().flatten(0, 1)  # (s, i, o), s = (k_y, k_x) row-major
        block = torch.cat([torch.cat([k.real, k.imag], dim=2), torch.cat([-k.imag, k.real], dim=2)], dim=1)
        self.weight = nn.Parameter(block.contiguous(), requires_grad=False)  # (s, 2 i, 2 o)
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(c_out, 1, 1).clone(),
                                                           requires_grad=False)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if output_shape is not None:
            raise ValueError("RealSpectralConv keeps the grid; resample outside the operator")
        b, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        ky, kx, rows, cols = self.ky, self.kx, 2 * self.ky + 1, self.kx + 1
        torch._check(H >= rows, lambda: f"the grid needs at least {rows} rows for the kept modes")
        torch._check(W >= 2 * kx + 1, lambda: f"the grid needs at least {2 * kx + 1} columns for the kept modes")
        cos_x, sin_x = _phases(W, torch.arange(cols, device=x.device), x.dtype)  # (kx, W)
        cos_y, sin_y = _phases(H, torch.arange(-ky, ky + 1, device=x.device), x.dtype)  # (ky, H)

        # Forward DFT. Along x: (b, i, H, W) @ (W, 2 kx) -> [Re | Im] per row.
        a = x @ (torch.cat([cos_x, -sin_x]).T / W)
        a_re, a_im = a[..., :cols], a[..., cols:]
        # Along y: (ky, H) @ (b, i, H, kx); exp(-i t) (p + i q) = (cos p + sin q) + i (cos q - sin p).
        c_re = (cos_y @ a_re + sin_y @ a_im) / H
        c_im = (cos_y @ a_im - sin_y @ a_re) / H  # (b, i, ky, kx)

        # Kernel: (s, b, [re i | im i]) @ (s, 2 i, 2 o) -> (s, b, [re o | im o]); s=mode b=batch i,o=channel.
        z = torch.cat([c_re, c_im], dim=1).flatten(2).permute(2, 0, 1)
        out = torch.bmm(z, self.weight).permute(1, 2, 0).reshape(b, 2 * self.c_out, rows, cols)
        o_re, o_im = out[:, : self.c_out], out[:, self.c_out :]

        # Inverse DFT. Along y: sum_ky exp(+i t) (p + i q) = (cos p - sin q) + i (cos q + sin p).
        cos_yt, sin_yt = cos_y.T, sin_y.T  # (H, ky)
        g_re = cos_yt @ o_re - sin_yt @ o_im
        g_im = cos_yt @ o_im + sin_yt @ o_re  # (b, o, H, kx)
        # Along x: w(kx) (Re cos - Im sin); the k_x = 0 column counts once (Hermitian, like irfft2).
        weight = torch.cat([torch.ones(1, 1, dtype=x.dtype, device=x.device),
                            torch.full((cols - 1, 1), 2.0, dtype=x.dtype, device=x.device)])
        y = torch.cat([g_re, g_im], dim=-1) @ torch.cat([weight * cos_x, -weight * sin_x])
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
