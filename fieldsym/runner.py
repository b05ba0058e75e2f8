"""The experiment runner: one config -> every run it describes -> one results table and a report.

``fieldsym run CONFIG`` expands the config into runs (operator x training size x seed), makes the data
once, trains each run, evaluates it and writes, under ``<experiment.out>/<experiment.name>/``::

    config.yaml                 the config as run (overrides applied)
    runs/<operator>/n<size>-s<seed>/   checkpoints, metrics.csv, TensorBoard, result.json, examples.npz
    results.csv, results.nc     one row per run (xarray: dims operator x train_size x seed)
    report.md, report.html, figures/   (:mod:`fieldsym.report`)

What each run is scored on (test split of the dataset, the weights with the best validation error):

- ``test_rel_l2``: mean relative L2 error, as in training (per channel, averaged);
- ``turned_test_rel_l2``: the same on the quarter-turned test set ``(g.x, g.y)``, ``g`` the
  counter-clockwise quarter turn ``r1`` (:data:`fieldsym.groups.C4`; vectors turn their components).
  An operator that is C4-equivariant scores the same on both; one that learned a fixed orientation
  collapses. Only on square grids with the same periodicity on both axes, else NaN;
- ``equiv_<generator>``: ``||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||)`` for each of
  ``experiment.evaluation_generators`` (rotations windowed on periodic grids, DESIGN.md section 1), and
  ``equiv_<element>``: ``||F(g.u) - g.F(u)|| / ||F(u)||`` for each element of
  ``experiment.evaluation_group`` but the identity, both on the first ``training.eval_samples`` test
  inputs (:class:`fieldsym.train.Probe`);
- discovery (:func:`fieldsym.discovery.discover`) over the same generators as candidates on the same
  inputs: singular values, the discretisation floor and the named null directions (``discovered``).

Why it is built this way:

- *Resumable by construction.* A run is finished when its directory holds ``result.json``, written
  atomically after everything else; the runner skips finished runs, resumes a half-finished one from its
  ``last.pt`` (:func:`fieldsym.train.train` with ``resume``), so an interrupted experiment is continued by
  running the same command again. A finished or half-finished run made with a *different* config is an
  error naming the keys that differ: silently reusing stale results, or silently discarding them, would
  both be worse. Operator options are compared written out in full (every default of the constructor,
  :func:`fieldsym.config.resolve_operators`, the form a run stores): writing out a default is no difference.
  A stored run keeps rebuilding its own model after a default changes; running again a config that leaves
  that default implicit is then a difference (it would train another model) and is refused, naming it.
  Execution settings (device, loader workers, compilation: :data:`fieldsym.config.EXECUTION_SETTINGS`)
  are no difference.
- *Evaluation lives with the run.* ``result.json`` and ``examples.npz`` (one test sample and its quarter
  turn, with the prediction) hold everything the table and the report need, so neither reloads a model.
- Every output file is written to a temporary name and moved into place (``os.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldsym.config import (ConfigError, ExperimentConfig, build_data_spec, build_model, build_symmetry,
                             config_differences, dataset_path, describe_differences, resolve_operators)
from fieldsym.data.dataset import FieldDataset
from fieldsym.discovery import discover
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import C4, algebra, finite_group
from fieldsym.train import Probe, evaluate, load_operator, resolve_device, train

logger = logging.getLogger(__name__)

RESULT = "result.json"
EXAMPLES = "examples.npz"
QUARTER_TURN = C4.element("r1")


class RunnerError(RuntimeError):
    """An experiment that cannot go on as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One cell of the sweep. ``train_size``: ``None`` means the whole training split (``samples`` of them)."""

    operator: str
    train_size: int | None
    seed: int
    samples: int

    @property
    def key(self) -> str:
        return f"{self.operator}/n{self.samples}-s{self.seed}"


def experiment_dir(config: ExperimentConfig) -> Path:
    return config.experiment.out / config.experiment.name


def plan(config: ExperimentConfig, train_samples: int) -> list[Run]:
    """The runs of ``config``: for each training size, each seed, each operator (so a partial experiment
    already compares every operator). ``train_samples``: size of the training split."""
    sizes = config.experiment.train_sizes or [None]
    too_big = [n for n in sizes if n is not None and n > train_samples]
    if too_big:
        raise ConfigError(f"experiment.train_sizes: {too_big} exceed the {train_samples} samples of the training "
                          "split; lower them, or generate more samples (dataset.generate.samples)")
    return [Run(op.name, n, seed, train_samples if n is None else n)
            for n in sizes for seed in config.experiment.seeds for op in config.operators]


def run_experiment(config: ExperimentConfig, *, report: bool = True) -> Path:
    """Run every run of ``config`` that is not finished, write the results table and (``report``) the
    report; return the experiment directory."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    one_file = config.dataset.path is None or not Path(config.dataset.path).is_dir()
    if one_file and config.dataset.split.test <= 0:
        raise ConfigError("dataset.split.test: the runner scores every run on the test split, and test is 0; "
                          "set it above 0, e.g. dataset.split.test=0.2")
    out = experiment_dir(config)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", config.to_yaml())
    started = time.perf_counter()
    path = dataset_path(config, progress=_interactive())
    train_set, test_set = _split(config, path, "train", in_memory=False), _split(config, path, "test")
    runs = plan(config, len(train_set.samples))
    _preflight(config, test_set)
    logger.info("experiment %s: %d runs (%d operators x %d training sizes x %d seeds) on %s; %d test samples",
                config.experiment.name, len(runs), len(config.operators), len(config.experiment.train_sizes or [0]),
                len(config.experiment.seeds), path, len(test_set.samples))
    rows = []
    with logging_redirect_tqdm():
        for i, run in enumerate(tqdm(runs, desc=config.experiment.name, unit="run", disable=not _interactive())):
            logger.info("run %d/%d: %s", i + 1, len(runs), run.key)
            rows.append(run_one(config, run, out, test_set))
            write_results(rows, out)  # the table so far: a long experiment can be read while it runs
    logger.info("experiment %s: %d runs done in %.0f s; results in %s", config.experiment.name, len(runs),
                time.perf_counter() - started, out / "results.csv")
    if report:
        from fieldsym.report import write_report

        write_report(out)
    return out


