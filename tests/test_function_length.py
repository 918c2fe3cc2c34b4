"""No function in src/frad longer than 80 lines unless its docstring says why.

A long function is allowed when it is naturally one piece (a dispatch table, a graph
reader's op-by-op loop, a route table); its docstring then carries a line starting with
"Long because" that says so.  Everything else is split into named steps.  The count runs
from the ``def`` line to the last line of the body, nested functions counted on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frad"
LIMIT = 80
MARKER = "long because"


def _long_functions(root: Path) -> list[tuple[str, int, bool]]:
    """(where, length, has the marker) of every function longer than LIMIT under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length <= LIMIT:
                continue
            doc = ast.get_docstring(node) or ""
            marked = any(line.strip().lower().startswith(MARKER) for line in doc.splitlines())
            out.append((f"{path.relative_to(root.parent)}:{node.lineno} {node.name}", length, marked))
    return out


def test_long_functions_say_why() -> None:
    bad = [f"{where} ({n} lines)" for where, n, marked in _long_functions(SRC) if not marked]
    assert not bad, (f"functions over {LIMIT} lines without a 'Long because ...' line in their docstring "
                     "(split them into named steps, or say why they are one piece):\n" + "\n".join(bad))


def test_the_check_sees_long_and_marked_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "frad"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (pkg / "m.py").write_text(
        f"def short():\n    return 1\n\n\ndef long_one():\n{body}\n\n\n"
        f"class C:\n    def long_marked(self):\n        '''What.\n\n        Long because: a table.\n        '''\n"
        + "\n".join(f"        y{i} = {i}" for i in range(LIMIT)) + "\n",
        encoding="utf-8",
    )
    found = {where.split()[-1]: (n, marked) for where, n, marked in _long_functions(pkg)}
    assert found == {"long_one": (LIMIT + 1, False), "long_marked": (LIMIT + 5, True)}
