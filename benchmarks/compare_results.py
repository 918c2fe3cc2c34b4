"""Compare two runs' ``results.json``: equal except for timings (and where the run lives).

Used to show that a restructuring changed no result: run ``frad demo`` on the old code and on
the new, then

    python benchmarks/compare_results.py /tmp/demo-before/results.json /tmp/demo-after/results.json

Every value is compared exactly (numbers bit for bit, lists in order), except keys that hold
wall-clock times or dates (``--ignore``, a regular expression on the key; by default any key
containing ``seconds``, ``time``, ``duration``, ``elapsed``, ``started``, ``finished``,
``date`` or ``created``) and strings that name the run folder itself (``--old-dir`` /
``--new-dir``: occurrences of the one are read as the other).  Prints each difference as a
JSON path; ``--json`` prints ``{"equal", "compared", "ignored", "differences"}``.  Exit status 0
when equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

DEFAULT_IGNORE = r"seconds|time|duration|elapsed|started|finished|date|created"


def compare(old: Any, new: Any, *, ignore: re.Pattern[str], rename: tuple[str, str] | None = None,
            path: str = "$") -> tuple[list[str], int, list[str]]:
    """(differences, values compared, paths ignored) between two JSON values."""
    diffs: list[str] = []
    ignored: list[str] = []
    count = 0

    def walk(a: Any, b: Any, where: str) -> None:
        nonlocal count
        if isinstance(a, dict) and isinstance(b, dict):
            if list(a) != list(b):
                diffs.append(f"{where}: keys {sorted(set(a) ^ set(b)) or 'in another order'}")
            for k in a:
                if k not in b:
                    continue
                if ignore.search(str(k)):
                    ignored.append(f"{where}.{k}")
                    continue
                walk(a[k], b[k], f"{where}.{k}")
            return
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                diffs.append(f"{where}: {len(a)} vs {len(b)} items")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
            return
        count += 1
        if isinstance(a, str) and isinstance(b, str) and rename is not None:
            a = a.replace(rename[0], rename[1])
        same = (type(a) is type(b) and a == b) or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        if not same:
            diffs.append(f"{where}: {a!r} vs {b!r}")

    walk(old, new, path)
    return diffs, count, ignored


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path, help="results.json of the reference run")
    ap.add_argument("new", type=Path, help="results.json of the run to check")
    ap.add_argument("--ignore", default=DEFAULT_IGNORE, help="regex of keys not compared (timings)")
    ap.add_argument("--old-dir", help="the reference run's folder, as it may appear in strings")
    ap.add_argument("--new-dir", help="the checked run's folder")
    ap.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = ap.parse_args(argv)
    old = json.loads(args.old.read_text(encoding="utf-8"))
    new = json.loads(args.new.read_text(encoding="utf-8"))
    rename = (args.old_dir, args.new_dir) if args.old_dir and args.new_dir else None
    diffs, count, ignored = compare(old, new, ignore=re.compile(args.ignore), rename=rename)
    if args.json:
        print(json.dumps({"equal": not diffs, "compared": count, "ignored": ignored, "differences": diffs}, indent=2))
    else:
        for d in diffs:
            print(d)
        print(f"{'equal' if not diffs else f'{len(diffs)} difference(s)'}: {count} values compared, "
              f"{len(ignored)} timing entries ignored")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
