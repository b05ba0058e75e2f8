"""Memoised constant tensors of the models: ones that depend only on sizes, dtype and device.

A model's forward pass rebuilds such tensors on every call (the truncated DFT's phase matrices, the
invariant grid features): a dozen small ops each, which a GPU step pays in kernel launches. They are
built once per argument tuple instead, with two rules:

- outside inference mode and without autograd, so that a first call under ``torch.inference_mode`` does
  not cache an inference tensor that a later training step could not save for backward;
- not inside ``torch.compile`` / ``torch.export`` tracing, which folds the ops into constants itself.

Callers must not modify a returned tensor in place.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def cached_constant(build: Callable[..., T]) -> Callable[..., T]:
    """``build(*args)`` memoised per hashable ``args`` (sizes, tuples, ``torch.dtype``, ``torch.device``)."""
    cached = functools.lru_cache(maxsize=64)(build)

    @functools.wraps(build)
    def get(*args):
        if torch.compiler.is_compiling():
            return build(*args)
        with torch.inference_mode(False), torch.no_grad():
            return cached(*args)

    return get
