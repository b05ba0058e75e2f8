"""Small schema-1 files the tests train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldsym.data.writer import FieldSpec, write_dataset


def low_pass_file(path: Path, samples: int, size: int, source: str) -> Path:
    """``u`` at time 0: smooth random fields; at time 1: the same fields low-pass filtered (a linear
    operator an FNO learns in a few steps). Periodic ``size`` x ``size`` grid."""
    rng = np.random.default_rng(0)
    k = np.fft.fftfreq(size, 1 / size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    u0 = np.fft.ifft2(np.fft.fft2(rng.standard_normal((samples, size, size))) * np.exp(-k2 / 8)).real
    u1 = np.fft.ifft2(np.fft.fft2(u0) * np.exp(-k2 / 4)).real
    u = np.stack([u0, u1], axis=1).astype(np.float32)
    x = np.arange(size) / size
    return write_dataset(path, {"u": FieldSpec(u, "scalar", "1", "u")}, x=x, y=x, time=np.arange(2.0),
                         periodic=True, pde="low-pass filter", parameters={}, seed=0, title="test data",
                         source=source)
