"""Checkpoints: plain data that torch.load(weights_only=True) reads, atomic writes, clear errors, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fieldsym.checkpoint import (FORMAT_VERSION, CheckpointError, capture_rng, load_checkpoint, model_state,
                                 restore_rng, save_checkpoint)
from fieldsym.models import FieldFNO


@pytest.fixture(scope="module")
def state() -> dict:
    """A checkpoint state of a tiny FieldFNO after one optimiser step (built once: neuralop is slow to start)."""
    model = FieldFNO("u:scalar", "v:vector", n_modes=(4, 4), hidden_channels=4, n_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    model(torch.randn(2, 1, 8, 8)).square().mean().backward()
    optimizer.step()
    scheduler.step()
    return {
        "format_version": FORMAT_VERSION, "epoch": 1, "step": 1, "model": model_state(model),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "penalty": {"strengths": {"Tx": 1.0, "R": 0.25}}, "rng": capture_rng(),
        "best": {"epoch": 1, "valid": 0.5}, "config": {"training": {"epochs": 3}, "name": None},
        "normalization": {"inputs": {"field_type": "u:scalar", "shift": torch.zeros(1), "scale": torch.ones(1)}},
        "metrics": [{"epoch": 1, "train_loss": 0.7}],
    }


def test_round_trip_with_weights_only(tmp_path, state):
    path = save_checkpoint(tmp_path / "last.pt", state)
    raw = torch.load(path, weights_only=True)  # what a cautious user does, without fieldsym
    assert "_metadata" not in raw["model"]
    loaded = load_checkpoint(path)
    model = FieldFNO("u:scalar", "v:vector", n_modes=(4, 4), hidden_channels=4, n_layers=1)
    model.load_state_dict(loaded["model"])  # strict
    for key, value in state["model"].items():
        assert torch.equal(model.state_dict()[key], value)
    assert loaded["metrics"] == state["metrics"] and loaded["config"] == state["config"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_rng_states_round_trip():
    state = capture_rng()
    draws = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2:] == again[2:]


def test_rng_state_survives_the_file(tmp_path, state):
    path = save_checkpoint(tmp_path / "c.pt", {**state, "rng": capture_rng()})
    expected = (torch.rand(4), np.random.rand(), random.random())
    restore_rng(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(4), expected[0]) and (np.random.rand(), random.random()) == expected[1:]


def test_truncated_checkpoint_names_the_file(tmp_path, state):
    path = save_checkpoint(tmp_path / "last.pt", state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last.pt: cannot be read .*truncated or corrupt.*best.pt"):
        load_checkpoint(path)


class Payload:
    """Stands for any pickled object that is not plain data."""


def test_tampered_checkpoint_is_refused(tmp_path, state):
    path = tmp_path / "evil.pt"
    torch.save({**state, "config": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: holds Python objects .* not written by fieldsym"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a fieldsym checkpoint of format 1"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="gone.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "gone.pt")


def test_non_plain_state_fails_at_save_and_keeps_the_old_file(tmp_path, state):
    path = save_checkpoint(tmp_path / "last.pt", state)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"checkpoint.normalization.inputs is a Payload"):
        save_checkpoint(path, {**state, "normalization": {"inputs": Payload()}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(CheckpointError, match="lacks metrics"):
        save_checkpoint(path, {k: v for k, v in state.items() if k != "metrics"})


def test_weights_that_no_longer_fit_the_rebuilt_model_are_named(tmp_path):
    """A checkpoint whose layers differ from the model its config now builds (an operator default changed
    since it was written): a CheckpointError naming the file and the fix, not a bare size mismatch."""
    from fieldsym.checkpoint import load_model_state
    from fieldsym.models import SteerableFNO

    old = SteerableFNO("s:scalar", "s:scalar", hidden_irreps="2x0 + 1x1", n_modes=4, n_layers=2, activation="norm")
    new = SteerableFNO("s:scalar", "s:scalar", hidden_irreps="2x0 + 1x1", n_modes=4, n_layers=2)
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match="last.pt.*activation: norm.*Delete the run directory"):
        load_model_state(new, old.state_dict(), path)
    load_model_state(SteerableFNO("s:scalar", "s:scalar", hidden_irreps="2x0 + 1x1", n_modes=4, n_layers=2,
                                  activation="norm"), old.state_dict(), path)
