"""The runner: a tiny experiment runs end to end and writes its table and report; an interrupted
experiment resumes without redoing finished runs; bad configs and missing data fail in one line."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap

import pytest
import xarray as xr

from fieldsym import runner
from fieldsym.cli import main
from fieldsym.config import ConfigError, load_config
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.runner import run_experiment
from fieldsym.testing import low_pass_dataset

SAMPLES, N = 20, 16


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """A vector field ``u`` at time 0: smooth random; at time 1: low-pass filtered (a linear, rotation- and
    translation-equivariant map an FNO learns in a few steps). Periodic 16x16 grid."""
    return low_pass_dataset(tmp_path_factory.mktemp("data") / "smooth.nc", SAMPLES, N, "vector", "u", 8.0,
                            "tests/test_runner.py")


def write_config(tmp_path, data_file, sizes="[6, 12]") -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""\
        dataset: {{path: {data_file}, split: {{valid: 0.2, test: 0.2}}}}
        task: {{inputs: [u], outputs: [u], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators:
          - name: fno
            options: {{n_modes: [6, 6], hidden_channels: 6, n_layers: 2}}
          - name: gfno
            kind: gfno
            options: {{group: C4, n_modes: 6, hidden_channels: 2, n_layers: 2}}
        training: {{epochs: 2, batch_size: 4, device: cpu, optimizer: {{lr: 1.0e-2}}, eval_samples: 2}}
        experiment: {{name: tiny, out: {tmp_path / "out"}, train_sizes: {sizes}}}
        """))
    return str(path)


@pytest.fixture(scope="module")
def experiment(data_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment")
    return run_experiment(load_config(write_config(tmp, data_file)))


def test_tiny_experiment_writes_table_netcdf_and_report(experiment):
    with (experiment / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["operator"], r["train_size"]) for r in rows] == [("fno", "6"), ("gfno", "6"), ("fno", "12"), ("gfno", "12")]
    for column in ("kind", "symmetry", "seed", "parameters", "valid_rel_l2", "test_rel_l2", "turned_test_rel_l2",
                   "equiv_Tx", "equiv_Ty", "equiv_R", "equiv_r1", "equiv_r2", "equiv_r3", "discovered",
                   "singular_values", "train_seconds", "eval_seconds", "run_dir"):
        assert column in rows[0], column
    gfno = [r for r in rows if r["operator"] == "gfno"]
    # Equivariant by construction: the quarter-turned test set scores the same (so the runner turned the
    # vector components with the grid), and the discrete errors are rounding.
    for r in gfno:
        assert float(r["turned_test_rel_l2"]) == pytest.approx(float(r["test_rel_l2"]), rel=1e-4)
        assert float(r["equiv_r1"]) < 1e-5
    with xr.open_dataset(experiment / "results.nc") as ds:
        assert dict(ds.sizes) == {"operator": 2, "train_size": 2, "seed": 1, "singular": 3}
        assert list(ds.operator.values) == ["fno", "gfno"] and list(ds.train_size.values) == [6, 12]
        assert float(ds.test_rel_l2.sel(operator="fno", train_size=12, seed=0)) == pytest.approx(
            float(rows[2]["test_rel_l2"]), rel=1e-5)
        assert ds.singular_values.sel(operator="gfno").notnull().all()
        assert str(ds.kind.sel(operator="gfno").values) == "gfno"
    report = (experiment / "report.md").read_text()
    for heading in ("## Comparison", "## Test set and its quarter turn", "## Learning curves", "## Equivariance errors",
                    "## Discovered symmetries", "## Example fields"):
        assert heading in report
    images = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert "figures/example_u_turned.png" in images and "figures/learning_curve.png" in images
    assert all((experiment / image).stat().st_size > 5000 for image in images)
    assert (experiment / "report.html").read_text().count("<img ") == len(images)
    assert not list(experiment.rglob("*.tmp"))


