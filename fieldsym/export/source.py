"""What an export starts from: a training run's checkpoint, turned back into the trained operator.

A checkpoint (:mod:`fieldsym.checkpoint`) is plain data read with ``weights_only=True``: the weights,
the run's config as a dict, the normalisation statistics (with the field types as strings) and the
metrics. That is enough to rebuild the operator (:func:`fieldsym.train.load_operator`). The rest of what a model card needs lives in the data file when it is still there:
the grid, the solver's provenance attributes, the units of the outputs and a few validation inputs to
measure equivariance on. When it is not (a run copied to another machine), the grid falls back to
the config and the inputs to smooth random fields at the data's scale, and the card says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fieldsym.checkpoint import RUN_CHECKPOINTS, CheckpointError, load_checkpoint, run_checkpoint
from fieldsym.config import ConfigError, ExperimentConfig, OperatorConfig, build_data_spec, generated_path
from fieldsym.data.normalization import FieldNormalizer
from fieldsym.data.spec import DataSpec, FieldSelection
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.runner import RESULT
from fieldsym.train import load_operator

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export that cannot be made or loaded; the message names the file and what to do."""


@dataclasses.dataclass
class Run:
    """A trained operator and what is known about it.

    ``model``: the operator on normalised fields, float32, eval mode. ``grid``: the data's grid.
    ``data``: the training data's provenance (file, SHA-256, solver, parameters, seed when known).
    ``output_attrs``: units and long name per output field. ``timing``: ``lead_steps`` (time steps from
    the last input to the output) and ``time_step`` (of the data), ``None`` where unknown.
    ``inputs``: ``(B, C_in, H, W)`` physical fields to measure equivariance on, described by ``inputs_note``.
    """

    checkpoint: Path
    config: ExperimentConfig
    operator: OperatorConfig
    model: nn.Module
    in_norm: FieldNormalizer
    out_norm: FieldNormalizer
    grid: Grid
    spec: DataSpec
    data: dict[str, Any]
    output_attrs: dict[str, dict[str, str]]
    timing: dict[str, Any]
    inputs: torch.Tensor
    inputs_note: str
    training: dict[str, Any]

    @property
    def in_type(self) -> FieldType:
        return self.in_norm.field_type

    @property
    def out_type(self) -> FieldType:
        return self.out_norm.field_type


def find_checkpoint(source: str | Path) -> Path:
    """``source`` itself if it is a file, else ``best.pt`` (or ``last.pt``) of the run directory
    (:func:`fieldsym.checkpoint.run_checkpoint`, its error as an :class:`ExportError`)."""
    try:
        return run_checkpoint(source)
    except CheckpointError as error:
        raise ExportError(str(error)) from error


def load_run(source: str | Path, data: str | Path | None = None, samples: int = 4) -> Run:
    """Rebuild the operator of a run directory or checkpoint; ``data`` overrides the config's data file."""
    checkpoint = find_checkpoint(source)
    state = load_checkpoint(checkpoint)
    if not state["config"]:
        raise ExportError(f"{checkpoint}: holds no config (written by fit() without one); export needs a "
                          "checkpoint of `fieldsym train`, which stores the run's config")
    try:
        config = ExperimentConfig.from_dict(state["config"], f"{checkpoint} (config)")
    except ConfigError as error:
        raise ExportError(f"{error}\nthe stored config no longer validates; export with the fieldsym "
                          "version that trained the run") from error
    operator = config.operators[0]
    in_norm = FieldNormalizer.from_state_dict(state["normalization"]["inputs"])
    out_norm = FieldNormalizer.from_state_dict(state["normalization"]["outputs"])
    data_file = _data_file(config, data)
    spec = _typed_spec(build_data_spec(config), in_norm.field_type)
    grid, attrs, output_attrs, timing = _describe_data(config, data_file, spec, checkpoint)
    try:
        model = load_operator(checkpoint, grid).model.float().eval()
    except (ConfigError, RuntimeError) as error:
        raise ExportError(f"{checkpoint}: its weights do not fit the operator its config describes "
                          f"({str(error).splitlines()[0]}); the checkpoint was written by another fieldsym "
                          "version or modified") from error
    inputs, note = _probe_inputs(config, spec, data_file, in_norm, grid, samples)
    return Run(checkpoint, config, operator, model, in_norm, out_norm, grid, spec, attrs,
               output_attrs, timing, inputs, note, _training_summary(state, config, checkpoint))


