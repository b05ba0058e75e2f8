"""Training checkpoints: plain data only, written atomically, read with ``torch.load(weights_only=True)``.

Why plain data: ``weights_only=True`` is the only safe way to open a checkpoint someone else wrote, and
it refuses arbitrary pickled objects. So a checkpoint holds tensors, ints, floats, bools, strings, None,
lists, tuples and dicts, nothing else: model and optimiser state dicts (neuralop's ``_metadata`` entry of
Python objects is dropped, DESIGN.md section 5), the scheduler's state, the RNG states as tensors (the
python ``random`` state converted to a tensor and ints), the config as a plain dict, normalisation
statistics and the metrics so far. :func:`save_checkpoint` checks this before writing, so a bad entry
fails at save time with its key path instead of at load time on another machine.

Why atomic: a run can be killed at any moment, and ``resume`` must find either the previous
``last.pt`` or the new one, never half a file. The state is written to a temporary file in the same
directory (same file system), flushed to disk, and moved into place with ``os.replace``.

Layout (``FORMAT_VERSION`` 1)::

    format_version, epoch (completed epochs), step (optimiser steps), model, optimizer, scheduler,
    penalty (a stateful penalty's state, e.g. tuned strengths; {} if none), rng {torch, cuda, numpy,
    python}, best {epoch, valid}, config, normalization, metrics [{name: float}]
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEYS = ("format_version", "epoch", "step", "model", "optimizer", "scheduler", "penalty", "rng", "best", "config",
        "normalization", "metrics")
_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and what to do."""


RUN_CHECKPOINTS = ("best.pt", "last.pt")  # what a run directory holds, in the order a command prefers them


def run_checkpoint(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the run directory's ``best.pt`` (or ``last.pt``); the one
    lookup of ``fieldsym export``, ``discover`` and ``predict``'s sources. An experiment folder given
    instead of a run directory is answered with the run directories it holds."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist: give a run directory (holding best.pt or last.pt) or a "
                              "checkpoint file")
    for name in RUN_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    runs = experiment_runs(path)
    if runs:
        shown = ", ".join(map(str, runs[:3])) + (f" ({len(runs)} in all)" if len(runs) > 3 else "")
        raise CheckpointError(f"{path} is an experiment folder, not a run directory; give one of the run "
                              f"directories it holds (runs/<operator>/n<size>-s<seed> for `fieldsym run`), "
                              f"e.g. {shown}")
    raise CheckpointError(f"{path}: no {' or '.join(RUN_CHECKPOINTS)} in this run directory; give a run directory "
                          "written by `fieldsym train` or `fieldsym run`, or the path of a checkpoint")


def experiment_runs(folder: str | Path) -> list[Path]:
    """The run directories (those with a checkpoint) in the experiment folder ``folder``, sorted: the
    runner's ``runs/<operator>/n<size>-s<seed>/`` and the ``<operator>/`` that ``fieldsym train`` writes
    by default. Empty for anything else, a run directory included."""
    folder = Path(folder)
    return sorted({checkpoint.parent for pattern in ("runs/*/*", "*") for name in RUN_CHECKPOINTS
                   for checkpoint in folder.glob(f"{pattern}/{name}")})


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a mismatch named: the model rebuilt from the checkpoint's
    config no longer has the checkpoint's layers when an operator's defaults changed since it was written."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: its weights do not fit the {type(model).__name__} built from its config "
            f"({str(error).splitlines()[0]} ...). An operator default may have changed since the run was "
            "written: runs of kind steerable made before the gated nonlinearity and the finer radial profiles "
            "became the defaults used 'activation: norm' and 'n_radial: 3', which their stored config does not "
            "name. Delete the run directory to train it again, or run those options under a new experiment.name"
        ) from error


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as a plain dict of tensors, without neuralop's ``_metadata`` entry."""
    return {k: v for k, v in model.state_dict().items() if k != "_metadata"}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (keys :data:`KEYS`) to ``path`` atomically; raise if it holds non-plain data."""
    path = Path(path)
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint state lacks {', '.join(missing)}")
    _check_plain(state, "checkpoint")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a truncated, corrupt or foreign file raises
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointError(f"{path}: cannot be read ({_first_line(error)}); {_DAMAGED}") from error
        raise CheckpointError(
            f"{path}: holds Python objects that weights_only loading refuses ({_first_line(error)}); "
            "fieldsym checkpoints are plain data, so this file was not written by fieldsym or was modified. "
            "Load only checkpoints you trust; re-train or use another checkpoint"
        ) from error
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: cannot be read ({_first_line(error)}); {_DAMAGED}") from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a fieldsym checkpoint of format {FORMAT_VERSION} (found {found!r}); it was "
            "written by another program or version"
        )
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; {_DAMAGED}")
    return state


_DAMAGED = (
    "the file is truncated or corrupt (a copy or a write that was interrupted). Use the other checkpoint "
    "of the run (best.pt or last.pt) or start again without resume"
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; keys must be str or int")
            _check_plain(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise CheckpointError(
            f"{where} is a {type(obj).__name__}; a checkpoint holds only tensors, numbers, strings, None, "
            "lists and dicts (convert it, e.g. with .tolist() or a state dict)"
        )


# -- random number generators ---------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The global RNG states of torch (CPU and every CUDA device), numpy and python ``random``, as plain data."""
    version, mt_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNG states from :func:`capture_rng`'s output."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            logger.warning("checkpoint has RNG states of %d CUDA devices, this machine has %d; restoring the "
                           "first %d", len(cuda), torch.cuda.device_count(), min(len(cuda), torch.cuda.device_count()))
        for device, rng in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng.cpu(), device)
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
