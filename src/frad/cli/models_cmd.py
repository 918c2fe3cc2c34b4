"""``frad models``: list the registered face models and their taps."""

from __future__ import annotations

import argparse

from ._common import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered face models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'dlib*'")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.registry import list_models, model_entry

    rows = []
    for name in list_models(args.pattern):
        e = model_entry(name)
        rows.append({"name": name, "description": e.description, "needs_weights": e.needs_weights})
    text = "\n".join(f"{r['name']:<24} {r['description']}" + ("  [needs a weight file]" if r["needs_weights"] else "") for r in rows)
    emit(args, {"models": rows}, text or "no models match")
    return 0