def sha256_file(path: str | Path, chunk: int = 2**24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- data -------------------------------------------------------------------------------------------------


def _data_file(config: ExperimentConfig, data: str | Path | None) -> Path | None:
    """The run's data file if it exists: ``data``, ``dataset.path``, or the cached generated file."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise ExportError(f"{path}: no such data file (given as the run's data)")
        return path
    path = config.dataset.path if config.dataset.path is not None else generated_path(config)
    if path.exists():
        return path
    logger.warning("the run's data file %s is not here: the model card takes the grid from the config and "
                   "measures equivariance on random fields (pass the data file to use it)", path)
    return None


def _typed_spec(spec: DataSpec, in_type: FieldType) -> DataSpec:
    """``spec`` with every input kind filled in from the trained input type (``w`` or ``w_t0``)."""
    names = set(in_type.names)

    def kind(sel: FieldSelection) -> str:
        return in_type.field(sel.name if sel.name in names else f"{sel.name}_t0").kind

    inputs = tuple(FieldSelection(s.name, s.variables, kind(s)) for s in spec.inputs)
    return dataclasses.replace(spec, inputs=inputs)


def _describe_data(config: ExperimentConfig, path: Path | None, spec: DataSpec, checkpoint: Path):
    """``(grid, provenance, output attributes, timing)`` from the file, or from the config without it."""
    import netCDF4

    from fieldsym.data.schema import DatasetError, inspect_file
    from fieldsym.data.spec import resolve

    if path is None:
        return (_grid_from_config(config, checkpoint), _provenance_from_config(config), {},
                {"lead_steps": _lead_from_config(config), "time_step": None})
    file = path if path.is_file() else path / "train.nc"
    try:
        info = inspect_file(file, spec.variables, dims=spec.dims, periodic=spec.periodic, check_finite=False)
        resolved = resolve(spec, info)
    except DatasetError as error:
        raise ExportError(f"{error}\n(reading the run's data file for the model card; pass another copy of "
                          "it, or move it away to export without it)") from error
    with netCDF4.Dataset(file) as nc:
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        outputs = {}
        for sel in spec.outputs:
            var = nc.variables[sel.variables[0]]
            outputs[sel.name] = {"units": str(getattr(var, "units", "1")),
                                 "long_name": str(getattr(var, "long_name", sel.name))}
        times = nc.variables["time"][:].tolist() if "time" in nc.variables else []
    parameters = attrs.get("fieldsym_parameters")
    provenance = {
        "file": str(path), "sha256": sha256_file(file), "title": attrs.get("title"),
        "source": attrs.get("source"), "pde": attrs.get("fieldsym_pde"),
        "parameters": json.loads(parameters) if isinstance(parameters, str) else parameters,
        "seed": int(attrs["fieldsym_seed"]) if "fieldsym_seed" in attrs else None,
        "history": attrs.get("history"),
    }
    timing = {"lead_steps": int(resolved.out_offset - resolved.in_offsets[-1]),
              "time_step": float(times[1] - times[0]) if len(times) > 1 else None}
    return info.grid, provenance, outputs, timing


def _lead_from_config(config: ExperimentConfig) -> int | None:
    """Time steps from the last input to the output, when the config fixes them without the file."""
    times = config.task.times
    if times.mode == "rollout" or (times.mode == "multi_step" and times.t_out is None):
        return 1
    if times.t_out is None or (times.t_in < 0) != (times.t_out < 0):
        return None  # counted from the end of a file that is not here
    return times.t_out - (times.t_in + getattr(times, "n_in", 1) - 1)


def _grid_from_config(config: ExperimentConfig, checkpoint: Path) -> Grid:
    gen = config.dataset.generate
    periodic = config.dataset.periodic or config.operators[0].options.get("periodic")
    if gen is None or periodic is None:
        raise ExportError(
            f"{checkpoint}: the run's data file is not here and its config does not give the grid "
            f"({'no dataset.periodic' if gen is not None else 'a user file'}); pass the data file "
            "(--data PATH, or data= in Python), or a file on the same grid"
        )
    return Grid.regular(gen.resolution, tuple(bool(p) for p in periodic))


def _provenance_from_config(config: ExperimentConfig) -> dict[str, Any]:
    gen = config.dataset.generate
    if gen is None:
        return {"file": str(config.dataset.path), "sha256": None, "note": "data file not available at export"}
    return {"file": None, "sha256": None, "source": f"data_scripts/{gen.solver}.py", "pde": gen.solver,
            "parameters": dict(gen.params, samples=gen.samples, resolution=gen.resolution), "seed": gen.seed,
            "note": "generated file not available at export; provenance from the config"}


def _probe_inputs(config, spec, path, in_norm, grid, samples) -> tuple[torch.Tensor, str]:
    """A few validation inputs from the file, or smooth random fields at the data's scale."""
    if path is not None:
        from fieldsym.data.dataset import FieldDataset

        split = config.dataset.split
        fractions = (1 - split.valid - split.test, split.valid, split.test)
        name = "valid" if split.valid > 0 or not path.is_file() else "train"
        dataset = FieldDataset(path, spec, name, fractions=fractions, seed=split.seed, in_memory=False,
                               check_finite=False)
        try:
            n = min(samples, len(dataset))
            return dataset.read(0, n)[0], f"the first {n} items of the {name} split of {path}"
        finally:
            dataset.close()
    generator = torch.Generator().manual_seed(0)
    H, W = grid.shape
    noise = torch.randn(samples, in_norm.field_type.num_channels, H, W, generator=generator, dtype=torch.float64)
    ky = torch.fft.fftfreq(H, 1 / H)[:, None]
    kx = torch.fft.fftfreq(W, 1 / W)[None, :]
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-(ky**2 + kx**2) / 16)).real
    smooth = smooth / smooth.std(dim=(-2, -1), keepdim=True)
    u = smooth * in_norm.scale[:, None, None] + in_norm.shift[:, None, None]
    return u.float(), f"{samples} smooth random fields at the data's scale (seed 0; the data file was not available)"


