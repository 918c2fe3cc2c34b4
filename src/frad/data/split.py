"""The paper's protocol as a deterministic split of an identity dataset, saved as a manifest.

Per identity (Massoli et al., Sec. 5.1): ``n_natural`` images form the detector's natural
set (and are the identification probes), ``n_source`` other images are the ones attacked,
and the rest train / validate / test the classifier head (``head_fractions``).  Identities
with fewer than ``n_natural + n_source + min_head_images`` images are dropped and reported.

Each identity's images are sorted by id and shuffled by a generator seeded with ``(seed,
hash of the identity name)``, so the split is identical across runs with the same seed,
changes with the seed, and an identity's split does not depend on which other identities
are present.  A source image keeps its role, so its adversarials (which inherit the
source's id) never cross into the head's or the natural set.

:meth:`ProtocolSplit.write` saves ``split.csv`` (one row per image: image_id, path, identity,
label, role, sha256, index) and ``split.json`` (settings, dataset provenance including the
``synthetic`` flag, classes, dropped identities, counts, the CSV's sha256), both atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..utils.io import atomic_write_bytes, read_json, write_json
from ..utils.seeding import stable_int
from .folders import FaceDataset

__all__ = ["ROLES", "HEAD_ROLES", "SplitSettings", "SplitRow", "ProtocolSplit", "make_split", "read_split"]

ROLES = ("natural", "source", "train", "val", "test")
#: Roles whose images the classifier head and the FR system's templates/threshold may use.
HEAD_ROLES = ("train", "val", "test")
CSV_NAME = "split.csv"
JSON_NAME = "split.json"
_COLUMNS = ["image_id", "path", "identity", "label", "role", "sha256", "index"]


@dataclass(frozen=True)
class SplitSettings:
    """How to split: per-identity counts, the head's train/val/test fractions, the seed."""

    n_natural: int = 10
    n_source: int = 10
    head_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_head_images: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_natural", "n_source", "min_head_images", "seed"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"split.{name} must be an integer >= 0, got {v!r}")
        fr = tuple(float(f) for f in self.head_fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or fr[0] <= 0 or sum(fr) <= 0:
            raise ConfigError(
                f"split.head_fractions must be three non-negative numbers (train, val, test) with train > 0, "
                f"got {self.head_fractions!r}"
            )
        object.__setattr__(self, "head_fractions", tuple(f / sum(fr) for f in fr))
        need = sum(1 for f in fr if f > 0)
        if self.min_head_images < need:
            raise ConfigError(
                f"split.min_head_images must be >= {need} (one image per non-empty head split), got {self.min_head_images}"
            )

    @property
    def min_images(self) -> int:
        """Images an identity needs to be kept."""
        return self.n_natural + self.n_source + self.min_head_images


@dataclass(frozen=True)
class SplitRow:
    """One image of the manifest.  ``index`` is its row in the dataset the split was made from."""

    image_id: str
    path: str
    identity: str
    label: int
    role: str
    sha256: str
    index: int


def _identity_seed(seed: int, identity: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_int(identity)]))


def _head_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split ``n`` head images into (train, val, test): rounded shares, >= 1 for a non-zero share."""
    _, fv, ft = fractions
    n_val = max(1, round(fv * n)) if fv > 0 else 0
    n_test = max(1, round(ft * n)) if ft > 0 else 0
    while n - n_val - n_test < 1:  # keep at least one training image
        if n_val >= n_test and n_val > (1 if fv > 0 else 0):
            n_val -= 1
        elif n_test > (1 if ft > 0 else 0):
            n_test -= 1
        else:
            raise ConfigError(f"cannot split {n} head images into train/val/test")
    return n - n_val - n_test, n_val, n_test


class ProtocolSplit:
    """The split of one dataset: manifest rows, the kept classes, settings and provenance."""

    def __init__(
        self,
        rows: list[SplitRow],
        classes: list[str],
        settings: SplitSettings,
        dataset: dict[str, Any],
        dropped: dict[str, int],
    ) -> None:
        self.rows = rows
        self.classes = classes
        self.settings = settings
        self.dataset = dataset
        self.dropped = dropped

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        c = self.counts()
        tag = ", synthetic" if self.synthetic else ""
        return f"ProtocolSplit({len(self.classes)} identities, " + ", ".join(f"{r} {c[r]}" for r in ROLES) + f"{tag})"

    @property
    def synthetic(self) -> bool:
        return bool(self.dataset.get("synthetic", False))

    def _check_roles(self, roles: tuple[str, ...]) -> None:
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ConfigError(f"unknown split role(s) {bad}; roles are {', '.join(ROLES)}")

    def mask(self, *roles: str) -> np.ndarray:
        """Boolean mask over the manifest rows with one of ``roles``."""
        self._check_roles(roles)
        return np.array([r.role in roles for r in self.rows], dtype=bool)

    def indices(self, *roles: str) -> np.ndarray:
        """Dataset row indices of the images with one of ``roles`` (manifest order)."""
        self._check_roles(roles)
        return np.array([r.index for r in self.rows if r.role in roles], dtype=np.int64)

    def labels(self, *roles: str) -> np.ndarray:
        """Class labels (indices into ``classes``) of the images with one of ``roles`` (all if none given)."""
        if roles:
            self._check_roles(roles)
        return np.array([r.label for r in self.rows if not roles or r.role in roles], dtype=np.int64)

    def image_ids(self, *roles: str) -> list[str]:
        if roles:
            self._check_roles(roles)
        return [r.image_id for r in self.rows if not roles or r.role in roles]

    def counts(self) -> dict[str, int]:
        c = Counter(r.role for r in self.rows)
        return {role: c.get(role, 0) for role in ROLES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "dataset": self.dataset,
            "identities": len(self.classes),
            "classes": self.classes,
            "counts": self.counts(),
            "dropped_identities": self.dropped,
        }

    def csv_bytes(self) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_COLUMNS)
        for r in self.rows:
            w.writerow([r.image_id, r.path, r.identity, r.label, r.role, r.sha256, r.index])
        return buf.getvalue().encode("utf-8")

    def write(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``split.csv`` and ``split.json`` into ``run_dir`` (atomically); return the CSV path."""
        run_dir = Path(run_dir)
        data = self.csv_bytes()
        atomic_write_bytes(run_dir / CSV_NAME, data)
        write_json(
            run_dir / JSON_NAME,
            {**self.to_dict(), "manifest": CSV_NAME, "manifest_sha256": hashlib.sha256(data).hexdigest()},
        )
        return run_dir / CSV_NAME


