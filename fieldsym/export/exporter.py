"""``export_run``: a training run in, an export directory with its model card out.

The steps, in order, each of which can fail with an :class:`ExportError` that names the file:

1. rebuild the operator from the checkpoint (:mod:`fieldsym.export.source`);
2. for a graph format, bake it into a plain module with the normalisation inside
   (:mod:`fieldsym.export.bake`) and export it with a dynamic batch (and grid, on request);
   for ``safetensors``, save the operator's own weights and the recipe that rebuilds it;
3. write a first card with the files' SHA-256, load the export back through that card, as a user
   would, and compare it with the eager operator at batch sizes 1, 3 and the probe batch: a difference
   above ``1e-4`` relative is an export bug, so nothing is left behind that claims otherwise;
4. measure the equivariance errors of the loaded export and of the eager operator on the same inputs
   and write the final card (:mod:`fieldsym.export.card`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fieldsym import __version__
from fieldsym.export.bake import BakeError, PhysicalOperator, bake, min_grid
from fieldsym.export.card import equivariance_table, measure, write_card
from fieldsym.export.formats import (CARD, FORMATS, INPUT_NAME, MODEL_FILES, RECIPE, dynamic_shapes, load_export,
                                     read_card, write_onnx, write_pt2, write_safetensors)
from fieldsym.export.layers import LatticeMove
from fieldsym.export.source import ExportError, Run, find_checkpoint, load_run, sha256_file
from fieldsym.models import GroupAveraged, GroupFNO, ResidualPathway, SteerableFNO, count_parameters
from fieldsym.models.build import CENTRED_KINDS

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # relative difference between the loaded export and the eager operator, float32


def export_run(source: str | Path, format: str, out: str | Path | None = None, *, dynamic_shapes: bool = False,
               data: str | Path | None = None) -> Path:
    """Export the operator of a run directory (or checkpoint) ``source``; returns the export directory.

    ``format``: ``pt2``, ``onnx`` or ``safetensors``. ``out``: the directory (default
    ``<run>/export/<format>``). ``dynamic_shapes``: also let the grid size vary (the batch always may);
    needs a grid that resolves every kept mode. ``data``: the run's data file when it has moved.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: expected one of {', '.join(FORMATS)}")
    checkpoint = find_checkpoint(source)
    out = Path(out) if out is not None else checkpoint.parent / "export" / format
    _check_out(out, format)
    run = load_run(checkpoint, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Everything is built and checked in a staging directory that replaces ``out`` only once complete:
    # a failed check leaves no loadable export behind, and a previous good export survives it.
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _export_into(run, format, stage, dynamic_shapes)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _replace_dir(stage, out)
    logger.info("exported %s as %s to %s", run.checkpoint, format, out)
    return out


def _export_into(run: Run, format: str, out: Path, dynamic_shapes: bool) -> None:
    eager = PhysicalOperator(run.model, run.in_norm, run.out_norm).eval()
    if format == "safetensors":
        write_safetensors(eager, _recipe(run), out)
        names, graph, grid_min = [MODEL_FILES[format], RECIPE], "fieldsym operator rebuilt from its weights", None
    else:
        grid_min, graph = _write_graph(run, format, out, dynamic_shapes)
        names = [MODEL_FILES[format]]
    card = _card(run, format, out, names, grid_min, graph)
    write_card(out, card, human=False)  # the checksums, for loading it back; completed below

    loaded = load_export(out)
    card["check"] = _compare(loaded, eager, run.inputs, out)
    with torch.no_grad():
        eager_errors = measure(eager, run.inputs, run.in_type, run.out_type, run.grid)
    exported_errors = measure(loaded, run.inputs, run.in_type, run.out_type, run.grid)
    card["equivariance"] = equivariance_table(eager_errors, exported_errors, run.grid, run.inputs_note)
    write_card(out, card)


def _replace_dir(stage: Path, out: Path) -> None:
    """Move the finished ``stage`` to ``out``, replacing an earlier export there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_out(out: Path, format: str) -> None:
    if (out / CARD).is_file():
        _, card = read_card(out)
        if card["format"] != format:
            raise ExportError(f"{out}: holds an export in format {card['format']}; choose another output directory "
                              f"(--out) for the {format} export")


def _write_graph(run: Run, format: str, out: Path, dynamic: bool) -> tuple[tuple[int, int] | None, str]:
    """Bake and export; returns the smallest grid of a dynamic-grid export (else ``None``) and a description."""
    H, W = run.grid.shape
    try:
        baked = bake(run.model, None if dynamic else (H, W))
    except BakeError as error:
        raise ExportError(f"{run.checkpoint}: {error}; the safetensors format stores any operator") from error
    if dynamic and any(isinstance(m, LatticeMove) and m.swap for m in baked.modules()):
        raise ExportError(
            f"{run.checkpoint}: this GroupAveraged operator averages over quarter turns or diagonal reflections, "
            "which swap the grid's axes and so need H = W, but a dynamic grid lets H and W vary apart; export "
            "without --dynamic-shapes"
        )
    grid_min = min_grid(baked) if dynamic else None
    if grid_min is not None and (H < grid_min[0] or W < grid_min[1]):
        raise ExportError(
            f"{run.checkpoint}: the operator keeps wave numbers that its {H}x{W} grid does not resolve (a "
            f"dynamic grid needs at least {grid_min[0]}x{grid_min[1]}); export without --dynamic-shapes"
        )
    operator = PhysicalOperator(baked, run.in_norm, run.out_norm).eval()
    example = torch.cat([run.inputs, run.inputs])[:2]  # batch 2: torch.export specialises sizes 0 and 1
    shapes = dynamic_shapes(True, grid_min)
    write = write_pt2 if format == "pt2" else write_onnx
    try:
        write(operator, example, shapes, out / MODEL_FILES[format])
    except RuntimeError as error:  # torch.export's and the ONNX exporter's errors derive from it
        hint = ("export without --dynamic-shapes: this operator fixes the grid size (domain padding does)"
                if dynamic else "please report it with the run's config")
        if "Constraints violated" in str(error) and _torch_older_than(TESTED_TORCH):
            hint = (f"torch {torch.__version__} cannot prove the dynamic batch size of the spectral layers "
                    f"(torch 2.11 fails like this; export is tested with torch {'.'.join(map(str, TESTED_TORCH))}"
                    "): upgrade torch, or use --format safetensors, which any torch loads")
        raise ExportError(f"{run.checkpoint}: {format} export failed ({type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0]}); {hint}") from error
    return grid_min, f"{_graph_description(run.model)}, real-arithmetic spectral convolutions, normalisation inside"


def _graph_description(model: nn.Module) -> str:
    """What baking did to ``model``, for the card."""
    if isinstance(model, GroupAveraged):
        return (f"{_graph_description(model.op)}; averaged over {len(model.elements)} lattice symmetries "
                "(flips, transposes and rolls)")
    if isinstance(model, ResidualPathway):
        return (f"equivariant part: {_graph_description(model.equivariant)}; plus {float(model.gate):.3g} x "
                f"free part: {_graph_description(model.free)}")
    if isinstance(model, GroupFNO):
        return f"plain weights: the {model.group.name}-orbit-tied kernels and intertwiners materialised"
    if isinstance(model, SteerableFNO):
        return (f"plain weights: the {model.group}-steerable kernels sampled on the kept wave numbers "
                f"(|k| <= {model.n_modes // 2}) and the equivariant channel maps materialised")
    return "plain weights: dense spectral kernels"


TESTED_TORCH = (2, 13)  # pt2/ONNX export is tested with this torch; 2.11's torch.export fails (experiments/README.md, GPU)


def _torch_older_than(version: tuple[int, int]) -> bool:
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return (major, minor) < version


def _compare(loaded, eager, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """Relative difference ``||export(u) - eager(u)|| / ||eager(u)||`` at batch sizes 1, 3 and the probe's."""
    u = torch.cat([inputs, inputs, inputs])
    worst, sizes = 0.0, sorted({1, 3, inputs.shape[0]})
    with torch.no_grad():
        for b in sizes:
            reference = eager(u[:b])
            worst = max(worst, float((loaded(u[:b]) - reference).norm() / reference.norm()))
    if not worst <= TOLERANCE:
        raise ExportError(f"{out}: the loaded export differs from the eager operator by {worst:.3g} (relative), "
                          f"above {TOLERANCE:g}; this is an export bug: please report it with the run's config")
    return {"max_relative_difference": worst, "batch_sizes": sizes}


def _recipe(run: Run) -> dict[str, Any]:
    """What :func:`fieldsym.export.load_safetensors` needs to rebuild the operator."""
    options = dict(run.operator.options)
    if run.operator.kind in CENTRED_KINDS:  # as config.build_model does
        options.setdefault("periodic", list(run.grid.periodic))
    return {"format": "fieldsym-safetensors", "version": 1, "kind": run.operator.kind,
            "in_type": str(run.in_type), "out_type": str(run.out_type), "options": options}


def _card(run: Run, format: str, out: Path, names: list[str], grid_min, graph: str) -> dict[str, Any]:
    op = run.operator
    grid = run.grid
    group = {"gfno": op.options.get("group", "C4"), "steerable": op.options.get("group", "SO2"),
             "averaged": op.options.get("group_elements", "D4")}.get(op.kind)
    if op.kind == "residual":  # only the equivariant part is enforced; the gated free part may break it
        group = None
    return {
        "fieldsym_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": format,
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in names},
        "operator": {"name": op.name, "kind": op.kind, "options": op.options, "symmetry": op.symmetry.model_dump(),
                     "enforced_group": group, "graph": graph, "parameters": count_parameters(run.model)},
        "inputs": _side(run.in_type, run.spec.inputs, {}),
        "outputs": _side(run.out_type, run.spec.outputs, run.output_attrs),
        "task": {"times": run.config.task.times.model_dump(), **run.timing,
                 "periodic_override": list(run.spec.periodic) if run.spec.periodic else None,
                 "dims": dict(run.spec.dims) if run.spec.dims else None},
        "grid": {"shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin),
                 "periodic": {"y": grid.periodic[0], "x": grid.periodic[1]}, "dynamic": grid_min is not None,
                 "min_shape": list(grid_min) if grid_min is not None else list(grid.shape)},
        "normalization": {"inputs": _stats(run.in_norm), "outputs": _stats(run.out_norm)},
        "data": run.data,
        "training": {"checkpoint": str(run.checkpoint), "checkpoint_sha256": sha256_file(run.checkpoint),
                     **run.training},
        "usage": _usage(format),
        "config": run.config.to_dict(),
    }


