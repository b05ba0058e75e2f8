"""Training: a tiny run learns and logs, a kill-and-resume reproduces the uninterrupted run bit for bit on
CPU, a NaN loss stops with advice and keeps the last good checkpoint, and ``fieldsym train`` works."""

from __future__ import annotations

import csv
import logging
import math
import textwrap

import pytest
import torch
from torch import nn

from fieldsym.checkpoint import CheckpointError, load_checkpoint
from fieldsym.cli import main
from fieldsym.config import ConfigError, ExperimentConfig, TrainingConfig, load_config, resolve_operators
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.normalization import fit_normalizers
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.groups import C4, algebra
from fieldsym.models import FieldFNO, build_operator
from fieldsym.penalties import Augmenter, MixedPenalty, NuclearPenalty
from fieldsym.train import Probe, TrainingDiverged, fit, load_operator, parameter_groups, train
from datafiles import low_pass_file

SAMPLES, N = 16, 16


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """A low-pass filter of smooth random fields, periodic 16x16 grid, 16 samples."""
    return low_pass_file(tmp_path_factory.mktemp("data") / "smooth.nc", SAMPLES, N, "tests/test_train.py")


def config_for(data_file, out, *overrides: str) -> ExperimentConfig:
    text = textwrap.dedent(f"""\
        dataset: {{path: {data_file}, split: {{valid: 0.25, test: 0.0}}}}
        task: {{inputs: [u], outputs: [u], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators:
          - name: fno
            options: {{n_modes: [6, 6], hidden_channels: 8, n_layers: 2}}
        training: {{epochs: 3, batch_size: 4, device: cpu, optimizer: {{lr: 1.0e-2}}, eval_samples: 2}}
        experiment: {{name: test, out: {out}}}
        """)
    path = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_config(path, overrides)


def test_tiny_run_learns_and_logs_every_metric(data_file, tmp_path):
    config = config_for(data_file, tmp_path)
    result = train(config)
    out = tmp_path / "test" / "fno"
    assert result.out_dir == out and result.epochs == 3 and result.steps == 9
    losses = [row["train_loss"] for row in result.metrics]
    valid = [row["valid_rel_l2"] for row in result.metrics]
    assert losses[-1] < 0.9 * losses[0] and valid[-1] < 0.9 * valid[0]
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert list(rows[0]) == ["epoch", "step", "lr", "train_loss", "data_loss", "penalty", "valid_rel_l2",
                             "equiv/Tx", "equiv/Ty", "equiv/R", "equiv/r1", "equiv/r2", "equiv/r3", "seconds"]
    assert all(0 <= float(rows[-1][f"equiv/{g}"]) < 10 for g in ("Tx", "R", "r1"))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["epoch"] == 3 and best["epoch"] == result.best_epoch
    stored = resolve_operators(config.for_run("fno"), result.model.in_type, result.model.out_type)
    assert ExperimentConfig.from_dict(last["config"]) == stored
    u = torch.randn(3, 1, N, N)
    with torch.no_grad():
        assert torch.equal(load_operator(out / "last.pt")(u), result.operator.eval()(u))


def test_train_size_takes_the_first_training_samples(data_file, tmp_path):
    config = config_for(data_file, tmp_path, "training.epochs=1", "experiment.train_sizes=[4]")
    result = train(config, tmp_path / "four")
    assert result.steps == 1  # 4 samples, batch size 4
    assert load_checkpoint(tmp_path / "four" / "last.pt")["config"]["experiment"]["train_sizes"] == [4]
    with pytest.raises(ConfigError, match="13 training samples asked, the training split of .* has 12"):
        train(config, tmp_path / "too-many", train_size=13)


class KilledInEpoch:
    """A loader that raises KeyboardInterrupt after the first batch of epoch ``kill`` (1-based): a kill."""

    def __init__(self, loader, kill: int) -> None:
        self.loader, self.kill, self.epoch = loader, kill, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.epoch == self.kill and i == 1:
                raise KeyboardInterrupt
            yield batch


