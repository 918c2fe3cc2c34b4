"""LFW pairs files and the verify-lfw command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from frad.cli import main
from frad.data.lfw import LFWLayout, read_pairs
from frad.errors import DataError


def test_official_pairs_file(lfw_dir: Path) -> None:
    pairs = read_pairs(LFWLayout(lfw_dir).protocol_file())
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert {p.fold for p in pairs} == set(range(10))
    first = pairs[0]
    assert (first.name1, first.num1, first.num2, first.same) == ("Abel_Pacheco", 1, 4, True)
    assert pairs[300].same is False and pairs[300].fold == 0
    assert len({k for p in pairs for k in p.keys}) == 7701
    assert len(LFWLayout(lfw_dir).resolve({k for p in pairs for k in p.keys})) == 7701


def test_view1_files(lfw_dir: Path) -> None:
    layout = LFWLayout(lfw_dir)
    assert len(read_pairs(layout.protocol_file("pairsDevTrain.txt"))) == 2200
    assert len(read_pairs(layout.protocol_file("pairsDevTest.txt"))) == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("two 3\n", "header"),
        ("1 1\nA\t1\t2\n", "promises 2 pairs"),
        ("1 1\nA\t1\nB\t1\tC\t2\n", ":2: a matched pair"),
        ("1 1\nA\t1\t2\nB\t1\tC\n", ":3: a mismatched pair"),
        ("1 1\nA\tx\t2\nB\t1\tC\t2\n", ":2:"),
        ("1 1\nA\t0\t2\nB\t1\tC\t2\n", "start at 1"),
    ],
)
def test_bad_pairs_file_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_pairs(p)


def _mini_lfw(lfw_dir: Path, root: Path) -> Path:
    """A two-fold LFW folder of real images: 2 matched + 2 mismatched pairs per fold."""
    people = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
    for name in people:
        (root / name).mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(lfw_dir / "images" / name / f"{name}_{n:04d}.jpg", root / name)
    (root / "pairs.txt").write_text(
        "2\t2\n"
        "Colin_Powell\t1\t2\nTony_Blair\t1\t2\n"
        "Colin_Powell\t1\tTony_Blair\t2\nDonald_Rumsfeld\t1\tGerhard_Schroeder\t1\n"
        "Donald_Rumsfeld\t1\t2\nGerhard_Schroeder\t1\t2\n"
        "Colin_Powell\t2\tGerhard_Schroeder\t2\nTony_Blair\t1\tDonald_Rumsfeld\t2\n"
    )
    return root


def test_verify_lfw_command_json(lfw_dir: Path, tmp_path: Path, capsys) -> None:
    root = _mini_lfw(lfw_dir, tmp_path / "lfw")
    assert main(["verify-lfw", "--data", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "accuracy_std", "auc", "eer_threshold", "pairs"):
        assert key in out
    assert out["pairs"] == 8 and out["folds"] == 2 and out["metric"] == "euclidean"
    assert out["auc"] == 1.0 and out["accuracy"] == 1.0
    assert 0.3 < out["eer_threshold"] < 1.0  # dlib's own rule is 0.6
    assert sum(out["alignment"].values()) == 8
    assert main(["verify-lfw", "--data", str(root), "--metric", "cosine"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "cosine" in text


def test_verify_lfw_missing_image_is_one_clear_error(lfw_dir: Path, tmp_path: Path, capsys) -> None:
    root = _mini_lfw(lfw_dir, tmp_path / "lfw")
    (root / "Tony_Blair" / "Tony_Blair_0002.jpg").unlink()
    assert main(["verify-lfw", "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "Tony_Blair/Tony_Blair_0002.jpg" in err and err.count("\n") == 1
