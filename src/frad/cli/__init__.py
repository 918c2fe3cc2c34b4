"""The ``frad`` command: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import FradError

__all__ = ["main", "build_parser"]

# Each module defines ``register(subparsers)``; order is the order shown in --help.
COMMAND_MODULES = [
    "frad.cli.models_cmd",
    "frad.cli.verify_cmd",
    "frad.cli.run_cmd",
    "frad.cli.demo_cmd",
    "frad.cli.data_cmd",
    "frad.cli.serve_cmd",
    "frad.cli.detect_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frad",
        description="Attack face recognition systems with adversarial examples, and detect the attacks.",
    )
    parser.add_argument("--version", action="version", version=f"frad {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except FradError as exc:
        print(f"frad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frad: interrupted; finished work is kept and the next run resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