def residual(in_type, out_type, free_weight_decay: float | None = 0.5):
    """A small residual operator (C4 GroupFNO + FNO) with a free-path weight decay of its own."""
    return build_operator("residual", in_type, out_type, free_weight_decay=free_weight_decay,
                          equivariant={"kind": "gfno", "group": "C4", "n_modes": 6, "hidden_channels": 2,
                                       "n_layers": 2},
                          free={"kind": "fno", "n_modes": [6, 6], "hidden_channels": 4, "n_layers": 2})


def fit_run(data_file, out, penalty_class, init_seed: int, kill: int | None = None, resume: bool = False,
            make_model=None):
    """Fresh objects (data, model, augmentation, penalty, probe) and one call of ``fit``."""
    spec = DataSpec(("u",), ("u",), TimeSelection("one_step", 0, 1))
    train_set, valid_set = (FieldDataset(data_file, spec, split, fractions=(0.75, 0.25, 0.0))
                            for split in ("train", "valid"))
    in_type, out_type, grid = train_set.in_type, train_set.out_type, train_set.grid
    torch.manual_seed(init_seed)
    model = (make_model(in_type, out_type) if make_model is not None else
             FieldFNO(in_type, out_type, n_modes=(6, 6), hidden_channels=8, n_layers=2))
    train_loader = make_loader(train_set, 4, shuffle=True, seed=0)
    valid_loader = make_loader(valid_set, 4, shuffle=False)
    generators = algebra("se2")
    penalty = (NuclearPenalty(generators, in_type, out_type, grid, gamma=0.1, ramp_epochs=1)
               if penalty_class is NuclearPenalty else
               MixedPenalty(generators, in_type, out_type, grid, gamma=0.1, update_epochs=(1,)))
    return fit(
        model, train_loader if kill is None else KilledInEpoch(train_loader, kill), valid_loader, out,
        training=TrainingConfig(epochs=4, batch_size=4, device="cpu", optimizer={"lr": 1e-2}),
        normalizers=fit_normalizers(train_set), augment=Augmenter(C4.elements, in_type, out_type),
        penalty=penalty,
        probe=Probe(valid_set.read(0, 2)[0], in_type, out_type, grid, generators, C4), resume=resume,
    )


@pytest.mark.parametrize("penalty_class, make_model", [(NuclearPenalty, None), (MixedPenalty, None),
                                                       (NuclearPenalty, residual)])
