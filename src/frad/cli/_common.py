"""Helpers shared by the subcommands: the --json and --device flags and --json output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..utils.io import json_default

__all__ = ["add_json_flag", "add_device_flag", "emit"]


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if available), cpu, cuda, cuda:1, ...")


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print ``payload`` as one JSON object with --json, else the human-readable ``text``."""
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, default=json_default)
        sys.stdout.write("\n")
    else:
        print(text)
