"""The ``fieldsym`` command line: ``fieldsym <command> --help`` describes each command.

Each sub-command lives with the module that does the work; this file only parses arguments and
dispatches, importing the heavy modules (torch, xarray) lazily so ``fieldsym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fieldsym import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldsym",
        description="Symmetric field-to-field learning: train, compare, discover and export "
        "Fourier neural operators whose symmetries you choose.",
    )
    parser.add_argument("--version", action="version", version=f"fieldsym {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(subparsers)
    _add_report(subparsers)
    _add_train(subparsers)
    _add_export(subparsers)
    _add_predict(subparsers)
    _add_discover(subparsers)
    parser.subcommands = subparsers.choices  # name -> its parser, for main's own error messages
    return parser


def _add_run(subparsers) -> None:
    run = subparsers.add_parser(
        "run", help="run an experiment: data, every run, results table, report",
        description="Expand a config into runs (operator x training size x seed), generate missing data once, "
        "train and evaluate each run (test split, quarter-turned test split, equivariance errors, discovery) "
        "and write results.csv, results.nc and report.html/report.md under <experiment.out>/<experiment.name>. "
        "Finished runs are skipped and a half-finished one resumes, so rerun the same command after an "
        "interruption.",
    )
    run.add_argument("config", type=Path, help="experiment config (YAML), e.g. configs/quickstart.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config overrides with dotted keys, e.g. training.epochs=3 experiment.seeds=[0,1]")
    run.add_argument("--no-report", action="store_true", help="write the results table only")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fieldsym.checkpoint import CheckpointError
    from fieldsym.config import ConfigError, load_config
    from fieldsym.data.schema import DatasetError
    from fieldsym.runner import RunnerError, run_experiment
    from fieldsym.train import TrainingDiverged

    try:
        out = run_experiment(load_config(args.config, args.overrides), report=not args.no_report)
    except (ConfigError, DatasetError, CheckpointError, TrainingDiverged, RunnerError) as error:
        logging.getLogger("fieldsym.run").error("%s", error)
        return 1
    except KeyboardInterrupt:
        logging.getLogger("fieldsym.run").warning("interrupted: run the same command again to continue "
                                                  "(finished runs are kept, the current one resumes)")
        return 130
    print(f"results: {out / 'results.csv'}")
    if not args.no_report:
        print(f"report: {out / 'report.html'} (and report.md)")
    return 0


def _add_report(subparsers) -> None:
    report = subparsers.add_parser(
        "report", help="(re)write the report of an experiment directory",
        description="Write report.md, report.html and figures/*.png from an experiment directory written by "
        "`fieldsym run`: comparison table, test vs quarter-turned test error, learning curves, equivariance "
        "errors, discovery spectra and example fields.",
    )
    report.add_argument("exp_dir", type=Path, metavar="EXP_DIR", help="<experiment.out>/<experiment.name>")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from fieldsym.report import ReportError, write_report

    try:
        page = write_report(args.exp_dir)
    except ReportError as error:
        logging.getLogger("fieldsym.report").error("%s", error)
        return 1
    print(f"report: {page} (and report.md)")
    return 0


def _add_train(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train the operators of a config",
        description="Train one operator of an experiment config (or each in turn), writing metrics.csv, "
        "TensorBoard events and checkpoints (last.pt, best.pt).",
    )
    train.add_argument("config", type=Path, help="experiment config (YAML)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides with dotted keys, e.g. training.epochs=3 "
                       "operators[0].options.hidden_channels=16")
    train.add_argument("--out", type=Path, default=None,
                       help="output folder (default: <experiment.out>/<experiment.name>/<operator>); with "
                       "several operators each gets a sub-folder")
    train.add_argument("--operator", default=None, help="train only the operator of this name")
    train.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    train.epilog = ("Data-parallel: torchrun --nproc-per-node N -m fieldsym train CONFIG (NCCL on GPUs, gloo on "
                    "CPU; training.batch_size is per process). See docs/distributed.md.")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from fieldsym.checkpoint import CheckpointError
    from fieldsym.config import ConfigError, load_config
    from fieldsym.data.schema import DatasetError
    from fieldsym.distributed import PeerFailure, teardown
    from fieldsym.train import TrainingDiverged, train

    log = logging.getLogger("fieldsym.train")
    try:
        config = load_config(args.config, args.overrides)
        names = [args.operator] if args.operator else [op.name for op in config.operators]
        for name in names:
            out = args.out if args.out is None or len(names) == 1 else args.out / name
            result = train(config, out, resume=args.resume, operator=name)
            log.info("%s: best valid relative L2 %.4g at epoch %d; checkpoints in %s", name, result.best_valid,
                     result.best_epoch, result.out_dir)
    except (ConfigError, DatasetError, CheckpointError, TrainingDiverged, PeerFailure) as error:
        log.error("%s", error)
        return 1
    finally:
        teardown()
    return 0


def _add_export(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a trained operator (pt2, onnx, safetensors) with a model card",
        description="Export the operator of a training run as a torch.export program (pt2), an ONNX graph "
        "(onnx) or its weights (safetensors), with model_card.json/.md: field types, grid, normalisation, data "
        "provenance, errors, and equivariance errors measured on the exported file.",
    )
    export.add_argument("run", type=Path, help="run directory (uses best.pt, else last.pt) or checkpoint file")
    export.add_argument("--format", required=True, choices=("pt2", "onnx", "safetensors"))
    export.add_argument("--dynamic-shapes", action="store_true",
                        help="let the grid size vary too (the batch size always may)")
    export.add_argument("--out", type=Path, default=None, help="export directory (default: RUN/export/FORMAT)")
    export.add_argument("--data", type=Path, default=None,
                        help="the run's data file, when it is no longer where the config says")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from fieldsym.checkpoint import CheckpointError
    from fieldsym.data.schema import DatasetError
    from fieldsym.export import ExportError, export_run

    try:
        out = export_run(args.run, args.format, args.out, dynamic_shapes=args.dynamic_shapes, data=args.data)
    except (ExportError, CheckpointError, DatasetError) as error:
        logging.getLogger("fieldsym.export").error("%s", error)
        return 1
    print(out)
    return 0


def _add_predict(subparsers) -> None:
    predict = subparsers.add_parser(
        "predict", help="run an exported operator on a schema-1 file",
        description="Apply an export (its directory or model file; pt2, onnx or safetensors) to the input "
        "fields its model card names, read from a schema-1 file, and write the outputs as a schema-1 file "
        "with provenance attributes (export file and SHA-256, input file).",
    )
    predict.add_argument("export", type=Path, help="export directory or model file")
    predict.add_argument("input", type=Path, help="schema-1 netCDF file with the input fields")
    predict.add_argument("output", type=Path, help="netCDF file to write")
    predict.add_argument("--t-in", type=int, default=None,
                         help="first input time index (negative counts from the end; default: the training task's)")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from fieldsym.data.schema import DatasetError
    from fieldsym.export import ExportError, predict

    try:
        out = predict(args.export, args.input, args.output, t_in=args.t_in, batch_size=args.batch_size)
    except (ExportError, DatasetError, ValueError) as error:
        logging.getLogger("fieldsym.predict").error("%s", error)
        return 1
    print(out)
    return 0


def _add_discover(subparsers) -> None:
    discover = subparsers.add_parser(
        "discover", help="discover which symmetries a trained operator has",
        description="Stack the Lie derivatives of a trained operator over candidate generators on held-out "
        "inputs, and report the singular values (with bootstrap errors and the discretisation floor), the "
        "gap, a threshold sweep and the symmetries as named combinations (e.g. '0.71 Tx - 0.71 Ty'), plus "
        "quarter-turn and reflection errors. Writes discovery.json and discovery.png.",
    )
    discover.add_argument("run", type=Path, help="run directory (uses best.pt, else last.pt) or checkpoint file")
    discover.add_argument("--data", type=Path, default=None,
                          help="netCDF file to draw inputs from (default: the run's test split)")
    discover.add_argument("--samples", type=int, default=8, help="held-out inputs to use (default 8)")
    discover.add_argument("--candidates", default=None,
                          help="candidate algebra, e.g. 'se2', 'sim2+scalings', 'Tx+Ty+R' "
                          "(default: sim2+scalings when input and output types agree, else sim2)")
    discover.add_argument("--out", type=Path, default=None, help="output folder (default: the run directory)")
    discover.set_defaults(func=_discover)


def _discover(args: argparse.Namespace) -> int:
    from fieldsym.checkpoint import CheckpointError
    from fieldsym.config import ConfigError
    from fieldsym.data.schema import DatasetError
    from fieldsym.discover_run import discover_run

    try:
        result, out = discover_run(args.run, args.data, args.samples, args.candidates, args.out)
    except (CheckpointError, ConfigError, DatasetError, FileNotFoundError, ValueError) as error:
        logging.getLogger("fieldsym.discover").error("%s", error)
        return 1
    print(result.table())
    print(f"wrote {out / 'discovery.json'} and {out / 'discovery.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (`train CONFIG --operator fno training.epochs=2`):
    # argparse stops filling a positional list at the first option.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    # Under torchrun (RANK set) rank 0 logs progress; the other ranks only warnings and errors, tagged.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=(logging.DEBUG if args.verbose else logging.INFO) if rank == "0" else logging.WARNING,
        format=("" if rank == "0" else f"[rank {rank}] ") + "%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