def test_kill_and_resume_reproduces_the_uninterrupted_run(data_file, tmp_path, penalty_class, make_model):
    """Augmentation draws random elements (RNG state), the loader reshuffles by epoch, promotion ramps up
    and the mixed penalty tunes its strengths after epoch 2: all must continue as if never stopped (also
    with a residual operator's two parameter groups)."""
    straight = fit_run(data_file, tmp_path / "straight", penalty_class, init_seed=0, make_model=make_model)
    with pytest.raises(KeyboardInterrupt):
        fit_run(data_file, tmp_path / "killed", penalty_class, init_seed=0, kill=3, make_model=make_model)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2
    # Other initial weights: the checkpoint's must replace them.
    resumed = fit_run(data_file, tmp_path / "killed", penalty_class, init_seed=1, resume=True,
                      make_model=make_model)
    assert (resumed.epochs, resumed.steps) == (straight.epochs, straight.steps) == (4, 12)
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ from the straight run"

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_time(resumed.metrics) == without_time(straight.metrics)
    with (tmp_path / "killed" / "metrics.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]


class NaNAfter(nn.Module):
    """A model whose training forward returns NaN after ``calls`` calls."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.calls, self.limit = model, 0, calls

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        out = self.model(u)
        return out * math.nan if self.training and self.calls > self.limit else out


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(data_file, tmp_path):
    spec = DataSpec(("u",), ("u",), TimeSelection("one_step", 0, 1))
    train_set, valid_set = (FieldDataset(data_file, spec, split, fractions=(0.75, 0.25, 0.0))
                            for split in ("train", "valid"))
    model = NaNAfter(FieldFNO("u:scalar", "u:scalar", n_modes=(6, 6), hidden_channels=8, n_layers=2), calls=3)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, make_loader(train_set, 4, True), make_loader(valid_set, 4, False), tmp_path,
            training=TrainingConfig(epochs=3, batch_size=4, device="cpu"), normalizers=fit_normalizers(train_set))
    message = str(info.value)
    assert "loss is nan (data loss non-finite) at epoch 2, step 4; last finite loss" in message
    assert f"{tmp_path / 'last.pt'} holds epoch 1" in message
    assert "training.optimizer.lr, now 0.001" in message and "training.grad_clip" in message
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 1 and all(bool(v.isfinite().all()) for v in last["model"].values())
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_cli_train_runs_and_reports_errors_in_one_line(data_file, tmp_path, caplog):
    config_for(data_file, tmp_path)
    cfg, out = str(tmp_path / "config.yaml"), tmp_path / "cli"
    # overrides before and after an option, as a user types them
    assert main(["train", cfg, "training.epochs=1", "--out", str(out), "training.loss=h1"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert load_checkpoint(out / "last.pt")["config"]["training"]["loss"] == "h1"
    caplog.set_level(logging.ERROR)
    assert main(["train", cfg, "training.epochs=1", "--out", str(out)]) == 1
    assert "already holds a run" in caplog.text and "--resume" in caplog.text
    caplog.clear()
    assert main(["train", cfg, "training.optimizer.lr=0"]) == 1
    assert "training.optimizer.lr: Input should be greater than 0, got 0" in caplog.text
    caplog.clear()  # an unknown operator option is refused with the config, naming the right ones
    assert main(["train", cfg, "operators[0].options.hiden_channels=4"]) == 1
    assert "operators[0]: options: fno: unknown option(s) 'hiden_channels'; its options are n_modes, hidden_channels" \
        in caplog.text
    with pytest.raises(SystemExit):  # an unknown flag: argparse's error, with the subcommand's usage
        main(["train", cfg, "--bogus", "training.epochs=1"])


def test_resume_with_more_epochs_follows_the_new_schedule(data_file, tmp_path, caplog):
    # 2 epochs of a 2-epoch cosine end at lr 0; resumed to 4 epochs, epochs 3-4 must follow the 4-epoch cosine.
    train(config_for(data_file, tmp_path, "training.epochs=2"))
    with caplog.at_level(logging.WARNING, logger="fieldsym.train"):
        result = train(config_for(data_file, tmp_path, "training.epochs=4", "training.num_workers=1"), resume=True)
    # The resume names what changed; how the run executes (loader workers) is not a change of config.
    assert "written with a different config (training.epochs: 2 -> 4);" in caplog.text
    lrs = [row["lr"] for row in result.metrics]
    cosine = [1.0e-2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert len(lrs) == 4 and lrs[2:] == pytest.approx(cosine[2:], rel=1e-6), lrs


def test_residual_free_path_gets_its_own_weight_decay(data_file, tmp_path):
    model = residual("u:scalar", "u:scalar", free_weight_decay=0.5)
    equivariant, free = parameter_groups(model, 1e-4)
    assert (equivariant["weight_decay"], free["weight_decay"]) == (1e-4, 0.5)
    assert {id(p) for p in free["params"]} == {id(model.gate), *map(id, model.free.parameters())}
    assert {id(p) for p in equivariant["params"]} == {id(p) for p in model.equivariant.parameters()}
    unset = residual("u:scalar", "u:scalar", free_weight_decay=None)
    [group] = parameter_groups(unset, 1e-4)  # as any other operator: checkpoints from before the option resume
    assert group["weight_decay"] == 1e-4 and len(group["params"]) == len(list(unset.parameters()))
    # Decoupled decay acts alone where the gradient is zero: the free path shrinks by (1 - lr * 0.5) per
    # step, the equivariant part by (1 - lr * 1e-4).
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-4), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # AdamW skips parameters without a gradient
    optimizer.step()
    for name, p in model.named_parameters():
        rate = 0.5 if name == "gate" or name.startswith("free.") else 1e-4
        assert torch.allclose(p.detach(), before[name] * (1 - 0.1 * rate)), name
    # Through fit: the checkpoint's optimiser keeps both groups, and a resume after the setting changed says so.
    fit_run(data_file, tmp_path / "run", NuclearPenalty, init_seed=0, make_model=residual)
    groups = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [TrainingConfig().optimizer.weight_decay, 0.5]
    with pytest.raises(CheckpointError, match=r"2 parameter group\(s\), this model makes 1: .*free_weight_decay"):
        fit_run(data_file, tmp_path / "run", NuclearPenalty, init_seed=0, resume=True,
                make_model=lambda i, o: residual(i, o, free_weight_decay=None))



def test_a_stored_run_rebuilds_its_model_after_an_operator_default_changes(data_file, tmp_path, monkeypatch):
    """The checkpoint's config names every option the operator was built with, defaults included, so a later
    change of a default (here FieldFNO's positional embedding) does not change the model it rebuilds; a config
    stored without them (as before) gets the CheckpointError that says so."""
    from fieldsym.checkpoint import save_checkpoint
    from fieldsym.models import build as build_module

    result = train(config_for(data_file, tmp_path, "training.epochs=1"))
    path = result.out_dir / "last.pt"
    state = load_checkpoint(path)
    options = state["config"]["operators"][0]["options"]
    assert options["positional_embedding"] is True and options["rank"] == 1.0  # FieldFNO's defaults
    assert options["channel_mlp_expansion"] == 0.5 and options["fno_skip"] == "linear"  # neuralop FNO's
    assert options["n_modes"] == [6, 6] and options["hidden_channels"] == 8  # as the user wrote them
    assert result.config == state["config"]
    old_style = {**state, "config": config_for(data_file, tmp_path / "old", "training.epochs=1").for_run().to_dict()}
    save_checkpoint(tmp_path / "old.pt", old_style)

    def new_defaults(in_type, out_type, positional_embedding=False, **rest):
        return FieldFNO(in_type, out_type, positional_embedding=positional_embedding, **rest)

    monkeypatch.setitem(build_module._CONSTRUCTORS, "fno", new_defaults)
    u = torch.randn(3, 1, N, N)
    with torch.no_grad():
        assert torch.equal(load_operator(path)(u), result.operator.eval()(u))
    with pytest.raises(CheckpointError, match=r"old.pt: its weights do not fit .* Delete the run directory"):
        load_operator(tmp_path / "old.pt")


def test_a_steerable_run_written_with_one_parameter_per_block_resumes_exactly(data_file, tmp_path):
    """Steerable layers once kept each weight block as its own parameter (checkpoint keys ``weights.0``, ...,
    one AdamW entry per block). Such a ``last.pt`` (made here by splitting a current one the old way) resumes
    and finishes exactly as the uninterrupted run."""
    from fieldsym.models import SteerableFNO

    def make_model(in_type, out_type):
        return SteerableFNO(in_type, out_type, hidden_irreps="2x0 + 1x1 + 1x2", n_modes=6, n_layers=2)

    straight = fit_run(data_file, tmp_path / "straight", NuclearPenalty, init_seed=0, make_model=make_model)
    with pytest.raises(KeyboardInterrupt):
        fit_run(data_file, tmp_path / "killed", NuclearPenalty, init_seed=0, kill=3, make_model=make_model)
    path = tmp_path / "killed" / "last.pt"
    state = torch.load(path, weights_only=False)
    layers = {name: module for name, module in straight.model.named_modules() if hasattr(module, "block_shapes")}
    old_model, old_index, old_state, new_to_old = {}, 0, {}, {}
    for index, (key, value) in enumerate(state["model"].items()):
        prefix = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and prefix in layers:  # one key and one AdamW entry per block, in block order
            blocks = layers[prefix].split(value)
            entries = state["optimizer"]["state"][index]
            moments = {k: layers[prefix].split(v) for k, v in entries.items() if v.dim() > 0}
            for i, block in enumerate(blocks):
                old_model[f"{prefix}.weights.{i}"] = block.clone()
                old_state[old_index] = {"step": entries["step"], **{k: v[i].clone() for k, v in moments.items()}}
                old_index += 1
        else:
            old_model[key] = value
            old_state[old_index] = state["optimizer"]["state"][index]
            old_index += 1
    assert list(state["model"]) == [name for name, _ in straight.model.named_parameters()]  # index = parameter order
    state["model"] = old_model
    state["optimizer"] = {"state": old_state,
                          "param_groups": [{**state["optimizer"]["param_groups"][0], "params": list(range(old_index))}]}
    assert old_index > len(list(straight.model.parameters())) + 5
    torch.save(state, path)
    resumed = fit_run(data_file, tmp_path / "killed", NuclearPenalty, init_seed=1, resume=True, make_model=make_model)
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ from the straight run"
