"""Experiment configs: strict validation with dotted paths, overrides, YAML errors, round trips, builders."""

from __future__ import annotations

import json
import textwrap

import pytest

from fieldsym.config import (ConfigError, ExperimentConfig, apply_overrides, build_data_spec, build_model,
                             build_symmetry, dataset_path, load_config, parse_override)
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.penalties import Augmenter, LiePenalty, MixedPenalty, NuclearPenalty

BASE = textwrap.dedent("""\
    dataset:
      path: data.nc
      variables: {velocity: [u, v], w: vort}
      field_types: {w: pseudoscalar}
    task:
      inputs: [velocity]
      outputs: [w]
      times: {mode: multi_step, n_in: 2}
    operators:
      - name: fno
        options: {n_modes: [8, 8], hidden_channels: 8}
      - name: promoted
        symmetry: {mode: promoted, candidates: se2, gamma: 1e-2}
      - name: augmented
        symmetry: augmented
    training:
      epochs: 3
      optimizer: {lr: 1e-3}
      scheduler: step
    """)


def write(tmp_path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path, text: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    return str(info.value)


def test_valid_config_loads_with_shorthands_and_yaml_floats(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.operators[1].symmetry.gamma == pytest.approx(0.01)  # "1e-2" is a float, not a string
    assert config.operators[1].symmetry.candidates == ["se2"]
    assert config.operators[2].symmetry.mode == "augmented" and config.operators[2].symmetry.group == "C4"
    assert config.training.scheduler.kind == "step"
    assert config.dataset.variables == {"velocity": ["u", "v"], "w": ["vort"]}


def test_unknown_key_names_its_dotted_path_and_the_allowed_keys(tmp_path):
    message = error_of(tmp_path, BASE + "  optimiser: {lr: 1.0}\n")
    assert "exp.yaml: training.optimiser: unknown key; allowed keys: epochs, batch_size, optimizer" in message
    nested = error_of(tmp_path, BASE, ["operators[1].symmetry.gama=3"])
    assert "operators[1].symmetry.gama: unknown key; allowed keys: mode, candidates, gamma" in nested
    assert len(nested.splitlines()) == 1


def test_bad_choice_lists_the_allowed_values(tmp_path):
    message = error_of(tmp_path, BASE, ["operators[0].kind=gfn0", "operators[1].symmetry.mode=bogus",
                                        "training.loss=l3"])
    lines = [line.split("exp.yaml: ", 1)[1] for line in message.splitlines()]
    assert lines == [
        "operators[0].kind: expected one of fno, gfno, steerable, averaged, residual, got 'gfn0'",
        "operators[1].symmetry.mode: expected one of none, augmented, penalized, promoted, mixed, got 'bogus'",
        "training.loss: expected one of l2, h1, got 'l3'",
    ]


def test_wrong_types_and_values_name_the_key(tmp_path):
    message = error_of(tmp_path, BASE, ["training.optimizer.lr=-1", "training.epochs=abc",
                                        "operators[1].symmetry.candidates=[Tx, Q]"])
    assert "training.optimizer.lr: Input should be greater than 0, got -1" in message
    assert "training.epochs: Input should be a valid integer" in message
    assert "operators[1].symmetry.candidates: unknown generator or algebra 'Q'" in message
    assert "missing" in error_of(tmp_path, "task: {inputs: [a], outputs: [b]}\noperators: [{name: a}]\n")


def test_cross_field_rules(tmp_path):
    assert "exactly one of 'generate'" in error_of(tmp_path, BASE, ["dataset.path=null"])
    assert "leaves no training samples" in error_of(tmp_path, BASE, ["dataset.split.valid=0.6",
                                                                     "dataset.split.test=0.5"])
    assert "operator names must be unique" in error_of(tmp_path, BASE, ["operators[1].name=fno"])
    generated = BASE.replace("  path: data.nc\n  variables: {velocity: [u, v], w: vort}\n"
                             "  field_types: {w: pseudoscalar}\n",
                             "  generate: {solver: darcy, params: {tau: 2.0, nu: 1}}\n")
    assert "dataset.generate.params.nu: unknown parameter of darcy.generate; allowed:" in error_of(tmp_path, generated)


def test_override_parsing():
    assert parse_override("training.epochs=3") == (["training", "epochs"], 3)
    assert parse_override("operators[0].options.n_modes=[8, 8]") == (["operators", 0, "options", "n_modes"], [8, 8])
    assert parse_override("training.optimizer.lr=1e-4") == (["training", "optimizer", "lr"], 1e-4)
    assert parse_override("training.grad_clip=null") == (["training", "grad_clip"], None)
    assert parse_override("experiment.name=ns sym") == (["experiment", "name"], "ns sym")
    for bad in ("training.epochs", "a..b=1", "[0].x=1", "=3"):
        with pytest.raises(ConfigError, match="not key=value"):
            parse_override(bad)
    data = {"operators": [{"name": "a"}], "training": {"epochs": 2}}
    out = apply_overrides(data, ["operators[0].options.width=4", "training.epochs=5", "experiment.seeds=[1, 2]"])
    assert out == {"operators": [{"name": "a", "options": {"width": 4}}], "training": {"epochs": 5},
                   "experiment": {"seeds": [1, 2]}}
    assert data["training"]["epochs"] == 2  # a copy
    with pytest.raises(ConfigError, match=r"operators has 1 entries"):
        apply_overrides(data, ["operators[3].name=b"])
    with pytest.raises(ConfigError, match="training.epochs is 2, not a mapping"):
        apply_overrides(data, ["training.epochs.x=1"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    message = error_of(tmp_path, "dataset:\n  path: a.nc\ntask: {inputs: [a, outputs: [b]}\n")
    assert message.startswith(f"{tmp_path / 'exp.yaml'}:3:")
    assert "YAML syntax error" in message
    assert "a YAML mapping" in error_of(tmp_path, "- just\n- a list\n")


def test_missing_file_is_a_clear_error(tmp_path):
    write(tmp_path, BASE, "quickstart.yaml")
    with pytest.raises(ConfigError, match=r"nope.yaml: no such config file; configs here: quickstart.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_plain_data_and_yaml(tmp_path):
    config = load_config(write(tmp_path, BASE), ["training.grad_clip=null"])
    plain = config.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # only plain types
    assert ExperimentConfig.from_dict(plain) == config
    again = load_config(write(tmp_path, config.to_yaml(), "again.yaml"))
    assert again == config and again.training.grad_clip is None
    assert again.fingerprint() == config.fingerprint()
    assert config.with_overrides(["training.epochs=4"]).fingerprint() != config.fingerprint()


def test_for_run_keeps_one_operator_size_and_seed(tmp_path):
    config = load_config(write(tmp_path, BASE))
    run = config.for_run("promoted", train_size=16, seed=3)
    assert [op.name for op in run.operators] == ["promoted"]
    assert run.experiment.train_sizes == [16] and run.experiment.seeds == [3] and run.training.seed == 3
    assert ExperimentConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ConfigError, match="no operator 'x'; choose one of fno, promoted, augmented"):
        config.for_run("x")


def test_data_spec_maps_variables_kinds_and_times(tmp_path):
    spec = build_data_spec(load_config(write(tmp_path, BASE)))
    (velocity,), (w,) = spec.inputs, spec.outputs
    assert velocity.variables == ("u", "v") and velocity.kind is None
    assert w.variables == ("vort",) and w.kind == "pseudoscalar"
    assert (spec.time.mode, spec.time.steps, spec.time.t_out) == ("multi_step", 2, None)


def test_missing_data_file_says_how_to_generate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.path: data.nc does not exist.*data_scripts/navier_stokes.py"):
        dataset_path(load_config(write(tmp_path, BASE)))


def test_builders_translate_operators_and_symmetry_modes(tmp_path):
    config = load_config(write(tmp_path, BASE), ["operators[2].symmetry={mode: augmented, shifts: true}"])
    in_type, out_type = FieldType.parse("velocity:vector"), FieldType.parse("w:pseudoscalar")
    grid = Grid.regular(16)
    model = build_model(config.operators[0], in_type, out_type, grid)
    assert type(model).__name__ == "FieldFNO" and model.n_modes == (8, 8)
    assert build_symmetry(config.operators[0], in_type, out_type, grid) == (None, None)
    augment, none = build_symmetry(config.operators[2], in_type, out_type, grid)
    assert isinstance(augment, Augmenter) and augment.shifts and none is None
    none, promoted = build_symmetry(config.operators[1], in_type, out_type, grid)
    assert none is None and isinstance(promoted, NuclearPenalty) and promoted.gamma == pytest.approx(0.01)
    penalized = config.with_overrides(["operators[1].symmetry={mode: penalized, generators: translations}"])
    assert isinstance(build_symmetry(penalized.operators[1], in_type, out_type, grid)[1], LiePenalty)
    mixed = config.with_overrides(["operators[1].symmetry={mode: mixed, generators: Tx+R, update_epochs: [2]}"])
    tuned = build_symmetry(mixed.operators[1], in_type, out_type, grid)[1]
    assert isinstance(tuned, MixedPenalty) and tuned.names == ["Tx", "R"] and tuned.update_epochs == {2}
    with pytest.raises(ConfigError, match=r"operators\[augmented\].symmetry.group: C4 needs a square grid"):
        build_symmetry(config.operators[2], in_type, out_type, Grid.regular((16, 8)))
    # a misspelt option is refused with the config, before any data or model
    with pytest.raises(ConfigError, match=r"operators\[0\]: options: fno: unknown option\(s\) 'widht'; its options "
                                          r"are n_modes, hidden_channels"):
        config.with_overrides(["operators[0].options.widht=3"])
    # a value that only the field types can judge is refused when the operator is built
    bad = config.with_overrides(["operators[0].options.n_modes=[6, 6, 6]"])
    with pytest.raises(ConfigError, match=r"operators\[fno\].options: .*n_modes"):
        build_model(bad.operators[0], in_type, out_type, grid)


@pytest.mark.parametrize("value", ["-1.0", "strong", "true", ".nan"])
def test_residual_free_weight_decay_is_checked_and_names_the_operator(tmp_path, value):
    parts = ("{equivariant: {kind: gfno, group: C4, n_modes: 4, hidden_channels: 2, n_layers: 1}, "
             "free: {kind: fno, n_modes: [4, 4], hidden_channels: 2, n_layers: 1}, free_weight_decay: %s}")
    in_type, out_type = FieldType.parse("velocity:vector"), FieldType.parse("w:pseudoscalar")
    good = load_config(write(tmp_path, BASE), ["operators[0].kind=residual", "operators[0].options=" + parts % 0.5])
    assert build_model(good.operators[0], in_type, out_type, Grid.regular(8)).free_weight_decay == 0.5
    bad = good.with_overrides(["operators[0].options.free_weight_decay=" + value])
    with pytest.raises(ConfigError, match=r"operators\[fno\].options: residual: free_weight_decay must be a "
                                          r"finite number >= 0 .* got"):
        build_model(bad.operators[0], in_type, out_type, Grid.regular(8))