def test_an_interrupted_experiment_resumes_without_redoing_finished_runs(data_file, tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, data_file, sizes="[8]"))
    trained = []
    real_train = runner.train

    def train_then_interrupt(run_config, out_dir, resume):
        trained.append(run_config.operators[0].name)
        if len(trained) == 2:
            raise KeyboardInterrupt  # killed in the second run, before it finished an epoch
        return real_train(run_config, out_dir, resume=resume)

    monkeypatch.setattr(runner, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config)
    runs = tmp_path / "out" / "tiny" / "runs"
    finished = runs / "fno" / "n8-s0"
    assert (finished / runner.RESULT).exists() and not (runs / "gfno" / "n8-s0" / runner.RESULT).exists()
    stamp = (finished / "last.pt").stat().st_mtime_ns, (finished / runner.RESULT).read_text()

    trained.clear()
    monkeypatch.setattr(runner, "train", lambda *a, **k: (trained.append(a[0].operators[0].name), real_train(*a, **k))[1])
    out = run_experiment(config)
    assert trained == ["gfno"]  # the finished fno run was skipped
    assert stamp == ((finished / "last.pt").stat().st_mtime_ns, (finished / runner.RESULT).read_text())
    with (out / "results.csv").open() as f:
        assert [r["operator"] for r in csv.DictReader(f)] == ["fno", "gfno"]

    # A run whose evaluation was lost but whose training finished resumes at its last epoch: no new epochs.
    (finished / runner.RESULT).unlink()
    run_experiment(config, report=False)
    assert json.loads((finished / runner.RESULT).read_text())["row"]["epochs"] == 2
    with (finished / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2


def test_a_finished_run_of_another_config_is_refused_with_the_differing_keys(experiment, caplog):
    config = experiment / "config.yaml"
    assert main(["run", str(config), "training.epochs=3"]) == 1
    message = caplog.records[-1].getMessage()
    assert "holds a run of a different config" in message and "training.epochs: 2 -> 3" in message
    assert "delete" in message and "experiment.name" in message


def test_a_bad_config_gives_one_line_naming_the_key_and_the_choices(data_file, tmp_path):
    config = write_config(tmp_path, data_file)
    done = subprocess.run([sys.executable, "-m", "fieldsym", "run", config, "operators[1].kind=gfn0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert "operators[1].kind: expected one of fno, gfno, steerable, averaged" in errors[0] and "'gfn0'" in errors[0]


def test_an_operator_the_data_cannot_take_stops_the_experiment_before_any_training(data_file, tmp_path,
                                                                                      monkeypatch):
    """A value only the data can judge (here: hidden irreps with no vector for a vector output) is found
    before the first run trains, not when the last operator's turn comes."""
    def no_training(*args, **kwargs):
        raise AssertionError("an experiment with an impossible operator started training")

    monkeypatch.setattr(runner, "train", no_training)
    config = load_config(write_config(tmp_path, data_file), [
        "operators[1]={name: steerable, kind: steerable, options: {hidden_irreps: '4x0', n_modes: 6, n_layers: 1}}"])
    with pytest.raises(ConfigError, match=r"operators\[steerable\].options: hidden_irreps '4x0' cannot reach"):
        run_experiment(config, report=False)


def test_a_missing_data_file_gives_its_path_and_how_to_make_it(data_file, tmp_path, caplog):
    config = write_config(tmp_path, data_file)
    missing = tmp_path / "nowhere" / "ns.nc"
    assert main(["run", config, f"dataset.path={missing}"]) == 1
    message = caplog.records[-1].getMessage()
    assert str(missing) in message and "data_scripts/navier_stokes.py --out" in message


def test_an_empty_test_split_is_refused_before_any_work(data_file, tmp_path, caplog):
    config = write_config(tmp_path, data_file)
    assert main(["run", config, "dataset.split.test=0"]) == 1
    assert "dataset.split.test" in caplog.records[-1].getMessage()
    assert not (tmp_path / "out" / "tiny" / "runs").exists()


def test_a_field_added_to_the_schema_since_a_run_is_not_a_difference(tmp_path):
    from fieldsym.config import ExperimentConfig
    from fieldsym.runner import RunnerError, _check_same_config

    config = ExperimentConfig.from_dict({
        "dataset": {"path": str(tmp_path / "d.nc")}, "task": {"inputs": ["u"], "outputs": ["u"]},
        "operators": [{"name": "p", "symmetry": {"mode": "promoted"}}]})
    stored = config.to_dict()
    del stored["operators"][0]["symmetry"]["elements"]  # as written before the field existed
    data = FieldType.parse("u:scalar"), FieldType.parse("u:scalar"), Grid.regular(8)
    _check_same_config(tmp_path, stored, config, *data)
    stored["operators"][0]["symmetry"]["gamma"] = 1.0
    with pytest.raises(RunnerError, match="gamma"):
        _check_same_config(tmp_path, stored, config, *data)


def test_defaults_written_out_or_left_implicit_reuse_the_same_run_and_real_changes_are_refused(
        data_file, tmp_path, monkeypatch):
    path = tmp_path / "one.yaml"
    path.write_text(textwrap.dedent(f"""\
        dataset: {{path: {data_file}, split: {{valid: 0.2, test: 0.2}}}}
        task: {{inputs: [u], outputs: [u], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators:
          - name: gfno
            kind: gfno
            options: {{group: C4, n_modes: 6, hidden_channels: 2, n_layers: 2}}
        training: {{epochs: 1, batch_size: 4, device: cpu, eval_samples: 2}}
        experiment: {{name: one, out: {tmp_path / "out"}, train_sizes: [6], evaluation_generators: [Tx]}}
        """))
    implicit = load_config(path)
    # GroupFNO's defaults, and the data's periodicity that the runner hands to it, written out:
    spelled = implicit.with_overrides(["operators[0].options.positional_embedding=false",
                                       "operators[0].options.periodic=[true, true]",
                                       "operators[0].options.lifting_channel_ratio=2"])
    out = run_experiment(implicit, report=False)
    done = out / "runs" / "gfno" / "n6-s0" / runner.RESULT
    result = json.loads(done.read_text())
    options = result["config"]["operators"][0]["options"]
    assert options["periodic"] == [True, True] and options["grid_gate"] == 0.0  # stored written out

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same config was trained again")

    monkeypatch.setattr(runner, "train", no_training)
    before = done.read_text()
    # How a run executes is not what it computes: another device, loader workers or compilation reuse it.
    executed_otherwise = implicit.with_overrides(["training.device=auto", "training.num_workers=1",
                                                  "training.compile=true"])
    for config in (spelled, implicit, executed_otherwise):
        run_experiment(config, report=False)
    # Runs stored before their options were written out hold what the user wrote, either way.
    for stored, config in ((implicit, spelled), (spelled, implicit)):
        done.write_text(json.dumps({**result, "config": stored.for_run("gfno", 6, 0).to_dict()}))
        run_experiment(config, report=False)
    done.write_text(before)
    with (out / "results.csv").open() as f:
        assert [r["test_rel_l2"] for r in csv.DictReader(f)] == [f"{result['row']['test_rel_l2']:.6g}"]

    # A value that differs is refused, whether the other side wrote it out or left it to the default.
    with pytest.raises(runner.RunnerError, match=r"different config \(training\.batch_size: 4 -> 2\)"):
        run_experiment(implicit.with_overrides(["training.batch_size=2"]), report=False)  # what it computes
    for override, difference in (("hidden_channels=3", "hidden_channels: 2 -> 3"),
                                 ("positional_embedding=true", "positional_embedding: False -> True"),
                                 ("periodic=[true, false]", "periodic: [True, True] -> [True, False]")):
        for stored in (before, json.dumps({**result, "config": implicit.for_run("gfno", 6, 0).to_dict()})):
            done.write_text(stored)
            with pytest.raises(runner.RunnerError, match=r"holds a run of a different config \(operators\[0\]"
                                                         rf"\.options\.{re.escape(difference)}\)"):
                run_experiment(implicit.with_overrides([f"operators[0].options.{override}"]), report=False)
