"""``predict``: run an export on a schema-1 file and write the result as a schema-1 file.

The model card says everything the run needs: which variables make the input fields (and their kinds),
which times (the training task's input window; ``t_in`` moves it), the grid the export accepts, and
the names, kinds and units of the outputs. Reading goes through the data layer
(:class:`~fieldsym.data.dataset.FieldDataset`, so a user's file with renamed dimensions or split vector
components works as in training); writing goes through :func:`fieldsym.data.writer.write_dataset`,
atomically, with provenance attributes written with the fields:
``fieldsym_export``, ``fieldsym_export_format``, ``fieldsym_export_sha256`` (the model file's checksum,
verified when it was loaded), ``fieldsym_input``, ``fieldsym_input_sha256`` and
``fieldsym_prediction_lead_steps``.

Output time: one time per sample, the time of the last input step plus the training task's lead (in
steps of the input file's time coordinate, or of the training data's when the input has one time).
"""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import torch

from fieldsym import __version__
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.spec import DataSpec, FieldSelection, TimeSelection
from fieldsym.data.writer import FieldSpec, history_entry, write_dataset
from fieldsym.export.formats import LoadedExport, load_export
from fieldsym.export.source import ExportError, sha256_file


def predict(export: str | Path, source: str | Path, output: str | Path, *, t_in: int | None = None,
            batch_size: int = 16) -> Path:
    """Apply the export (a directory or its model file) to every sample of ``source``; write ``output``.

    ``t_in``: first input time (negative counts from the end); default the training task's.
    """
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise ExportError(f"{source}: no such input file; predict reads one schema-1 netCDF file")
    loaded = load_export(export)
    card = loaded.card
    spec, steps = _input_spec(card, t_in)
    dataset = FieldDataset(source, spec, None, in_memory=False)
    try:
        _check_grid(loaded, dataset, source)
        predictions = [loaded(dataset.read(start, min(start + batch_size, len(dataset)))[0])
                       for start in range(0, len(dataset), batch_size)]
        last_input = int(dataset.resolved.bases[0] + steps - 1)
    finally:
        dataset.close()
    prediction = torch.cat(predictions).numpy()
    return _write(output, loaded, source, dataset.grid, prediction, last_input)


def _input_spec(card: dict, t_in: int | None) -> tuple[DataSpec, int]:
    """The data spec of the inputs alone, and the number of input steps.

    ``FieldDataset`` reads pairs; the output side names the first input field again, so no output
    variable (absent from a file of inputs) is read.
    """
    times = card["task"]["times"]
    steps = times.get("n_in", 1)
    start = times.get("t_in", 0) if t_in is None else t_in
    inputs = tuple(FieldSelection(f["name"], tuple(f["variables"]), f["kind"]) for f in card["inputs"]["fields"])
    # The output time is the first input time: inside the file whenever the inputs are.
    time = TimeSelection("multi_step" if steps > 1 else "one_step", start, start, steps)
    periodic = card["task"].get("periodic_override")
    spec = DataSpec(inputs, inputs[:1], time, tuple(periodic) if periodic else None, card["task"].get("dims"))
    return spec, steps


def _check_grid(loaded: LoadedExport, dataset: FieldDataset, source: Path) -> None:
    grid = loaded.card["grid"]
    expected = (grid["periodic"]["y"], grid["periodic"]["x"])
    if tuple(dataset.grid.periodic) != expected:
        raise ExportError(f"{source}: its grid is periodic (y, x) = {dataset.grid.periodic}, the export was trained on "
                          f"{expected}; the operator's boundary handling would not match this data")
    if dataset.in_type != loaded.in_type:
        raise ExportError(f"{source}: reads as '{dataset.in_type}', the export takes '{loaded.in_type}'")
    try:
        loaded.check(torch.empty(0, loaded.in_type.num_channels, *dataset.grid.shape))
    except ValueError as error:
        raise ExportError(f"{source}: {error}") from error


def _write(output: Path, loaded: LoadedExport, source: Path, grid, prediction: np.ndarray, last_input: int) -> Path:
    card = loaded.card
    out_type = loaded.out_type
    slices = out_type.slices()
    fields = {}
    for f in card["outputs"]["fields"]:
        values = prediction[:, slices[f["name"]]]  # (sample, width, H, W)
        data = values[:, None] if f["kind"] == "vector" else values[:, :1]  # (sample, time=1, [2,] H, W)
        fields[f["name"]] = FieldSpec(data, f["kind"], f.get("units", "1"), f.get("long_name", f["name"]))
    with netCDF4.Dataset(source) as nc:
        attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
        times = np.asarray(nc.variables["time"][:], dtype=np.float64) if "time" in nc.variables else np.zeros(1)
    lead = card["task"].get("lead_steps")
    step = float(times[1] - times[0]) if times.size > 1 else (card["task"].get("time_step") or 1.0)
    time = times[min(last_input, times.size - 1)] + (1 if lead is None else lead) * step
    model_file = loaded.path
    parameters = attrs.get("fieldsym_parameters", "{}")
    # The provenance goes in with the rest, so the file is complete the moment it appears under its name
    # (write_dataset writes a temporary file beside it and renames it).
    write_dataset(
        output, fields, x=grid.axis("x").numpy(), y=grid.axis("y").numpy(), time=np.array([time]),
        periodic=(grid.periodic[1], grid.periodic[0]), pde=str(attrs.get("fieldsym_pde", "unknown")),
        parameters=json.loads(parameters) if isinstance(parameters, str) else {},
        seed=int(attrs.get("fieldsym_seed", 0)),
        title=f"{card['operator']['name']} prediction for {source.name}",
        source=f"fieldsym {__version__} predict, {card['format']} export {model_file}",
        history=history_entry(f"fieldsym predict {model_file} {source} {output}"),
        attrs={
            "fieldsym_export": str(model_file), "fieldsym_export_format": card["format"],
            "fieldsym_export_sha256": card["files"][model_file.name]["sha256"],
            "fieldsym_input": str(source), "fieldsym_input_sha256": sha256_file(source),
            "fieldsym_prediction_lead_steps": "unknown" if lead is None else int(lead),
        },
    )
    return output