def _preflight(config: ExperimentConfig, data: FieldDataset) -> None:
    """Build every operator and its symmetry mode once for the data's field types and grid, so that a value
    only the data can judge (hidden irreps that cannot reach an output field, a group on a non-square grid)
    stops the experiment before its first run trains, not when that operator's turn comes hours later."""
    for op in config.operators:
        build_model(op, data.in_type, data.out_type, data.grid)
        build_symmetry(op, data.in_type, data.out_type, data.grid)


def run_one(config: ExperimentConfig, run: Run, out: Path, test_set: FieldDataset) -> dict[str, Any]:
    """Train (or resume, or skip) one run and evaluate it; return its row of the results table."""
    run_cfg = config.for_run(run.operator, run.train_size, run.seed)
    run_dir = out / "runs" / run.key
    done = run_dir / RESULT
    data = (test_set.in_type, test_set.out_type, test_set.grid)  # what the operator options resolve for
    if done.exists():
        result = json.loads(done.read_text())
        _check_same_config(run_dir, result["config"], run_cfg, *data)
        logger.info("%s: finished earlier, skipped (test rel L2 %.4g)", run.key, result["row"]["test_rel_l2"])
        return result["row"]
    if (run_dir / "last.pt").exists():
        from fieldsym.checkpoint import load_checkpoint

        _check_same_config(run_dir, load_checkpoint(run_dir / "last.pt")["config"], run_cfg, *data)
    trained = train(run_cfg, run_dir, resume=True)
    device, _ = resolve_device(run_cfg.training)
    operator = load_operator(run_dir / "best.pt", test_set.grid, device)
    started = time.perf_counter()
    row, spectrum, examples = evaluate_run(run_cfg, operator, test_set, device)
    op = run_cfg.operators[0]
    row = {"experiment": config.experiment.name, "operator": run.operator, "kind": op.kind,
           "symmetry": op.symmetry.mode, "train_size": run.samples, "seed": run.seed,
           "parameters": _count_parameters(operator.model), "epochs": trained.epochs,
           "best_epoch": trained.best_epoch, "valid_rel_l2": trained.best_valid, **row,
           "train_seconds": sum(m["seconds"] for m in trained.metrics),
           "eval_seconds": time.perf_counter() - started, "run_dir": str(run_dir.relative_to(out))}
    save_npz(run_dir / EXAMPLES, examples)
    write_text(done, json.dumps({"config": trained.config, "row": row, "spectrum": spectrum,
                                 "in_type": str(test_set.in_type), "out_type": str(test_set.out_type)}, indent=1))
    logger.info("%s: test rel L2 %.4g, quarter-turned %.4g, discovered: %s", run.key, row["test_rel_l2"],
                row["turned_test_rel_l2"], row["discovered"])
    return row


