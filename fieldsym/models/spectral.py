"""The few Fourier modes a spectral convolution keeps, computed as two small matmuls instead of FFTs.

An FNO layer reads ``(2 K_y + 1) x (K_x + 1)`` coefficients of an ``H x W`` grid (13 x 7 of 64 x 64 for
``n_modes=(12, 12)``). A full ``rfft2`` computes all of them, and its backward pass pads to a full
complex grid; the truncated DFT costs ``2 (K_x + 1)`` real multiply-adds per grid point and the rest is
on the small coefficient array, all in BLAS matmuls, forward and backward (about 3x faster for the
G-FNO layer on CPU). Same normalisation as ``torch.fft.rfft2(norm="forward")``:

    c(k_y, k_x) = 1/(H W) sum_{y, x} u(y, x) exp(-2 pi i (k_y y / H + k_x x / W))
    u(y, x)     = sum_{k_y, k_x} w(k_x) Re[c(k_y, k_x) exp(+2 pi i (k_y y / H + k_x x / W))]

with ``k_y = -K_y..K_y`` (centred order), ``k_x = 0..K_x``, ``w(0) = 1`` and ``w(k_x) = 2`` otherwise
(the ``k_x < 0`` half is the conjugate). The inverse reads the ``k_x = 0`` column as Hermitian, like
``irfft2``. Both need ``K <= (N - 1) // 2`` on each axis (no Nyquist mode; the callers clip to it).
Phases are formed from ``k j mod N`` in float64, so a whole-cell shift changes them exactly.

Under bf16/fp16 autocast (training on a GPU) both transforms run in float32 with autocast off: complex
numbers have no bf16 type, and a truncated DFT summed in bf16 would lose the small modes. The callers'
pointwise layers still run in bf16.
"""

from __future__ import annotations

import functools
import math

import torch

_LOW = (torch.bfloat16, torch.float16)


def _full_precision(transform):
    """Run ``transform(t, ...)`` with autocast off and a bf16/fp16 ``t`` promoted to float32."""
    @functools.wraps(transform)
    def wrapper(t: torch.Tensor, *args):
        if t.dtype in _LOW:
            t = t.float()
        elif t.dtype == torch.complex32:
            t = t.to(torch.complex64)
        if torch.is_autocast_enabled(t.device.type):
            with torch.autocast(t.device.type, enabled=False):
                return transform(t, *args)
        return transform(t, *args)
    return wrapper


@_full_precision
def rfft2_modes(u: torch.Tensor, ky_max: int, kx_max: int) -> torch.Tensor:
    """``(..., H, W)`` real -> ``(..., 2 ky_max + 1, kx_max + 1)`` complex coefficients ``c(k_y, k_x)``."""
    H, W = u.shape[-2:]
    _check_modes(H, W, ky_max, kx_max)
    cos_x, sin_x = _phases(W, torch.arange(kx_max + 1), u.dtype, u.device)  # (kx, W)
    # Along x: one real matmul against [cos | -sin] / W over all rows of all channels.
    along_x = u @ (torch.cat([cos_x, -sin_x]).T / W)  # (..., H, 2 (kx+1))
    along_x = torch.complex(along_x[..., : kx_max + 1], along_x[..., kx_max + 1 :])
    cos_y, sin_y = _phases(H, torch.arange(-ky_max, ky_max + 1), u.dtype, u.device)  # (ky, H)
    to_y = torch.complex(cos_y, -sin_y).T / H  # (H, ky)
    # Along y on the kept columns: (..., kx, H) @ (H, ky) -> (..., kx, ky).
    return (along_x.transpose(-1, -2) @ to_y).transpose(-1, -2)


@_full_precision
def irfft2_modes(c: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(..., 2 ky_max + 1, kx_max + 1)`` complex -> ``(..., H, W)`` real; inverts :func:`rfft2_modes`."""
    ky_max, kx_max = (c.shape[-2] - 1) // 2, c.shape[-1] - 1
    _check_modes(H, W, ky_max, kx_max)
    real = c.real.dtype
    cos_y, sin_y = _phases(H, torch.arange(-ky_max, ky_max + 1), real, c.device)  # (ky, H)
    from_y = torch.complex(cos_y, sin_y)  # (ky, H)
    along_y = (c.transpose(-1, -2) @ from_y).transpose(-1, -2)  # (..., H, kx)
    cos_x, sin_x = _phases(W, torch.arange(kx_max + 1), real, c.device)  # (kx, W)
    weight = torch.full((kx_max + 1, 1), 2.0, dtype=real, device=c.device)
    weight[0] = 1.0
    to_x = torch.cat([weight * cos_x, -weight * sin_x])  # (2 (kx+1), W)
    return torch.cat([along_y.real, along_y.imag], dim=-1) @ to_x


def _phases(n: int, k: torch.Tensor, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of ``2 pi k j / n`` for ``j = 0..n-1``: ``(len(k), n)``, angles from ``k j mod n``."""
    kj = (k[:, None] * torch.arange(n)[None, :]) % n
    angle = (2 * math.pi / n) * kj.to(torch.float64)
    return torch.cos(angle).to(dtype=dtype, device=device), torch.sin(angle).to(dtype=dtype, device=device)


def _check_modes(H: int, W: int, ky_max: int, kx_max: int) -> None:
    if not (0 <= ky_max <= (H - 1) // 2 and 0 <= kx_max <= (W - 1) // 2):
        raise ValueError(
            f"wave numbers |k_y| <= {ky_max}, k_x <= {kx_max} are not all resolved on a {H}x{W} grid: "
            f"need at most {(H - 1) // 2} and {(W - 1) // 2}; clip the modes to the grid first"
        )
