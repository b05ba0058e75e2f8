"""The ``fieldsym`` command line: ``fieldsym <command> --help`` describes each command.

Each sub-command lives with the module that does the work; this file only parses arguments and
dispatches, importing the heavy modules (torch, xarray) lazily so ``fieldsym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
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
    _add_train(subparsers)
    return parser


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
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from fieldsym.checkpoint import CheckpointError
    from fieldsym.config import ConfigError, load_config
    from fieldsym.data.schema import DatasetError
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
    except (ConfigError, DatasetError, CheckpointError, TrainingDiverged) as error:
        log.error("%s", error)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
