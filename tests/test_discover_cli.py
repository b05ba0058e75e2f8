"""`fieldsym discover` on a real (tiny) training run."""

import json

from fieldsym.cli import main


def _config(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
dataset:
  generate: {{solver: navier_stokes, samples: 16, resolution: 16,
             params: {{forcing: fno, t_final: 0.1, record_steps: 1, dt: 0.01}}}}
task: {{inputs: [vorticity], outputs: [vorticity]}}
operators:
  - {{name: fno, kind: fno, options: {{n_modes: [8, 8], hidden_channels: 8, n_layers: 2}}}}
training: {{epochs: 1, batch_size: 8, device: cpu}}
experiment: {{name: d, out: {tmp_path / 'runs'}}}
""")
    return cfg


def test_discover_writes_a_table_json_and_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path)), "--out", str(run)]) == 0
    assert main(["discover", str(run), "--samples", "2", "--candidates", "se2"]) == 0
    out = capsys.readouterr().out
    assert "singular value" in out and "threshold" in out
    result = json.loads((run / "discovery.json").read_text())
    assert result["candidates"] == ["Tx", "Ty", "R"] and len(result["singular_values"]) == 3
    assert (run / "discovery.png").stat().st_size > 10_000


def test_discover_on_a_missing_run_is_a_one_line_error(tmp_path, caplog):
    assert main(["discover", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in caplog.text
