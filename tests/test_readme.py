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
