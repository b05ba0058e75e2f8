"""The ``fieldsym`` command line: ``fieldsym <command> --help`` describes each command.

Each sub-command lives with the module that does the work; this file only parses arguments and
dispatches, importing the heavy modules (torch, xarray) lazily so ``fieldsym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fieldsym import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldsym",
        description="Symmetric field-to-field learning: train, compare, discover and export "
        "Fourier neural operators whose symmetries you choose.",
    )
    parser.add_argument("--version", action="version", version=f"fieldsym {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


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
