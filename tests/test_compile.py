"""``training.compile``: the training forward through ``torch.compile`` trains the same model as eager
(same losses to rounding, same checkpoint keys), with the symmetry penalty on the eager module."""

from __future__ import annotations

import textwrap

import pytest
import torch

from fieldsym.checkpoint import load_checkpoint
from fieldsym.config import ConfigError, load_config
from fieldsym.train import load_operator, train
from datafiles import low_pass_file

SAMPLES, N = 16, 16


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return low_pass_file(tmp_path_factory.mktemp("data") / "smooth.nc", SAMPLES, N, "tests/test_compile.py")


OPERATORS = {
    "promoted": "{name: promoted, options: {n_modes: [6, 6], hidden_channels: 8, n_layers: 2}, "
                "symmetry: {mode: promoted, candidates: [Tx, Ty, R], gamma: 0.1, sub_batch: 2}}",
    "steerable": "{name: steerable, kind: steerable, options: {hidden_irreps: '2x0 + 1x1 + 1x2', n_modes: 6, "
                 "n_layers: 2}}",
}


def config_for(data_file, out, *overrides: str, operator: str = "promoted"):
    text = textwrap.dedent(f"""\
        dataset: {{path: {data_file}, split: {{valid: 0.25, test: 0.0}}}}
        task: {{inputs: [u], outputs: [u], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators: [{OPERATORS[operator]}]
        training: {{epochs: 2, batch_size: 4, device: cpu, optimizer: {{lr: 1.0e-2}}, eval_samples: 2}}
        experiment: {{name: test, out: {out}}}
        """)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(text)
    return load_config(out / "config.yaml", overrides)


@pytest.mark.parametrize("operator", ["promoted", "steerable"])
def test_compiled_training_follows_eager_training(data_file, tmp_path, monkeypatch, operator):
    """An FNO with a promotion penalty (run on the eager module) and a SteerableFNO (whose kernels take the
    traced branch of the embedding bag)."""
    modes, calls, compile_ = [], [], torch.compile

    def recording_compile(model, **kwargs):
        modes.append(kwargs.get("mode"))
        compiled_model = compile_(model, **kwargs)

        def forward(x):
            calls.append(len(x))
            return compiled_model(x)

        return forward

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch.manual_seed(0)
    eager = train(config_for(data_file, tmp_path / "eager", operator=operator))
    assert modes == []
    torch.manual_seed(0)
    compiled = train(config_for(data_file, tmp_path / "compiled", "training.compile=true", operator=operator))
    assert modes == ["default"] and len(calls) == compiled.steps  # every training forward went through it
    assert compiled.steps == eager.steps == 6
    for a, b in zip(eager.metrics, compiled.metrics, strict=True):
        for key in ("data_loss", "penalty", "valid_rel_l2"):
            assert b[key] == pytest.approx(a[key], rel=2e-3, abs=1e-7), key
    if operator == "promoted":
        assert eager.metrics[-1]["penalty"] > 0  # the penalty ran (on the eager module, sharing the weights)
    last = tmp_path / "compiled" / "test" / operator / "last.pt"
    state = load_checkpoint(last)
    assert not any("_orig_mod" in key for key in state["model"])  # the plain module's keys, not the wrapper's
    assert state["config"]["training"]["compile"] == "default"
    u = torch.randn(2, 1, N, N)
    with torch.no_grad():
        torch.testing.assert_close(load_operator(last)(u), compiled.operator.eval()(u))


def test_compile_setting_is_validated(data_file, tmp_path):
    assert load_config_value(data_file, tmp_path, "training.compile=false") == "off"
    assert load_config_value(data_file, tmp_path, "training.compile=max-autotune") == "max-autotune"
    with pytest.raises(ConfigError, match="compile"):
        config_for(data_file, tmp_path / "bad", "training.compile=reduce-overhead")


def load_config_value(data_file, tmp_path, override: str) -> str:
    return config_for(data_file, tmp_path / "ok", override).training.compile
