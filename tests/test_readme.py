"""The README's Python example runs as written (on synthetic faces)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path: Path, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "make_synthetic_faces" in b)
    script = tmp_path / "example.py"
    script.write_text(example)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "(4, 14, 6)" in out  # the trajectory shape the README promises
    assert "tensor([[True, True, True, True]])" in out  # BIM at eps 0.03 fools the head


def test_readme_names_real_commands() -> None:
    from frad.cli import build_parser

    text = README.read_text()
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for cmd in re.findall(r"`frad ([a-z-]+)", text):
        assert cmd in commands, f"README mentions `frad {cmd}`, which does not exist"


def test_public_api_names_resolve() -> None:
    """Every name ``frad`` promises is importable from the package itself, and ``import frad``
    alone loads no torch (names are imported on first use)."""
    import subprocess
    import sys

    import frad

    for name in frad.__all__:
        assert getattr(frad, name) is not None, name
    assert frad.run.__module__ == "frad.pipeline.run"
    with __import__("pytest").raises(AttributeError, match="no attribute 'nope'"):
        frad.nope  # noqa: B018
    code = "import sys, frad; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
