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

from fieldsym.models.constants import cached_constant

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
    to_x, to_y, _, _ = _dft_matrices(H, W, ky_max, kx_max, u.dtype, u.device)
    # Along x: one real matmul against [cos | -sin] / W over all rows of all channels.
    along_x = u @ to_x  # (..., H, 2 (kx+1))
    along_x = torch.complex(along_x[..., : kx_max + 1], along_x[..., kx_max + 1 :])
    # Along y on the kept columns: (N kx, H) @ (H, ky), one 2-d matmul (a batched complex matmul
    # against a broadcast matrix loops over the batch in its backward pass on CPU).
    lead = along_x.shape[:-2]
    rows = along_x.transpose(-1, -2).reshape(-1, H)
    return (rows @ to_y).reshape(*lead, kx_max + 1, 2 * ky_max + 1).transpose(-1, -2)


@_full_precision
def irfft2_modes(c: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(..., 2 ky_max + 1, kx_max + 1)`` complex -> ``(..., H, W)`` real; inverts :func:`rfft2_modes`."""
    ky_max, kx_max = (c.shape[-2] - 1) // 2, c.shape[-1] - 1
    _check_modes(H, W, ky_max, kx_max)
    _, _, from_y, from_x = _dft_matrices(H, W, ky_max, kx_max, c.real.dtype, c.device)
    lead = c.shape[:-2]
    rows = c.transpose(-1, -2).reshape(-1, 2 * ky_max + 1)  # (N kx, ky), as in rfft2_modes
    along_y = (rows @ from_y).reshape(*lead, kx_max + 1, H).transpose(-1, -2)  # (..., H, kx)
    return torch.cat([along_y.real, along_y.imag], dim=-1) @ from_x


@cached_constant
def _dft_matrices(H: int, W: int, ky_max: int, kx_max: int, dtype, device):
    """``(to_x, to_y, from_y, from_x)`` for :func:`rfft2_modes` / :func:`irfft2_modes`, built once per
    size, dtype and device (:func:`~fieldsym.models.constants.cached_constant`)."""
    cos_x, sin_x = _phases(W, torch.arange(kx_max + 1), dtype, device)  # (kx, W)
    to_x = torch.cat([cos_x, -sin_x]).T / W  # (W, 2 (kx+1))
    cos_y, sin_y = _phases(H, torch.arange(-ky_max, ky_max + 1), dtype, device)  # (ky, H)
    to_y = torch.complex(cos_y, -sin_y).T / H  # (H, ky)
    from_y = torch.complex(cos_y, sin_y)  # (ky, H)
    weight = torch.full((kx_max + 1, 1), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    from_x = torch.cat([weight * cos_x, -weight * sin_x])  # (2 (kx+1), W)
    return to_x, to_y, from_y, from_x


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
