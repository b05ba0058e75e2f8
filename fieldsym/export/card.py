"""The model card: what an export computes, what it was trained on, and which symmetries it has.

Written beside every export as ``model_card.json`` (read back by :func:`fieldsym.export.load_export`
and ``fieldsym predict``) and ``model_card.md`` (for people). The equivariance errors are measured on
the exported file loaded back through its own runtime, next to the eager model's on the same inputs:
baking and exporting must not change which symmetries the operator has, and a card that only repeated
the training-time numbers could not show it.

Measured elements (only those that map the data's grid onto itself, so the error is exact to rounding,
DESIGN.md section 1): the quarter turns and reflections of D4 when the grid is square with the same
periodicity on both axes, and whole-cell shifts along periodic axes. Each error is
``||F(g.u) - g.F(u)|| / ||F(u)||`` (:func:`fieldsym.lie.equivariance_errors`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fieldsym.fields import D4_MATRICES
from fieldsym.grid import Grid
from fieldsym.groups import D4, FiniteGroup, GroupElement, shifts
from fieldsym.lie import equivariance_errors

_KIND = {"r1": "quarter turn", "r2": "half turn", "r3": "quarter turn"}


def symmetry_elements(grid: Grid) -> tuple[FiniteGroup, dict[str, str]]:
    """The lattice symmetries of ``grid`` to measure, and what each is (``"reflection"``, ``"shift"``, ...)."""
    H, W = grid.shape
    elements: list[GroupElement] = []
    kinds: dict[str, str] = {}
    if H == W and grid.periodic[0] == grid.periodic[1]:
        for g in D4:
            if g.name != "e":
                elements.append(g)
                kinds[g.name] = _KIND.get(g.name, "reflection")
    cells = []
    if grid.periodic[1]:
        cells.append((1, 0))
    if grid.periodic[0]:
        cells.append((0, 1))
    if all(grid.periodic):
        cells.append((max(1, W // 4), max(1, H // 3)))
    for g in shifts(cells):
        elements.append(g)
        kinds[g.name] = "shift"
    return FiniteGroup("grid symmetries", tuple(elements)), kinds


def measure(op: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, in_type, out_type,
            grid: Grid) -> dict[str, float]:
    """``||F(g.u) - g.F(u)|| / ||F(u)||`` for every element of :func:`symmetry_elements`."""
    group, _ = symmetry_elements(grid)
    return equivariance_errors(op, u, group, in_type, out_type, grid.periodic)


def equivariance_table(eager: dict[str, float], exported: dict[str, float], grid: Grid,
                       inputs_note: str) -> dict[str, Any]:
    _, kinds = symmetry_elements(grid)
    return {
        "definition": "||F(g.u) - g.F(u)|| / ||F(u)|| on physical fields",
        "inputs": inputs_note,
        "elements": {name: {"kind": kinds[name], "matrix": D4_MATRICES.get(name), "eager": eager[name],
                            "exported": exported[name]} for name in eager},
        "max_abs_difference": max((abs(eager[k] - exported[k]) for k in eager), default=0.0),
    }


def write_card(directory: Path, card: dict[str, Any], *, human: bool = True) -> None:
    """``model_card.json`` and (with ``human``) ``model_card.md``, each written atomically."""
    _atomic_write(directory / "model_card.json", json.dumps(card, indent=2, default=_plain) + "\n")
    if human:
        _atomic_write(directory / "model_card.md", markdown(card))


def markdown(card: dict[str, Any]) -> str:
    op, grid, data, training = card["operator"], card["grid"], card["data"], card["training"]
    lines = [
        f"# {op['name']}: {card['inputs']['field_type']} -> {card['outputs']['field_type']}",
        "",
        f"Exported by fieldsym {card['fieldsym_version']} on {card['created']} as **{card['format']}** "
        f"from `{training['checkpoint']}`.",
        "",
        "## Operator",
        "",
        f"- kind: `{op['kind']}`, options: `{json.dumps(op['options'])}`",
        f"- symmetry mode: {op['symmetry']['mode']}" + (f"; enforced group: {op['enforced_group']}"
                                                          if op["enforced_group"] else ""),
        f"- graph: {op['graph']}",
        f"- parameters: {op['parameters']}",
        "",
        "## Fields",
        "",
        "| side | field | kind | read from |",
        "|---|---|---|---|",
    ]
    for side in ("inputs", "outputs"):
        for f in card[side]["fields"]:
            lines.append(f"| {side[:-1]} | {f['name']} | {f['kind']} | {', '.join(f['variables'])} |")
    lines += [
        "",
        f"Time selection: `{json.dumps(card['task']['times'])}`.",
        "",
        "## Grid",
        "",
        f"- shape (H, W): {grid['shape'][0]} x {grid['shape'][1]}, spacing (dy, dx): {grid['spacing']}, "
        f"origin (y0, x0): {grid['origin']}",
        f"- periodic: y {grid['periodic']['y']}, x {grid['periodic']['x']}",
        "- batch size: any; grid size: " + (f"any from {grid['min_shape'][0]} x {grid['min_shape'][1]}"
                                             if grid["dynamic"] else "fixed"),
        "",
        "## Normalisation (baked into the graph: it takes and returns physical fields)",
        "",
        "| side | field type | shift | scale |",
        "|---|---|---|---|",
    ]
    for side in ("inputs", "outputs"):
        n = card["normalization"][side]
        lines.append(f"| {side} | {n['field_type']} | {_numbers(n['shift'])} | {_numbers(n['scale'])} |")
    lines += ["", "## Training data", ""]
    lines += [f"- {key}: {json.dumps(value) if isinstance(value, dict) else value}" for key, value in data.items()
              if value is not None and key != "history"]
    lines += [
        "",
        "## Training",
        "",
        f"- epochs: {training['epoch']}, steps: {training['step']}, seed: {training['seed']}",
        f"- best validation relative L2: {_number(training['valid_rel_l2'])} (epoch {training['best_epoch']})",
        f"- test error: {_test_error(training['test_error'])}",
        "",
        "## Equivariance",
        "",
        f"{card['equivariance']['definition']}, on {card['equivariance']['inputs']}.",
        "",
        "| element | kind | eager | exported |",
        "|---|---|---|---|",
    ]
    for name, row in card["equivariance"]["elements"].items():
        lines.append(f"| {name} | {row['kind']} | {row['eager']:.3g} | {row['exported']:.3g} |")
    check = card["check"]
    lines += [
        "",
        f"Exported against eager outputs: max relative difference {check['max_relative_difference']:.3g} "
        f"over batch sizes {check['batch_sizes']}.",
        "",
        "## Files",
        "",
        "| file | bytes | SHA-256 |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {f['bytes']} | `{f['sha256']}` |" for name, f in card["files"].items()]
    lines += ["", "## Use", "", *card["usage"], ""]
    return "\n".join(lines)


_TEST_ERRORS = {"test_rel_l2": "relative L2", "turned_test_rel_l2": "relative L2 on the quarter-turned test set"}


def _test_error(errors: dict[str, float] | None) -> str:
    if not errors:
        return "not in the run"
    return ", ".join(f"{_TEST_ERRORS.get(key, key)} {_number(value)}" for key, value in errors.items())


def _numbers(values) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _plain(value: Any) -> Any:
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"model card: cannot write a {type(value).__name__} as JSON")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