def _training_summary(state: dict[str, Any], config: ExperimentConfig, checkpoint: Path) -> dict[str, Any]:
    metrics = state["metrics"]
    best_epoch = state["best"]["epoch"]
    row = next((r for r in metrics if r.get("epoch") == best_epoch), metrics[-1] if metrics else {})
    test = {k: v for k, v in row.items() if k.startswith("test")} or _runner_test_error(checkpoint, state)
    return {
        "epoch": state["epoch"], "step": state["step"], "best_epoch": best_epoch,
        "valid_rel_l2": state["best"]["valid"] if metrics else None,
        "test_error": test or None,
        "seed": config.training.seed, "config_fingerprint": config.fingerprint(),
    }


def _runner_test_error(checkpoint: Path, state: dict[str, Any]) -> dict[str, float] | None:
    """``test_rel_l2`` and ``turned_test_rel_l2`` (the quarter-turned test set) from the ``result.json``
    that ``fieldsym run`` writes beside a run's checkpoints (:mod:`fieldsym.runner`), or ``None``.

    The runner scores ``best.pt``: its numbers belong to no other checkpoint (``last.pt``), nor to a
    ``best.pt`` trained again after the scoring (another best epoch). NaN (the turned error of a grid
    with no quarter turn) is left out.
    """
    path = checkpoint.parent / RESULT
    if checkpoint.name != RUN_CHECKPOINTS[0] or not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())["row"]
        scored_epoch = row["best_epoch"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as error:
        logger.warning("%s: not a result of `fieldsym run` (%s: %s); the model card leaves its test error out",
                       path, type(error).__name__, error)
        return None
    if scored_epoch != state["best"]["epoch"]:
        logger.warning("%s: scores the weights of epoch %s, but %s holds those of epoch %s (trained again since); "
                       "the model card leaves its test error out",
                       path, scored_epoch, checkpoint, state["best"]["epoch"])
        return None
    test = {key: float(row[key]) for key in ("test_rel_l2", "turned_test_rel_l2")
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])}
    return test or None
