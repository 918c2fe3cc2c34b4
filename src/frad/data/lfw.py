"""Labeled Faces in the Wild: locating a local copy, and its pairs protocol files.

A local LFW folder may be laid out as the official archives unpack (``<root>/<Name>/<Name>_0001.jpg``,
possibly one level down in ``lfw/``, ``lfw_funneled/`` or ``lfw-deepfunneled/``), or as the
subset shipped with frad's test data (``images/`` plus ``pairs-images/``, protocol files in
``protocol/``).  :class:`LFWLayout` hides the difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

__all__ = ["Pair", "read_pairs", "LFWLayout", "pairs_folds"]

_IMAGE_DIRS = ("images", "pairs-images", "lfw-deepfunneled", "lfw_funneled", "lfw", ".")
_PROTOCOL_DIRS = ("protocol", ".", "lfw")


@dataclass(frozen=True)
class Pair:
    """One verification pair of the LFW protocol (image numbers start at 1)."""

    fold: int
    name1: str
    num1: int
    name2: str
    num2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    @property
    def keys(self) -> tuple[str, str]:
        return image_key(self.name1, self.num1), image_key(self.name2, self.num2)


def image_key(name: str, num: int) -> str:
    """LFW's relative path of image ``num`` of ``name``: ``Name/Name_0001.jpg``."""
    return f"{name}/{name}_{num:04d}.jpg"


def read_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Parse an LFW pairs file (``pairs.txt`` or ``pairsDevTrain/Test.txt``).

    The header gives the number of folds and of pairs of each kind per fold (a single
    number for the View 1 files, which have one fold); each fold lists its matched pairs,
    then its mismatched pairs.  Any deviation raises :class:`DataError` naming the line.
    """
    path = Path(path)
    try:
        lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise DataError(f"{path}: cannot read LFW pairs file ({exc.strerror})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty LFW pairs file")
    head = lines[0].split()
    try:
        if len(head) == 1:
            folds, per = 1, int(head[0])
        elif len(head) == 2:
            folds, per = int(head[0]), int(head[1])
        else:
            raise ValueError
    except ValueError:
        raise DataError(f"{path}:1: expected a header 'folds pairs_per_fold', got {lines[0]!r}") from None
    expected = folds * per * 2
    if len(lines) - 1 != expected:
        raise DataError(f"{path}: header promises {expected} pairs, file has {len(lines) - 1} lines")
    pairs: list[Pair] = []
    for i, line in enumerate(lines[1:]):
        lineno = i + 2
        fold, pos = divmod(i, 2 * per)
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            if pos < per:
                if len(parts) != 3:
                    raise ValueError("a matched pair needs 'name n1 n2'")
                pair = Pair(fold, parts[0], int(parts[1]), parts[0], int(parts[2]))
            else:
                if len(parts) != 4:
                    raise ValueError("a mismatched pair needs 'name1 n1 name2 n2'")
                pair = Pair(fold, parts[0], int(parts[1]), parts[2], int(parts[3]))
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: {exc}: {line!r}") from None
        if pair.num1 < 1 or pair.num2 < 1:
            raise DataError(f"{path}:{lineno}: image numbers start at 1: {line!r}")
        pairs.append(pair)
    return pairs


def pairs_folds(pairs: Sequence[Pair]) -> list[int]:
    return [p.fold for p in pairs]


class LFWLayout:
    """Resolves LFW image keys and protocol files inside a local LFW folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: LFW folder not found")
        self.image_dirs = [self.root / d for d in _IMAGE_DIRS if (self.root / d).is_dir()]

    def protocol_file(self, name: str = "pairs.txt") -> Path:
        for d in _PROTOCOL_DIRS:
            p = self.root / d / name
            if p.is_file():
                return p
        raise DataError(f"{self.root}: no {name} found (looked in {', '.join(_PROTOCOL_DIRS)})")

    def image_path(self, key: str) -> Path:
        """The file for key ``Name/Name_0001.jpg``; :class:`DataError` if it is missing."""
        for d in self.image_dirs:
            p = d / key
            if p.is_file():
                return p
        raise DataError(f"{self.root}: LFW image {key} not found")

    def resolve(self, keys: Iterable[str]) -> dict[str, Path]:
        """Paths of all ``keys``; one error listing every missing image (up to 10)."""
        out: dict[str, Path] = {}
        missing: list[str] = []
        for k in keys:
            try:
                out[k] = self.image_path(k)
            except DataError:
                missing.append(k)
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise DataError(f"{self.root}: {len(missing)} LFW image(s) missing: {shown}")
        return out
