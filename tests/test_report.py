"""The report: built from an experiment directory alone (no models), with the figures it promises, seeds
aggregated in the table, vector fields drawn with arrows, and a one-line error for a wrong directory."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.image import imread
from matplotlib.quiver import Quiver

from fieldsym.cli import main
from fieldsym.fields import FieldType
from fieldsym.report import _example_figure, write_report
from fieldsym.runner import EXAMPLES, RESULT, save_npz, write_results, write_text

IN_TYPE, OUT_TYPE = "w:pseudoscalar", "w:pseudoscalar, v:vector"


def fake_experiment(root, sizes=(8,), seeds=(0,)):
    """An experiment directory as the runner leaves it, with made-up numbers and fields."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for seed in seeds:
            for i, (name, kind) in enumerate((("fno", "fno"), ("gfno_c4", "gfno"))):
                run_dir = f"runs/{name}/n{n}-s{seed}"
                exact = kind == "gfno"
                row = {"experiment": "fake", "operator": name, "kind": kind, "symmetry": "none", "train_size": n,
                       "seed": seed, "parameters": 1000 + i, "epochs": 2, "best_epoch": 2,
                       "valid_rel_l2": 0.1 / n + 0.01 * seed, "test_rel_l2": 0.1 / n + 0.01 * seed,
                       "turned_test_rel_l2": 0.1 / n if exact else 1.2, "equiv_Tx": 0.01, "equiv_Ty": 0.02,
                       "equiv_R": 0.05, "equiv_r1": 1e-7 if exact else 0.9, "equiv_r2": 1e-7 if exact else 0.8,
                       "equiv_r3": 1e-7 if exact else 0.9, "discovered": "1.00 Tx; 1.00 Ty",
                       "discovery_gap": 10.0, "discovery_threshold": 0.03, "singular_values": "0.3 0.01 0.005",
                       "train_seconds": 1.5, "eval_seconds": 0.5, "run_dir": run_dir}
                rows.append(row)
                spectrum = {"candidates": ["Tx", "Ty", "R"], "singular_values": [0.3, 0.01, 0.005],
                            "singular_std": [0.01, 0.001, 0.001], "floor": [0.004, 0.003, 0.002], "threshold": 0.03}
                write_text(root / run_dir / RESULT, json.dumps({"config": {}, "row": row, "spectrum": spectrum,
                                                                "in_type": IN_TYPE, "out_type": OUT_TYPE}))
                fields = {k: rng.standard_normal((c, 12, 12)).astype(np.float32)
                          for k, c in (("x", 1), ("y", 3), ("prediction", 3))}
                fields.update({f"{k}_turned": np.rot90(v, 1, (-2, -1)).copy() for k, v in list(fields.items())})
                save_npz(root / run_dir / EXAMPLES, fields)
    write_text(root / "config.yaml", "dataset: {path: fake.nc}\ntask: {inputs: [w], outputs: [w, v]}\n")
    write_results(rows, root)
    return root


def test_report_has_every_section_and_figure(tmp_path):
    root = fake_experiment(tmp_path)
    page = write_report(root)
    assert page == root / "report.html"
    md = (root / "report.md").read_text()
    assert "## Learning curves" not in md  # one training size: no curve
    images = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert images == ["figures/test_vs_turned.png", "figures/equivariance.png", "figures/spectra.png",
                      "figures/example_w.png", "figures/example_w_turned.png", "figures/example_v.png",
                      "figures/example_v_turned.png"]
    for image in images:
        pixels = imread(root / image)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200 and pixels.std() > 0.05, image
    html = page.read_text()
    assert html.count("<img ") == len(images) and "<table>" in html
    assert "| fno | fno | none | 1,000 | 8 |" in md


def test_several_sizes_draw_a_learning_curve_and_seeds_are_averaged(tmp_path):
    root = fake_experiment(tmp_path, sizes=(4, 8), seeds=(0, 1))
    write_report(root)
    md = (root / "report.md").read_text()
    assert "![Test error against the number of training samples](figures/learning_curve.png)" in md
    # fno at 8 samples: test 0.0125 (seed 0) and 0.0225 (seed 1) -> mean 0.0175, std 0.005
    assert "0.0175 ± 0.0050" in md


def test_vector_fields_are_drawn_with_arrows_and_scalars_without(tmp_path):
    root = fake_experiment(tmp_path)
    examples = {name: dict(np.load(root / f"runs/{name}/n8-s0" / EXAMPLES)) for name in ("fno", "gfno_c4")}
    in_type, out_type = FieldType.parse(IN_TYPE), FieldType.parse(OUT_TYPE)
    for field, arrows in (("v", True), ("w", False)):
        fig = _example_figure(examples, in_type, out_type, field, turned=False)
        quivers = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, Quiver)]
        # truth, two predictions, two errors; the input w is a pseudoscalar
        assert len(quivers) == (5 if arrows else 0)
        assert all(image.origin == "lower" for ax in fig.axes for image in ax.images)  # y up, as in DESIGN.md


def test_report_of_a_directory_without_results_fails_in_one_line(tmp_path, caplog):
    assert main(["report", str(tmp_path)]) == 1
    message = caplog.records[-1].getMessage()
    assert str(tmp_path) in message and "fieldsym run" in message
