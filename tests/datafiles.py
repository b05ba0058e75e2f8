"""Small schema-1 files the tests train on."""

from __future__ import annotations

from pathlib import Path

from fieldsym.testing import low_pass_dataset


def low_pass_file(path: Path, samples: int, size: int, source: str) -> Path:
    """``u`` at time 0: smooth random fields; at time 1: the same fields low-pass filtered (a linear
    operator an FNO learns in a few steps). Periodic ``size`` x ``size`` grid."""
    return low_pass_dataset(path, samples, size, "scalar", "u", 8.0, source)
