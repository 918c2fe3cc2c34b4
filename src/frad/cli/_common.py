"""Helpers shared by the subcommands: --json output, device selection."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from ..errors import ConfigError
from ..utils.io import json_default

__all__ = ["add_json_flag", "add_device_flag", "emit", "resolve_device"]


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if available), cpu, cuda, cuda:1, ...")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; anything else must be a valid torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device: {name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name!r} requested but CUDA is not available on this machine")
    return dev


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print ``payload`` as one JSON object with --json, else the human-readable ``text``."""
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, default=json_default)
        sys.stdout.write("\n")
    else:
        print(text)
