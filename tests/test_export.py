"""Export: for FieldFNO, GroupFNO (C4, D4), SteerableFNO (SO2) and GroupAveraged (C4 over a FieldFNO) in
every format, the loaded export matches the eager operator at any batch size, its model card's
equivariance errors (measured on the file) match the eager operator's, a truncated or modified file is
refused with a clear error, and ``predict`` writes a valid schema-1 file. Models are tiny (16x16, width
8) with random weights in a real checkpoint. Baked operators are also checked in float64: equal to the
eager operator to rounding and exactly equivariant on the lattice."""

from __future__ import annotations

import io
import json
import logging
import shutil
import textwrap
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch

from fieldsym.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fieldsym.cli import main
from fieldsym.config import load_config
from fieldsym.discover_run import discover_run
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.schema import inspect_file
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset
from fieldsym.export import BakeError, ExportError, bake, export_run, load_export, load_safetensors, predict
from fieldsym.export.layers import LatticeMove
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import D4, FiniteGroup, GroupElement, shifts
from fieldsym.lie import equivariance_errors
from fieldsym.models import build_operator
from fieldsym.testing import assert_equivariant, smooth_random_field
from fieldsym.train import load_operator, train

N, SAMPLES = 16, 6
IN, OUT = FieldType.parse("w:pseudoscalar"), FieldType.parse("v:vector")
OPERATORS = {
    "fno": "{kind: fno, options: {n_modes: [6, 6], hidden_channels: 8, n_layers: 2, positional_embedding: false}}",
    "gfno_c4": "{kind: gfno, options: {group: C4, n_modes: 6, hidden_channels: 4, n_layers: 2}}",
    "gfno_d4": "{kind: gfno, options: {group: D4, n_modes: 6, hidden_channels: 2, n_layers: 2, "
               "positional_embedding: true}}",
    "steerable": "{kind: steerable, options: {group: SO2, n_modes: 6, n_layers: 2, hidden_irreps: '4x0 + 2x1 + 1x2'}}",
    "averaged": "{kind: averaged, options: {inner: fno, group_elements: C4, n_modes: [6, 6], hidden_channels: 8, "
                "n_layers: 2, positional_embedding: false}}",
}
FORMATS = ("pt2", "onnx", "safetensors")


def smooth_fields(rng, *shape) -> np.ndarray:
    k = np.fft.fftfreq(N, 1 / N)
    filt = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 10)
    return np.fft.ifft2(np.fft.fft2(rng.standard_normal((*shape, N, N))) * filt).real.astype(np.float32)


