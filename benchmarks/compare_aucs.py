"""Every AUC of two runs side by side: are they the same within a tolerance?

Reads ``detection/results.json`` (the paper's trajectory detectors) and
``detection/benchmark/results.json`` (every detector of the benchmark) of both run folders and
pairs every AUC they both hold (per attack family, macro, pooled, unseen deep features, uint8,
validation; bootstrap intervals, training histories and curves are left out).  Used to show
that a speed-up changed no result beyond noise: run the same config with it on and off, then

    python benchmarks/compare_aucs.py runs/lfw-dlib runs/lfw-dlib-control [--tol 0.01] [--json]

Prints, per file, how many AUCs were paired, the largest |difference| and every pair over
``--tol``.  Where a run stores a bootstrap interval beside an AUC (``auc_ci``,
``macro_auc_ci``), each difference is also set against that interval's half-width (the
narrower of the two runs'): the sampling noise of the AUC itself.  Exit status 0 when none is
over ``--tol``, 1 otherwise, 2 when a file is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILES = ("detection/results.json", "detection/benchmark/results.json")
SKIP = {"history", "curves", "training"}


def auc_leaves(x: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """(JSON path, value) of every number stored under a key that names an AUC (not its interval)."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in SKIP:
                yield from auc_leaves(v, (*path, str(k)))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from auc_leaves(v, (*path, str(i)))
    elif isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        named = [p.lower() for p in path[-2:]]
        if any("auc" in p and "ci" not in p for p in named) and not any(p.endswith("_ci") for p in named):
            yield "/".join(path), float(x)


def ci_half_widths(x: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """(path of the AUC, half-width of its bootstrap interval) for every ``*auc_ci`` pair stored."""
    if isinstance(x, dict):
        for k, v in x.items():
            if str(k).endswith("auc_ci") and isinstance(v, list) and len(v) == 2 and None not in v:
                yield "/".join((*path, str(k)[: -len("_ci")])), (float(v[1]) - float(v[0])) / 2
            elif k not in SKIP:
                yield from ci_half_widths(v, (*path, str(k)))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from ci_half_widths(v, (*path, str(i)))


def compare(a: Path, b: Path, tol: float) -> dict[str, Any]:
    """Per file: AUCs paired, only on one side, the largest |difference| and the pairs over ``tol``."""
    out: dict[str, Any] = {}
    for rel in FILES:
        for run in (a, b):
            if not (run / rel).is_file():
                print(f"{run / rel}: not found (has that run finished its detectors and benchmark stages?)",
                      file=sys.stderr)
                raise SystemExit(2)
        ja, jb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
        A, B = dict(auc_leaves(ja)), dict(auc_leaves(jb))
        ca, cb = dict(ci_half_widths(ja)), dict(ci_half_widths(jb))
        half = {k: min(ca[k], cb[k]) for k in ca if k in cb and min(ca[k], cb[k]) > 0}
        both = [k for k in A if k in B]
        diffs = sorted(((abs(A[k] - B[k]), k) for k in both), reverse=True)
        ratios = [d / half[k] for d, k in diffs if k in half]
        out[rel] = {
            "paired": len(both), "only_first": len(A.keys() - B.keys()), "only_second": len(B.keys() - A.keys()),
            "max_abs_diff": diffs[0][0] if diffs else None,
            "with_interval": len(ratios),
            "max_diff_over_ci_half_width": max(ratios) if ratios else None,
            "over": [{"path": k, "first": A[k], "second": B[k], "abs_diff": d, "ci_half_width": half.get(k)}
                     for d, k in diffs if d > tol],
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = compare(a.first, a.second, a.tol)
    if a.json:
        json.dump({"tol": a.tol, "files": res}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for rel, r in res.items():
            print(f"{rel}: {r['paired']} AUCs paired ({r['only_first']} only in the first, {r['only_second']} only "
                  f"in the second); largest |difference| {r['max_abs_diff']:.4f}; {len(r['over'])} over {a.tol}")
            if r["with_interval"]:
                print(f"  {r['with_interval']} with a bootstrap interval: the largest difference is "
                      f"{r['max_diff_over_ci_half_width']:.2f} of the interval's half-width")
            for o in r["over"]:
                ci = "" if o["ci_half_width"] is None else f"  (interval half-width {o['ci_half_width']:.3f})"
                print(f"  {o['abs_diff']:.4f}  {o['first']:.4f} / {o['second']:.4f}  {o['path']}{ci}")
    return 1 if any(r["over"] for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