def _side(field_type, selections, attrs: dict[str, dict[str, str]]) -> dict[str, Any]:
    fields = [{"name": sel.name, "kind": sel.kind or field_type.field(sel.name).kind,
               "variables": list(sel.variables), **attrs.get(sel.name, {})} for sel in selections]
    return {"field_type": str(field_type), "channels": field_type.num_channels, "fields": fields}


def _stats(norm) -> dict[str, Any]:
    return {"field_type": str(norm.field_type), "shift": norm.shift.tolist(), "scale": norm.scale.tolist()}


def _usage(format: str) -> list[str]:
    common = ["- fieldsym: `fieldsym predict <this directory> INPUT.nc OUTPUT.nc`, or "
              "`fieldsym.export.load_export(<this directory>)(u)` (checks the SHA-256 above)"]
    if format == "pt2":
        return common + ["- PyTorch: `torch.export.load('model.pt2').module()(u)` with `u` of shape "
                         "`(batch, C_in, H, W)`, float32, physical units"]
    if format == "onnx":
        return common + [f"- onnxruntime: `InferenceSession('model.onnx').run(None, {{'{INPUT_NAME}': u}})` with `u` "
                         "a float32 array `(batch, C_in, H, W)` in physical units"]
    return ["- fieldsym: `fieldsym.export.load_safetensors(<this directory>)` rebuilds the operator (trainable, "
            "normalisation included); export it to pt2 or onnx from its run"]