def make_split(dataset: FaceDataset, settings: SplitSettings | None = None, **overrides: Any) -> ProtocolSplit:
    """Split ``dataset`` by the paper's protocol (``settings`` or keyword overrides of its fields)."""
    if settings is None:
        settings = SplitSettings(**overrides)
    elif overrides:
        settings = SplitSettings(**{**asdict(settings), **overrides})
    per_class: dict[int, list[int]] = {}
    for i, im in enumerate(dataset.images):
        per_class.setdefault(im.label, []).append(i)
    kept: list[str] = []
    dropped = dict(dataset.dropped)
    for label, name in enumerate(dataset.classes):
        n = len(per_class.get(label, []))
        if n >= settings.min_images:
            kept.append(name)
        else:
            dropped[name] = n
    if len(kept) < 2:
        raise DataError(
            f"dataset {dataset.name!r}: only {len(kept)} identit{'y has' if len(kept) == 1 else 'ies have'} the "
            f"{settings.min_images} images the split needs (n_natural {settings.n_natural} + n_source "
            f"{settings.n_source} + min_head_images {settings.min_head_images}); at least 2 are needed"
        )
    new_label = {name: i for i, name in enumerate(kept)}
    old_label = {name: i for i, name in enumerate(dataset.classes)}
    root = dataset.root
    rows: list[SplitRow] = []
    for name in kept:
        members = sorted(per_class[old_label[name]], key=lambda i: dataset.images[i].image_id)
        order = [members[j] for j in _identity_seed(settings.seed, name).permutation(len(members))]
        nn_, ns = settings.n_natural, settings.n_source
        head = order[nn_ + ns :]
        n_tr, n_va, _ = _head_counts(len(head), settings.head_fractions)
        roles = (
            [("natural", i) for i in order[:nn_]]
            + [("source", i) for i in order[nn_ : nn_ + ns]]
            + [("train", i) for i in head[:n_tr]]
            + [("val", i) for i in head[n_tr : n_tr + n_va]]
            + [("test", i) for i in head[n_tr + n_va :]]
        )
        for role, i in sorted(roles, key=lambda t: dataset.images[t[1]].image_id):
            im = dataset.images[i]
            path = ""
            if im.path is not None:
                path = (
                    im.path.relative_to(root).as_posix()
                    if root is not None and im.path.is_relative_to(root)
                    else str(im.path)
                )
            rows.append(SplitRow(im.image_id, path, name, new_label[name], role, im.sha256, i))
    return ProtocolSplit(rows, kept, settings, dataset.describe(), dropped)


def read_split(run_dir: str | os.PathLike[str]) -> ProtocolSplit:
    """Read a split written by :meth:`ProtocolSplit.write` (checks the CSV against its sidecar)."""
    run_dir = Path(run_dir)
    csv_path, json_path = run_dir / CSV_NAME, run_dir / JSON_NAME
    try:
        meta = read_json(json_path)
        data = csv_path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: split file not found (write the split first)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{json_path}: unreadable split description ({exc})") from None
    if hashlib.sha256(data).hexdigest() != meta.get("manifest_sha256"):
        raise DataError(f"{csv_path}: content does not match the checksum in {json_path.name} (edited or damaged)")
    try:
        settings = SplitSettings(**{**meta["settings"], "head_fractions": tuple(meta["settings"]["head_fractions"])})
    except (KeyError, TypeError) as exc:
        raise DataError(f"{json_path}: bad or missing split settings ({exc})") from None
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if header != _COLUMNS:
        raise DataError(f"{csv_path}:1: expected columns {','.join(_COLUMNS)}, got {header}")
    rows: list[SplitRow] = []
    for lineno, rec in enumerate(reader, start=2):
        try:
            if len(rec) != len(_COLUMNS):
                raise ValueError(f"expected {len(_COLUMNS)} fields, got {len(rec)}")
            row = SplitRow(rec[0], rec[1], rec[2], int(rec[3]), rec[4], rec[5], int(rec[6]))
            if row.role not in ROLES:
                raise ValueError(f"unknown role {row.role!r}")
        except ValueError as exc:
            raise DataError(f"{csv_path}:{lineno}: {exc}") from None
        rows.append(row)
    return ProtocolSplit(
        rows, list(meta["classes"]), settings, dict(meta["dataset"]), dict(meta.get("dropped_identities", {}))
    )