def evaluate_run(config: ExperimentConfig, operator: torch.nn.Module, test_set: FieldDataset,
                 device: torch.device) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """``(row, spectrum, examples)`` of a trained operator (physical units in and out) on the test split."""
    in_type, out_type, grid = test_set.in_type, test_set.out_type, test_set.grid
    batch = config.training.batch_size
    turnable = grid.shape[0] == grid.shape[1] and grid.periodic[0] == grid.periodic[1]
    row: dict[str, Any] = {"test_rel_l2": evaluate(operator, _batches(test_set, batch), device)}
    row["turned_test_rel_l2"] = (evaluate(operator, _turned(_batches(test_set, batch), in_type, out_type,
                                                             grid.periodic), device) if turnable else math.nan)
    inputs, targets = test_set.read(0, min(config.training.eval_samples, len(test_set)))
    generators = algebra(config.experiment.evaluation_generators, in_type)
    group = finite_group(config.experiment.evaluation_group) if config.experiment.evaluation_group else None
    equiv = Probe(inputs, in_type, out_type, grid, generators, group).measure(operator)
    row.update({f"equiv_{key.removeprefix('equiv/')}": value for key, value in equiv.items()})
    found = discover(operator, inputs.to(device), in_type, out_type, grid, candidates=generators, discrete=False,
                     targets=targets.to(device))
    row.update({"discovered": "; ".join(found.symmetries) or "none", "discovery_gap": found.gap,
                "discovery_threshold": found.threshold,
                "singular_values": " ".join(f"{s:.4g}" for s in found.singular_values)})
    spectrum = {"candidates": found.candidates, "singular_values": found.singular_values,
                "singular_std": found.singular_std, "floor": found.floor, "threshold": found.threshold}
    x, y = test_set.read(0, 1)
    xt, yt = (QUARTER_TURN.act(v, t, grid.periodic) for v, t in ((x, in_type), (y, out_type)))
    with torch.no_grad():
        predictions = [operator(v.to(device)).cpu() for v in (x, xt)]
    examples = {"x": x[0], "y": y[0], "prediction": predictions[0][0],
                "x_turned": xt[0], "y_turned": yt[0], "prediction_turned": predictions[1][0]}
    return row, spectrum, {k: v.numpy().astype(np.float32) for k, v in examples.items()}


# -- the results table ---------------------------------------------------------------------------------------


