"""Analytic operators with known symmetry, on a given grid, for the Lie-derivative tests."""

import torch

from fieldsym.grid import Grid


def laplacian(grid: Grid):
    return lambda u: grid.derivative(u, "x", 2) + grid.derivative(u, "y", 2)


def divergence(grid: Grid):
    return lambda u: grid.derivative(u[:, 0:1], "x") + grid.derivative(u[:, 1:2], "y")


def gradient(grid: Grid):
    return lambda s: torch.cat([grid.derivative(s, "x"), grid.derivative(s, "y")], dim=1)


def grad_div(grid: Grid):
    div, grad = divergence(grid), gradient(grid)
    return lambda u: grad(div(u))


def curl(grid: Grid):
    return lambda u: grid.derivative(u[:, 1:2], "x") - grid.derivative(u[:, 0:1], "y")


def leray(grid: Grid):
    """Spectral projection onto divergence-free fields on the periodic box: u - k (k.u) / |k|^2."""
    H, W = grid.shape
    ky = torch.fft.fftfreq(H, d=grid.spacing[0], dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(W, d=grid.spacing[1], dtype=torch.float64)[None, :]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1

    def op(u):
        uh = torch.fft.fft2(u)
        kdotu = (kx * uh[:, 0] + ky * uh[:, 1]) / k2
        out = torch.stack([uh[:, 0] - kx * kdotu, uh[:, 1] - ky * kdotu], dim=1)
        return torch.fft.ifft2(out).real

    return op


def cubic(u):
    """|u|^2 u on a vector field."""
    return (u * u).sum(1, keepdim=True) * u


def componentwise_square(u):
    return u * u


def random_multiplier(grid: Grid, seed=0):
    """A spectral multiplier m(k) with no rotational symmetry."""
    gen = torch.Generator().manual_seed(seed)
    H, W = grid.shape
    m = torch.randn(H, W, generator=gen, dtype=torch.float64)
    return lambda u: torch.fft.ifft2(torch.fft.fft2(u) * m).real
