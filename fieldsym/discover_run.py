"""``fieldsym discover RUN_DIR|CHECKPOINT``: discovery on a trained operator, with a table, JSON and a plot.

Kept apart from :mod:`fieldsym.discovery` (pure math, no I/O) because this module loads checkpoints and
datasets and draws: it sits with the training and runner layer in the dependency order of DESIGN.md.
The operator is evaluated in float64 on physical (de-normalised) fields from the test split of the
run's own dataset, or of ``--data FILE`` read with the run's variable mapping.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from fieldsym.checkpoint import load_checkpoint, run_checkpoint
from fieldsym.config import ExperimentConfig, build_data_spec, dataset_path
from fieldsym.data.dataset import FieldDataset
from fieldsym.discovery import Discovery, discover, name_combination
from fieldsym.train import load_operator

log = logging.getLogger(__name__)


def test_inputs(config: ExperimentConfig, data: Path | None, samples: int
                ) -> tuple[torch.Tensor, torch.Tensor, FieldDataset]:
    """The first ``samples`` inputs and targets of the test split (of ``data`` when given), physical units."""
    spec = build_data_spec(config)
    split = config.dataset.split
    if data is not None:
        dataset = FieldDataset(data, spec, None)
    else:
        fractions = (1 - split.valid - split.test, split.valid, split.test)
        dataset = FieldDataset(dataset_path(config), spec, "test", fractions=fractions, seed=split.seed)
    n = min(samples, len(dataset))
    x, y = dataset.read(0, n)
    return x, y, dataset


def discover_run(path: str | Path, data: str | Path | None = None, samples: int = 8,
                 candidates: str | None = None, out: str | Path | None = None,
                 bootstrap: int = 200) -> tuple[Discovery, Path]:
    """Run discovery for a trained run; writes ``discovery.json`` and ``discovery.png`` into ``out``
    (default: the run directory) and returns the result and the output directory."""
    ckpt = run_checkpoint(path)

    config = ExperimentConfig.from_dict(load_checkpoint(ckpt)["config"], f"{ckpt} (config)")
    x, y, dataset = test_inputs(config, Path(data) if data is not None else None, samples)
    operator = load_operator(ckpt, grid=dataset.grid).double()
    result = discover(operator, x.double(), dataset.in_type, dataset.out_type, dataset.grid,
                      candidates=candidates, bootstrap=bootstrap, targets=y.double())
    out_dir = Path(out) if out is not None else ckpt.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict() | {"checkpoint": str(ckpt), "samples": int(x.shape[0])}
    _atomic_write_text(out_dir / "discovery.json", json.dumps(payload, indent=2))
    plot_spectrum(result, out_dir / "discovery.png", title=f"{ckpt.parent.name}: Lie-derivative spectrum")
    return result, out_dir


def plot_spectrum(result: Discovery, path: Path, title: str = "") -> None:
    """Singular values with bootstrap error bars, the discretisation floor and the threshold; and the
    threshold sweep (null-space dimension against threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = torch.tensor(result.singular_values).clamp_min(1e-16)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [name_combination([row[i] for row in result.vectors], result.candidates)
              for i in range(len(result.singular_values))]
    ax.errorbar(range(len(s)), s.tolist(), yerr=result.singular_std, fmt="o", capsize=4, label="operator")
    if result.floor:
        ax.plot(range(len(result.floor)), torch.tensor(result.floor).clamp_min(1e-16).tolist(), "x", color="grey",
                label="discretisation floor")
    if result.accuracy_floor:
        ax.axhline(max(result.accuracy_floor.values()), ls=":", color="tab:orange", label="accuracy floor")
    ax.axhline(result.threshold, ls="--", color="tab:red", label=f"threshold {result.threshold:.2g}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(s)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("singular value of M")
    ax.set_title(title or "Lie-derivative spectrum")
    ax.legend(fontsize=8)
    thr, dim = zip(*result.sweep)
    ax2.step(thr, dim, where="post")
    ax2.axvline(result.threshold, ls="--", color="tab:red")
    ax2.set_xscale("log")
    ax2.set_xlabel("threshold")
    ax2.set_ylabel("symmetries found (null-space dimension)")
    ax2.set_title("threshold sweep")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