def write_results(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``results.csv`` (one row per run) and ``results.nc`` (every numeric column on dims
    ``operator x train_size x seed``, the discovery spectra on an extra ``singular`` dim)."""
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    table = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    table.writeheader()
    table.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_text(out / "results.csv", text.getvalue())
    dataset = results_dataset(rows, out)
    nc = out / "results.nc"
    with replacing(nc) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4")
    return out / "results.csv", nc


def results_dataset(rows: list[dict[str, Any]], out: Path):
    """The rows as an ``xarray.Dataset`` on ``operator x train_size x seed`` (missing cells are NaN / "")."""
    import xarray as xr

    operators = list(dict.fromkeys(r["operator"] for r in rows))
    sizes = sorted({int(r["train_size"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    shape = (len(operators), len(sizes), len(seeds))
    index = {(r["operator"], int(r["train_size"]), int(r["seed"])): r for r in rows}
    cells = [(i, j, k, index.get((o, n, s))) for i, o in enumerate(operators) for j, n in enumerate(sizes)
             for k, s in enumerate(seeds)]
    per_operator = ("kind", "symmetry", "parameters")
    skip = {"experiment", "operator", "train_size", "seed", "run_dir", "singular_values", *per_operator}
    data: dict[str, Any] = {}
    for column in dict.fromkeys(key for row in rows for key in row if key not in skip):
        numeric = all(isinstance(r.get(column), (int, float)) for r in rows if column in r)
        array = np.full(shape, np.nan) if numeric else np.full(shape, "", dtype=object)
        for i, j, k, row in cells:
            if row is not None and column in row:
                array[i, j, k] = row[column]
        data[column] = (("operator", "train_size", "seed"), array)
    first = {r["operator"]: r for r in reversed(rows)}
    for column in per_operator:
        data[column] = (("operator",), np.array([first[o][column] for o in operators],
                                                dtype=object if column != "parameters" else np.int64))
    spectra = _spectra(out, operators, sizes, seeds, index)
    data.update(spectra)
    attrs = {"title": f"fieldsym results: {rows[0]['experiment']}" if rows else "fieldsym results",
             "source": f"fieldsym {_version()} runner", "Conventions": "CF-1.10",
             "turned_test": "quarter turn r1 (counter-clockwise) of inputs and outputs, vectors turn components",
             "equivariance": "equiv_<generator>: ||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||); "
                             "equiv_<element>: ||F(g.u) - g.F(u)|| / ||F(u)||"}
    config = out / "config.yaml"
    if config.exists():
        attrs["fieldsym_config"] = config.read_text()
    return xr.Dataset(data, coords={"operator": operators, "train_size": sizes, "seed": seeds}, attrs=attrs)


def _spectra(out: Path, operators, sizes, seeds, index) -> dict[str, Any]:
    """Discovery singular values, their bootstrap std and the floor from each run's ``result.json``."""
    spectra = {}
    for (o, n, s), row in index.items():
        path = out / row["run_dir"] / RESULT
        if path.exists():
            spectra[(o, n, s)] = json.loads(path.read_text())["spectrum"]
    if not spectra:
        return {}
    k = max(len(v["singular_values"]) for v in spectra.values())
    data = {}
    for name in ("singular_values", "singular_std", "floor"):
        array = np.full((len(operators), len(sizes), len(seeds), k), np.nan)
        for (o, n, s), spectrum in spectra.items():
            values = spectrum[name]
            array[operators.index(o), sizes.index(n), seeds.index(s), : len(values)] = values
        data["discovery_floor" if name == "floor" else name] = (("operator", "train_size", "seed", "singular"), array)
    return data


# -- files -------------------------------------------------------------------------------------------------


class replacing:
    """``with replacing(path) as tmp:`` write ``tmp``; on success it replaces ``path`` (same directory, so
    ``os.replace`` is atomic), on failure it is removed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return path


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with replacing(path) as tmp:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
    return path


# -- helpers -----------------------------------------------------------------------------------------------


def _split(config: ExperimentConfig, path: Path, name: str, in_memory: bool | None = None) -> FieldDataset:
    split = config.dataset.split
    fractions = (1 - split.valid - split.test, split.valid, split.test)
    dataset = FieldDataset(path, build_data_spec(config), name, fractions=fractions, seed=split.seed,
                           in_memory=in_memory)
    if len(dataset) == 0:
        raise ConfigError(f"dataset.split: the {name} split of {path} is empty ({dataset.info.num_samples} samples, "
                          f"fractions train/valid/test {fractions[0]:g}/{split.valid:g}/{split.test:g}); "
                          "change the fractions or generate more samples")
    return dataset


def _batches(dataset: FieldDataset, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(dataset), size):
        yield dataset.read(start, min(start + size, len(dataset)))


def _turned(batches, in_type, out_type, periodic) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in batches:
        yield QUARTER_TURN.act(x, in_type, periodic), QUARTER_TURN.act(y, out_type, periodic)


def _check_same_config(run_dir: Path, stored: dict, run_cfg: ExperimentConfig, in_type: FieldType,
                       out_type: FieldType, grid: Grid) -> None:
    """A run directory belongs to one config: refuse to mix results of two. ``in_type``, ``out_type``,
    ``grid``: the run's data, which the operator options are resolved for."""
    # Re-read the stored config through today's schema first, so a field added since (with its default)
    # is not a difference, then write out the operator options on both sides, so a default written out on
    # one side only is not one either; what the schema or the constructor no longer accepts is compared as
    # it is.
    try:
        stored_cfg = ExperimentConfig.from_dict(stored, f"{run_dir} (stored config)")
        stored = stored_cfg.to_dict()
        stored = resolve_operators(stored_cfg, in_type, out_type, grid).to_dict()
    except ValueError:
        pass
    new = resolve_operators(run_cfg, in_type, out_type, grid).to_dict()
    differences = config_differences(stored, new)
    if differences:
        raise RunnerError(
            f"{run_dir} holds a run of a different config ({describe_differences(differences)}); to keep it, run "
            f"with its settings; to start over, delete {run_dir}; to keep both, choose another experiment.name")


def _count_parameters(model: torch.nn.Module) -> int:
    from fieldsym.models import count_parameters

    return count_parameters(model)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _version() -> str:
    from fieldsym import __version__

    return __version__