def write_inputs(path: Path, seed: int, with_outputs: bool = True) -> Path:
    """``w`` (pseudoscalar) at times 0, 1 and, with outputs, ``v`` (vector); periodic 16x16."""
    rng = np.random.default_rng(seed)
    fields = {"w": FieldSpec(3 * smooth_fields(rng, SAMPLES, 2), "pseudoscalar", "1/s", "vorticity")}
    if with_outputs:
        fields["v"] = FieldSpec(0.5 * smooth_fields(rng, SAMPLES, 2, 2), "vector", "m/s", "velocity")
    x = np.arange(N) / N
    return write_dataset(path, fields, x=x, y=x, time=np.array([0.0, 0.5]), periodic=True, pde="test_pde",
                         parameters={"nu": 1e-3}, seed=seed, title="export test data", source="tests/test_export.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_inputs(root / "data.nc", seed=0)
    return root


def make_run(root: Path, name: str, test_error: float | None = 0.45) -> Path:
    """A real `fieldsym train` run of one epoch (a single optimiser step), plus ``test_error`` in its metrics."""
    text = textwrap.dedent(f"""\
        dataset: {{path: {root / 'data.nc'}, split: {{valid: 0.5, test: 0.0}}}}
        task: {{inputs: [w], outputs: [v], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators: [{{name: {name}, {OPERATORS[name][1:-1]}}}]
        training: {{epochs: 1, batch_size: 4, device: cpu, eval_samples: 1}}
        experiment: {{name: test, out: {root / 'runs'}, evaluation_group: null, evaluation_generators: [Tx]}}
        """)
    (root / f"{name}.yaml").write_text(text)
    run = root / "runs" / name
    train(load_config_text(root / f"{name}.yaml", text), run)
    if test_error is not None:
        state = load_checkpoint(run / "best.pt")
        state["metrics"][-1]["test_rel_l2"] = test_error
        save_checkpoint(run / "best.pt", state)
    return run


def load_config_text(path: Path, text: str):
    path.write_text(text)
    return load_config(path)


@pytest.fixture(scope="module")
def runs(workdir) -> dict[str, Path]:
    return {name: make_run(workdir, name) for name in OPERATORS}


@pytest.fixture(scope="module")
def exports(runs) -> dict[tuple[str, str], Path]:
    return {(name, fmt): export_run(run, fmt) for name, run in runs.items() for fmt in FORMATS}


def eager_operator(run: Path) -> torch.nn.Module:
    return load_operator(run / "best.pt", Grid.regular(N))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", OPERATORS)
def test_export_matches_eager_at_any_batch_and_keeps_equivariance(name, fmt, runs, exports):
    directory = exports[name, fmt]
    loaded = load_export(directory)
    eager = eager_operator(runs[name])
    u = torch.from_numpy(3 * smooth_fields(np.random.default_rng(5), 3, 1))
    with torch.no_grad():
        for b in (1, 3):  # exported at batch 2
            assert relative(loaded(u[:b]), eager(u[:b])) < 1e-5

    card = json.loads((directory / "model_card.json").read_text())
    assert card["inputs"]["field_type"] == "w:pseudoscalar" and card["outputs"]["field_type"] == "v:vector"
    assert card["grid"] == {"shape": [N, N], "spacing": [1 / N, 1 / N], "origin": [0.0, 0.0],
                            "periodic": {"y": True, "x": True}, "dynamic": False, "min_shape": [N, N]}
    norms = load_checkpoint(runs[name] / "best.pt")["normalization"]
    assert card["normalization"]["inputs"]["scale"] == norms["inputs"]["scale"].tolist()
    assert card["normalization"]["outputs"]["shift"] == [0.0, 0.0]
    assert card["data"]["sha256"] and card["data"]["pde"] == "test_pde" and card["data"]["seed"] == 0
    assert card["training"]["test_error"] == {"test_rel_l2": 0.45}
    assert card["outputs"]["fields"][0]["units"] == "m/s"
    # The card's errors were measured on the loaded file: they must be the eager operator's, which we
    # recompute here on the same inputs (the first items of the validation split).
    assert card["equivariance"]["inputs"].startswith("the first 3 items of the valid split")
    spec = DataSpec(("w",), ("v",), TimeSelection("one_step", 0, 1))
    probe = FieldDataset(runs[name].parent.parent / "data.nc", spec, "valid", fractions=(0.5, 0.5, 0.0)).read(0, 3)[0]
    elements = [g for g in D4 if g.name != "e"] + list(shifts([(1, 0), (0, 1), (4, 5)]))
    rows = card["equivariance"]["elements"]
    assert set(rows) == {g.name for g in elements}
    with torch.no_grad():
        eager_errors = equivariance_errors(eager, probe, FiniteGroup("measured", tuple(elements)), IN, OUT)
    for g in elements:
        assert abs(rows[g.name]["exported"] - eager_errors[g.name]) < 1e-5
        assert abs(rows[g.name]["eager"] - eager_errors[g.name]) < 1e-6
    # No embedding: shifts are exact; the D4 embedding breaks them. Each group gives its elements.
    moves = {"shift(1, 0)", "shift(0, 1)", "shift(4, 5)"}
    turns = moves | {"r1", "r2", "r3"}
    exact = {"fno": moves, "gfno_c4": turns, "gfno_d4": set(rows) - moves, "steerable": turns, "averaged": turns}[name]
    assert all(rows[g]["exported"] < 1e-5 for g in exact)
    assert all(rows[g]["exported"] > 1e-3 for g in set(rows) - exact)


@pytest.mark.parametrize("name", ["gfno_d4", "steerable"])
def test_constrained_graph_holds_plain_weights(name, exports):
    program = torch.export.load(exports[name, "pt2"] / "model.pt2")
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("index" in t or "gather" in t or "fft" in t for t in targets)  # no orbit gather, no FFT
    assert not any(p.is_complex() for p in program.state_dict.values())
    card = json.loads((exports[name, "pt2"] / "model_card.json").read_text())
    assert card["operator"]["enforced_group"] == {"gfno_d4": "D4", "steerable": "SO2"}[name]


def test_dynamic_grid(runs, tmp_path):
    directory = export_run(runs["gfno_d4"], "pt2", tmp_path / "dynamic", dynamic_shapes=True)
    loaded, eager = load_export(directory), eager_operator(runs["gfno_d4"])
    assert loaded.card["grid"]["dynamic"] and loaded.card["grid"]["min_shape"] == [7, 7]
    for n in (16, 21):
        u = torch.randn(2, 1, n, n)
        with torch.no_grad():
            assert relative(loaded(u), eager(u)) < 1e-5
    with pytest.raises(ValueError, match="at least 7x7"):
        loaded(torch.randn(1, 1, 6, 6))


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_steerable_dynamic_grid(fmt, runs, tmp_path):
    """``W(k)`` is sampled at integer wave numbers (cycles per domain), the same on every grid: one export
    serves every grid that resolves the disc ``|k| <= 3``, odd and non-square ones included."""
    directory = export_run(runs["steerable"], fmt, tmp_path / "dynamic", dynamic_shapes=True)
    loaded, eager = load_export(directory), eager_operator(runs["steerable"])
    assert loaded.card["grid"]["dynamic"] and loaded.card["grid"]["min_shape"] == [7, 7]
    for shape in ((16, 16), (21, 21), (7, 7), (12, 20)):
        u = torch.randn(2, 1, *shape)
        with torch.no_grad():
            assert relative(loaded(u), eager(u)) < 1e-5
    with pytest.raises(ValueError, match="at least 7x7"):
        loaded(torch.randn(1, 1, 6, 6))


def test_dynamic_grid_is_refused_for_averages_over_quarter_turns(runs, tmp_path):
    with pytest.raises(ExportError, match=r"swap the grid's axes and so need H = W.*export without --dynamic-shapes"):
        export_run(runs["averaged"], "pt2", tmp_path / "dynamic", dynamic_shapes=True)
    assert not (tmp_path / "dynamic").exists()


@pytest.mark.parametrize("name, kind", [("gfno_d4", "GroupFNO"), ("steerable", "SteerableFNO"),
                                        ("averaged", "GroupAveraged")])
def test_safetensors_rebuilds_the_constrained_operator(name, kind, runs, exports):
    rebuilt = load_safetensors(exports[name, "safetensors"])
    eager = eager_operator(runs[name])
    assert type(rebuilt.model).__name__ == kind
    for (key, a), b in zip(rebuilt.model.state_dict().items(), eager.model.state_dict().values()):
        assert torch.equal(a, b), key
    u = torch.randn(2, 1, N, N)
    with torch.no_grad():
        assert torch.equal(rebuilt(u), eager(u))


BAKED = {
    "steerable_so2": ("steerable", {"group": "SO2", "n_modes": 6, "n_layers": 2, "hidden_irreps": "4x0 + 2x1 + 1x2",
                                    "activation": "norm"},
                      "C4"),
    "steerable_o2_embedded": ("steerable", {"group": "O2", "n_modes": 6, "n_layers": 3, "positional_embedding": True,
                                            "hidden_irreps": "3x0 + 2x0- + 2x1 + 1x2", "activation": "norm"}, "D4"),
    "steerable_o2_gated": ("steerable", {"group": "O2", "n_modes": 6, "n_layers": 2, "activation": "gate",
                                         "hidden_irreps": "2x0 + 1x0- + 2x1 + 1x2"}, "D4"),
    "averaged_gfno": ("averaged", {"inner": "gfno", "group_elements": "D4", "group": "C4", "n_modes": 6,
                                   "hidden_channels": 2, "n_layers": 2}, "D4"),
    "averaged_steerable": ("averaged", {"inner": "steerable", "group_elements": "C4", "group": "SO2", "n_modes": 6,
                                        "n_layers": 1, "hidden_irreps": "2x0 + 1x1"}, "C4"),
    # The gated grid coordinates break every symmetry once the gate is open: compared with eager only.
    "gfno_grid_embedding": ("gfno", {"group": "C4", "n_modes": 6, "hidden_channels": 2, "n_layers": 2,
                                     "grid_embedding": True}, None),
    "residual": ("residual", {"equivariant": {"kind": "gfno", "group": "C4", "n_modes": 6, "hidden_channels": 2,
                                              "n_layers": 2},
                              "free": {"kind": "fno", "n_modes": [6, 6], "hidden_channels": 4, "n_layers": 2}}, None),
}


@pytest.mark.parametrize("periodic", [(True, True), (False, False)])
@pytest.mark.parametrize("size", [16, 17])
@pytest.mark.parametrize("name", BAKED)
def test_baked_operator_is_the_eager_one_in_float64(name, size, periodic):
    """Baked and eager agree to rounding in float64, and the baked operator keeps the exact lattice
    equivariance of the eager one (quarter turns for SO2 and C4, all of D4 for O2 and D4)."""
    kind, options, lattice = BAKED[name]
    torch.manual_seed(0)
    eager = build_operator(kind, IN, OUT, periodic=periodic, **options).double()
    with torch.no_grad():
        for p in eager.parameters():  # trained-looking weights: gates and biases away from their zero start
            p.add_(0.3 * torch.randn_like(p))
    baked = bake(eager, None, torch.float64)
    grid = Grid.regular(size, periodic=periodic)
    u = smooth_random_field(IN, grid, batch=3, dtype=torch.float64)
    with torch.no_grad():
        assert relative(baked(u), eager(u)) < 1e-12
    if lattice is not None:
        assert max(assert_equivariant(baked, IN, OUT, lattice, u=u, grid=grid).values()) < 1e-12


@pytest.mark.parametrize("periodic", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("shape", [(6, 6), (7, 7), (6, 9)])
def test_lattice_move_is_the_group_action(shape, periodic):
    """:class:`LatticeMove` (flips, a transpose, rolls) moves exactly the values of ``GroupElement.act``."""
    field_type = FieldType.parse("w:pseudoscalar, v:vector")
    u = torch.randn(2, 3, *shape)
    square = shape[0] == shape[1] and periodic[0] == periodic[1]
    elements = [g for g in D4 if square or g.A[0][0] != 0]
    cells = [(dx, dy) for dx, dy in ((1, 0), (0, 2), (3, 1)) if (periodic[1] or not dx) and (periodic[0] or not dy)]
    elements += [GroupElement(f"{g.name}+{c}", g.A, c) for g in elements for c in cells]
    for g in elements:
        assert torch.equal(LatticeMove(g, field_type, periodic)(u), g.act(u, field_type, periodic)), g.name
        assert torch.equal(LatticeMove(g.inverse(), field_type, periodic)(g.act(u, field_type, periodic)), u), g.name


def test_unsupported_operators_are_refused_with_a_bake_error():
    with pytest.raises(BakeError, match="cannot export a Conv2d: export knows FieldFNO"):
        bake(torch.nn.Conv2d(1, 2, 1), (N, N))


def damaged_copy(exports, fmt: str, tmp_path: Path, damage) -> Path:
    directory = shutil.copytree(exports["fno", fmt], tmp_path / fmt)
    path = directory / f"model.{fmt}"
    data = bytearray(path.read_bytes())
    path.write_bytes(damage(data))
    return directory


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_or_flipped_file_is_refused(fmt, exports, tmp_path):
    for how, damage in (("truncated", lambda d: bytes(d[: len(d) // 2])),
                        ("flipped", lambda d: bytes(d[:100] + bytes(b ^ 0xFF for b in d[100:108]) + d[108:]))):
        directory = damaged_copy(exports, fmt, tmp_path / how, damage)
        with pytest.raises(ExportError, match=r"model\.\w+: its SHA-256 is .* truncated, damaged or modified"):
            load_export(directory)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_file_with_a_matching_card_still_gives_a_clear_error(fmt, exports, tmp_path):
    directory = damaged_copy(exports, fmt, tmp_path, lambda d: bytes(d[: len(d) // 3]))
    rewrite_checksum(directory, f"model.{fmt}")
    with pytest.raises(ExportError, match=rf"model\.{fmt}: .*re-export it"):
        load_export(directory)


def rewrite_checksum(directory: Path, name: str) -> None:
    """What someone who edits a file and its card does: the checksum then matches."""
    import hashlib

    card = json.loads((directory / "model_card.json").read_text())
    card["files"][name]["sha256"] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "model_card.json").write_text(json.dumps(card))


class Payload:
    """Stands for an object a crafted archive would make ``torch.load(weights_only=False)`` build."""


def test_pt2_with_pickled_objects_is_refused_before_torch_export_load(exports, tmp_path):
    directory = shutil.copytree(exports["fno", "pt2"], tmp_path / "pt2")
    path = directory / "model.pt2"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    sample = next(name for name in members if name.endswith(".pt"))
    buffer = io.BytesIO()
    torch.save({"inputs": Payload()}, buffer)
    members[sample] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    rewrite_checksum(directory, "model.pt2")
    with pytest.raises(ExportError, match="weights_only loading refuses"):
        load_export(directory)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_predict_writes_a_schema_1_file_with_provenance(fmt, exports, workdir, tmp_path):
    source = write_inputs(tmp_path / "inputs.nc", seed=3, with_outputs=False)
    directory = exports["gfno_d4", fmt]
    out = predict(directory / f"model.{fmt}", source, tmp_path / "out.nc")
    info = inspect_file(out, ["v"])
    assert info.num_samples == SAMPLES and info.grid.shape == (N, N) and info.grid.periodic == (True, True)
    assert info.variable("v").kind == "vector"
    card = json.loads((directory / "model_card.json").read_text())
    with netCDF4.Dataset(out) as nc:
        assert nc.fieldsym_schema_version == "1" and nc.fieldsym_pde == "test_pde"
        assert nc.fieldsym_export_sha256 == card["files"][f"model.{fmt}"]["sha256"]
        assert nc.fieldsym_input == str(source) and nc.fieldsym_export_format == fmt
        assert float(nc.variables["time"][0]) == 0.5  # t_in 0 plus the task's lead of one step of 0.5
        assert nc.variables["v"].units == "m/s"
        v = torch.from_numpy(np.asarray(nc.variables["v"][:, 0]))
    with netCDF4.Dataset(source) as nc:
        w = torch.from_numpy(np.asarray(nc.variables["w"][:, :1]))
    assert relative(v, load_export(directory)(w)) < 1e-6


def test_cli_export_and_predict(runs, exports, tmp_path, capsys):
    out = tmp_path / "st"
    assert main(["export", str(runs["fno"] / "best.pt"), "--format", "safetensors", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "operator.json", "model_card.json",
                                              "model_card.md"}
    assert "| r1 | quarter turn |" in (out / "model_card.md").read_text()
    source = write_inputs(tmp_path / "inputs.nc", seed=4, with_outputs=False)
    assert main(["predict", str(exports["fno", "onnx"]), str(source), str(tmp_path / "out.nc")]) == 0
    assert inspect_file(tmp_path / "out.nc", ["v"]).num_samples == SAMPLES
    assert main(["export", str(tmp_path / "nowhere"), "--format", "pt2"]) == 1
    assert main(["predict", str(out), str(tmp_path / "missing.nc"), str(tmp_path / "x.nc")]) == 1


def test_a_moved_data_file_is_asked_for_and_can_be_given(tmp_path):
    write_inputs(tmp_path / "data.nc", seed=0)
    run = make_run(tmp_path, "fno")
    moved = (tmp_path / "data.nc").rename(tmp_path / "moved.nc")
    with pytest.raises(ExportError, match="--data PATH"):
        export_run(run, "safetensors")
    card = load_export(export_run(run, "safetensors", data=moved)).card
    assert card["data"]["file"] == str(moved) and card["data"]["pde"] == "test_pde"


def test_old_torch_export_failure_names_the_torch_version(runs, tmp_path, monkeypatch):
    """torch 2.11's torch.export cannot prove the dynamic batch of the spectral layers (seen on the lent
    GPU machine); the error must say so and name the ways out, and leave nothing behind."""
    import fieldsym.export.exporter as exporter

    def old_torch_export(*args, **kwargs):
        raise RuntimeError("Constraints violated (batch)! For more information, run with TORCH_LOGS=\"+dynamic\".")

    monkeypatch.setattr(exporter, "write_pt2", old_torch_export)
    monkeypatch.setattr(exporter.torch, "__version__", "2.11.0+cu130")
    out = tmp_path / "old"
    with pytest.raises(ExportError, match=r"torch 2\.11\.0\+cu130 cannot prove the dynamic batch .*upgrade torch, "
                                          r"or use --format safetensors"):
        export_run(runs["fno"], "pt2", out)
    assert not out.exists() or not any(out.iterdir())


# -- what a new user meets: a run of `fieldsym run`, its experiment folder, the command's output ------------


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment folder as `fieldsym run` leaves it: a real run in ``runs/fno/n3-s0`` with its
    ``result.json``; the test error is there only, not in the training metrics (as the runner does)."""
    root = tmp_path_factory.mktemp("experiment")
    write_inputs(root / "data.nc", seed=0)
    trained = make_run(root, "fno", test_error=None)
    run = root / "quickstart" / "runs" / "fno" / "n3-s0"
    run.parent.mkdir(parents=True)
    trained.rename(run)
    write_result(run, test_rel_l2=0.31, turned_test_rel_l2=0.62)
    return root / "quickstart"


def write_result(run: Path, epoch_shift: int = 0, **errors) -> None:
    """The ``result.json`` of :func:`fieldsym.runner.run_one`, with the fields the card reads."""
    best = load_checkpoint(run / "best.pt")["best"]
    row = {"best_epoch": best["epoch"] + epoch_shift, "valid_rel_l2": best["valid"], **errors}
    (run / "result.json").write_text(json.dumps({"config": {}, "row": row}, indent=1))


def test_card_takes_the_test_errors_of_a_runner_run_from_its_result(experiment, tmp_path, caplog):
    run = experiment / "runs" / "fno" / "n3-s0"
    out = export_run(run, "safetensors", tmp_path / "st")
    assert load_export(out).card["training"]["test_error"] == {"test_rel_l2": 0.31, "turned_test_rel_l2": 0.62}
    assert ("- test error: relative L2 0.31, relative L2 on the quarter-turned test set 0.62"
            in (out / "model_card.md").read_text())
    # No quarter turn on the grid (NaN): the turned error is left out, the test error stays.
    copy = shutil.copytree(run, tmp_path / "nan")
    write_result(copy, test_rel_l2=0.31, turned_test_rel_l2=float("nan"))
    assert load_export(export_run(copy, "safetensors")).card["training"]["test_error"] == {"test_rel_l2": 0.31}
    # A result that scored other weights (the run was trained again since) is not the checkpoint's.
    write_result(copy, epoch_shift=1, test_rel_l2=0.31)
    out = export_run(copy, "safetensors")
    assert load_export(out).card["training"]["test_error"] is None
    assert "- test error: not in the run" in (out / "model_card.md").read_text()
    assert "trained again since" in caplog.text


def test_onnx_export_keeps_the_exporters_info_logs_out(experiment, tmp_path, caplog):
    """The ONNX exporter's passes log each rewrite at INFO; the CLI shows INFO, so they would be ~60 lines."""
    caplog.set_level(logging.INFO)
    export_run(experiment / "runs" / "fno" / "n3-s0", "onnx", tmp_path / "onnx")
    exporter = [r.name for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript", "torch.onnx"))]
    assert exporter == [] and any(r.name == "fieldsym.export.exporter" for r in caplog.records)
    restored = ("onnx_ir", "onnxscript", "torch.onnx._internal.exporter._registration")
    assert {logging.getLogger(name).level for name in restored} == {logging.NOTSET}


def test_predict_logs_its_output_under_the_final_name(experiment, tmp_path, caplog):
    export = export_run(experiment / "runs" / "fno" / "n3-s0", "safetensors", tmp_path / "st")
    source = write_inputs(tmp_path / "inputs.nc", seed=4, with_outputs=False)
    caplog.clear()
    caplog.set_level(logging.INFO)
    out = predict(export, source, tmp_path / "out.nc")
    wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert wrote == [f"wrote {out} ({SAMPLES} samples, fields ['v'])"]
    with netCDF4.Dataset(out) as nc:
        assert nc.fieldsym_input_sha256 and nc.fieldsym_export_format == "safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.nc", "out.nc", "st"]  # no temporary left


def test_an_experiment_folder_is_answered_with_its_run_directories(experiment, tmp_path, caplog):
    run = str(experiment / "runs" / "fno" / "n3-s0")
    with pytest.raises(ExportError, match="is an experiment folder, not a run directory") as error:
        export_run(experiment, "onnx")
    assert f"e.g. {run}" in str(error.value)
    with pytest.raises(CheckpointError, match="is an experiment folder, not a run directory") as error:
        discover_run(experiment)
    assert f"e.g. {run}" in str(error.value)
    assert main(["export", str(experiment), "--format", "onnx"]) == 1
    assert run in caplog.text and "give a run directory written by" not in caplog.text
    # `fieldsym train` puts each operator's run in <experiment>/<operator>/; a few are listed, with the count.
    folder = tmp_path / "mixed"
    for run_dir, name in (("fno", "best.pt"), ("gfno", "last.pt"), ("runs/fno/n8-s0", "best.pt"),
                          ("runs/fno/n8-s1", "last.pt"), ("runs/fno/n8-s1", "best.pt"), ("notes", "x.txt")):
        (folder / run_dir).mkdir(parents=True, exist_ok=True)
        (folder / run_dir / name).touch()
    with pytest.raises(ExportError) as error:
        export_run(folder, "pt2")
    assert str(error.value).endswith(f"e.g. {folder / 'fno'}, {folder / 'gfno'}, {folder / 'runs/fno/n8-s0'} "
                                     "(4 in all)")


def test_a_run_directory_given_where_an_export_belongs_is_answered_with_its_exports(runs, exports, tmp_path):
    run = runs["fno"]
    assert (run / "export").is_dir()  # the exports fixture wrote RUN/export/FORMAT
    with pytest.raises(ExportError, match="is a run directory, not an export; give one of its exports") as error:
        load_export(run)
    assert str(run / "export" / "onnx") in str(error.value)
    bare = tmp_path / "bare_run"
    bare.mkdir()
    (bare / "best.pt").write_bytes((run / "best.pt").read_bytes())
    with pytest.raises(ExportError, match=r"was not exported: `fieldsym export .* --format pt2\|onnx\|safetensors`"):
        load_export(bare)
