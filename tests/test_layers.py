"""The import contract: frad's layers only point down.

errors < utils, kinds < models < data < recognition < attacks, detection < evaluation <
pipeline < service < cli.  ``attacks`` and ``detection`` are siblings and import neither
each other.  Every import is read from the source (also those inside functions), so a lazy
import that points up fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frad"

LAYERS: dict[str, int] = {
    "errors": 0,
    "utils": 1, "configs": 1, "kinds": 1,
    "models": 2,
    "data": 3,
    "recognition": 4,
    "attacks": 5, "detection": 5,
    "evaluation": 6,
    "pipeline": 7,
    "service": 8,
    "cli": 9,
}
TOP = {"__init__", "__main__"}  # the package front door may import any layer


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_packages(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, top-level frad package) for every frad import in ``path`` (a file under ``root``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = list(path.relative_to(root).parts[:-1])  # the module's package, relative to frad
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from . import x" at the package root, or "from .. import x"
                    parts = [a.name for a in node.names][:1]
            elif node.module and node.module.split(".")[0] == "frad":
                parts = node.module.split(".")[1:] or [a.name for a in node.names][:1]
            else:
                continue
            out.append((node.lineno, parts[0]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                names = a.name.split(".")
                if names[0] == "frad" and len(names) > 1:
                    out.append((node.lineno, names[1]))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "configs" not in p.parts or p.name != "__init__.py")


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(p) for p in _modules()} - TOP
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    pkg = _package_of(path)
    if pkg in TOP:
        return
    level = LAYERS[pkg]
    bad = [
        f"{path.relative_to(SRC)}:{line} imports frad.{target} ({LAYERS.get(target)}) from {pkg} ({level})"
        for line, target in _imported_packages(path)
        if target in LAYERS and target != pkg and LAYERS[target] >= level
    ]
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_the_reader_resolves_every_form_of_import(tmp_path: Path) -> None:
    """Relative imports at any depth, absolute ones and lazy ones inside functions are all seen."""
    probe = tmp_path / "models" / "sub" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import frad.cli\n"
        "from frad.data import folders\n"
        "from . import x\n"
        "from ...utils import io\n"
        "def f():\n    from ...pipeline import run\n    return run\n",
        encoding="utf-8",
    )
    assert _imported_packages(probe, tmp_path) == [(1, "cli"), (2, "data"), (3, "models"), (4, "utils"), (6, "pipeline")]
