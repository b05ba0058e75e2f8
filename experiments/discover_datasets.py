"""Which symmetries do operators trained on generated datasets have? (issue 6)

    .venv/bin/python experiments/discover_datasets.py [--out experiments/discovery] [--epochs 30]

For each dataset an unconstrained FNO *with* its positional embedding (so it can break every candidate)
is trained on one-step maps ``u(t=0) -> u(t=T)``, then :func:`fieldsym.discover` is run on held-out
inputs over the candidates ``Tx, Ty, R``, and quarter turns and reflections are tested directly.
Expected (from the PDEs): unforced NS keeps ``Tx, Ty, R``; the FNO forcing depends on ``x + y``, so only
``Tx - Ty`` survives; NS-sym keeps the quarter turns and reflections about the centre but no continuous
translation; the buoyancy flow keeps ``Tx, Ty`` always and ``R`` only at zero strength. For the
buoyancy sweep the script also trains the mixed-symmetry mode (Kim et al.) and reports the learned
strengths, which should fall as the breaking grows.

Writes ``results.md``, ``results.json`` and ``spectra.png`` into ``--out``. Data and runs go to
``--work`` (default ``runs/discovery``), so a second call reuses the generated data and finished runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from fieldsym.checkpoint import load_checkpoint
from fieldsym.config import ExperimentConfig
from fieldsym.discover_run import discover_run

NS = {"nu": 1e-3, "t_final": 1.0, "record_steps": 1, "dt": 1e-2}
CASES = {
    "ns_unforced": ("navier_stokes", NS | {"forcing": "none"}, ["vorticity"], "Tx, Ty, R"),
    "ns_fno_forcing": ("navier_stokes", NS | {"forcing": "fno"}, ["vorticity"], "Tx - Ty only"),
    "ns_sym": ("navier_stokes", NS | {"forcing": "nssym"}, ["vorticity"], "D4 about the centre; no Tx, Ty"),
}
BUOYANCY = (0.0, 0.5, 2.0)
for beta in BUOYANCY:
    CASES[f"buoyancy_{beta:g}"] = (
        "buoyancy", {"buoyancy": beta, "t_final": 1.0, "record_steps": 1, "dt": 1e-2},
        ["velocity", "temperature"], "Tx, Ty" + (", R" if beta == 0 else ""))


# --operator residual_promoted: the operator that was best on both rotation datasets (experiments/README.md,
# "How strongly to promote"): a C4 GroupFNO plus a gated FNO with its grid embedding, promoted.
RESIDUAL = {"kind": "residual",
            "options": {"equivariant": {"kind": "gfno", "group": "C4", "n_modes": 12, "hidden_channels": 6,
                                        "n_layers": 4},
                        "free": {"kind": "fno", "n_modes": [12, 12], "hidden_channels": 11, "n_layers": 4,
                                 "positional_embedding": True}},
            "symmetry": {"mode": "promoted", "candidates": ["Tx", "Ty", "R"], "elements": "C4", "gamma": 0.003,
                         "ramp_epochs": 10}}


def config(name, solver, params, fields, mode, args) -> ExperimentConfig:
    if mode == "residual_promoted":
        operator = {"name": mode, **RESIDUAL}
    else:
        symmetry = ({"mode": "mixed", "generators": ["Tx", "Ty", "R"], "gamma": 0.1, "update_epochs": [4, 8, 12, 16]}
                    if mode == "mixed" else "none")
        operator = {"name": mode, "kind": "fno", "symmetry": symmetry,
                    "options": {"n_modes": [12, 12], "hidden_channels": 24, "n_layers": 4}}
    return ExperimentConfig.from_dict({
        "dataset": {"generate": {"solver": solver, "samples": args.samples, "resolution": args.resolution,
                                 "params": params}},
        "task": {"inputs": fields, "outputs": fields},
        "operators": [operator],
        "training": {"epochs": args.epochs, "batch_size": 16, "optimizer": {"lr": 3e-3}, "device": "cpu"},
        "experiment": {"name": name, "out": str(args.work)},
    }, name)


def trained(cfg: ExperimentConfig, run: Path) -> Path:
    from fieldsym.train import train

    if not (run / "last.pt").exists() or len(load_checkpoint(run / "last.pt")["metrics"]) < cfg.training.epochs:
        train(cfg, run, resume=(run / "last.pt").exists())
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/discovery"))
    parser.add_argument("--work", type=Path, default=Path("runs/discovery"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--operator", choices=("fno", "residual_promoted"), default="fno",
                        help="what to train and discover on (fno: unconstrained FNO with its grid embedding)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE",
                        help=f"datasets (default: all of {', '.join(CASES)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    for name in args.cases:
        solver, params, fields, expected = CASES[name]
        run = trained(config(name, solver, params, fields, args.operator, args), args.work / name / args.operator)
        result, _ = discover_run(run, samples=16, candidates="se2", out=run)
        metrics = load_checkpoint(run / "last.pt")["best"]
        row = {"expected": expected, "found": result.symmetries, "singular_values": result.singular_values,
               "floor": result.floor, "vectors": result.vectors, "candidates": result.candidates,
               "discrete": result.discrete_errors, "column_norms": result.column_norms,
               "accuracy_floor": result.accuracy_floor, "threshold": result.threshold, "rule": result.rule,
               "valid_rel_l2": float(metrics["valid"]) if isinstance(metrics, dict) else metrics}
        if solver == "buoyancy" and args.operator == "fno":
            mixed = trained(config(name, solver, params, fields, "mixed", args), args.work / name / "mixed")
            row["mixed_levels"] = load_checkpoint(mixed / "last.pt")["penalty"]["strengths"]
        results[name] = row
        logging.info("%s: found %s (expected %s)", name, result.symmetries, expected)

    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "results.md").write_text(markdown(results, args))
    plot(results, args.out / "spectra.png", args.operator)


def markdown(results, args) -> str:
    lines = [f"Command: `.venv/bin/python experiments/discover_datasets.py --operator {args.operator} --epochs {args.epochs} "
             f"--samples {args.samples} --resolution {args.resolution}`", "",
             "| dataset | valid rel. L2 | singular values (se2) | accuracy floor | threshold | found | expected | "
             "r1 err | flip_x err | R column | mixed levels Tx/Ty/R |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        sv = ", ".join(f"{s:.2g}" for s in r["singular_values"])
        levels = "/".join(f"{r['mixed_levels'][g]:.2g}" for g in ("Tx", "Ty", "R")) if "mixed_levels" in r else ""
        accuracy = max(r["accuracy_floor"].values(), default=float("nan"))
        lines.append(f"| {name} | {r['valid_rel_l2']:.3f} | {sv} | {accuracy:.2g} | {r['threshold']:.2g} | "
                     f"{'; '.join(r['found']) or 'none'} | "
                     f"{r['expected']} | {r['discrete'].get('r1', float('nan')):.2g} | "
                     f"{r['discrete'].get('flip_x', float('nan')):.2g} | {r['column_norms']['R']:.2g} | {levels} |")
    return "\n".join(lines) + "\n"


def plot(results, path: Path, operator: str = "fno") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, r) in enumerate(results.items()):
        s = torch.tensor(r["singular_values"]).clamp_min(1e-8)
        ax.semilogy([i] * len(s), s.tolist(), "o", color="tab:blue")
        if r["floor"]:
            ax.semilogy([i + 0.15] * len(r["floor"]), r["floor"], "x", color="grey")
        ax.plot([i - 0.25, i + 0.25], [r["threshold"]] * 2, "-", color="tab:red")
    ax.set_xticks(range(len(results)), list(results), rotation=25, ha="right")
    ax.set_ylabel("singular values of M (relative)\nx = discretisation floor, bar = threshold")
    ax.set_title(f"Lie-derivative spectra of trained operators ({operator}) over Tx, Ty, R")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
