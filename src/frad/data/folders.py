"""Identity-folder face datasets (one folder per person, as VGGFace2 and LFW are laid out).

:func:`scan_identity_folders` walks ``root/<identity>/<image>``, hashes and decodes every
file once, and reports by name (never raising) every file it skips:

- ``corrupt``: an image file that cannot be decoded (truncated, not really an image, ...);
- ``not-image``: a file without an image suffix (``.txt``, ``.DS_Store``, ...);
- ``duplicate``: the same bytes as an image kept earlier (sorted order), in any identity;
- ``empty-identity``: an identity folder with no usable image;
- ``nested-folder``: a folder inside an identity folder (not searched);
- ``outside-identity``: an image file directly under the root (it has no identity).

Files other than images directly under the root (README, manifests, frad's own marker
files) are not problems and are ignored.  Images stored as grayscale, CMYK, palette or
16-bit are kept, converted to RGB by :func:`frad.data.images.decode_image`, and noted.

The scan is cached (keyed by the root folder, each file's size and modification time), so
a second scan of a big dataset only stats the files; it is saved every few thousand files,
so an interrupted scan resumes.

:class:`FaceDataset` is what the rest of frad consumes: ordered images with stable class
indices (sorted identity names), content hashes, and provenance: ``name``, ``variant``
(e.g. 'lfw-deepfunneled'), ``synthetic`` and ``alignment`` (the alignment the stored images
already have, e.g. the synthetic chips', else None).  It can also hold in-memory images
(the synthetic dataset, or any array of chips).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..utils.cache import cache_dir
from ..utils.io import read_json, write_json
from ..utils.progress import progress
from .images import IMAGE_SUFFIXES, decode_image

__all__ = [
    "PROBLEM_KINDS",
    "Problem",
    "FaceImage",
    "FolderScan",
    "FaceDataset",
    "scan_identity_folders",
    "load_identity_folders",
]

log = logging.getLogger(__name__)

PROBLEM_KINDS = ("corrupt", "not-image", "duplicate", "empty-identity", "nested-folder", "outside-identity")
_SCAN_VERSION = 1
_SAVE_EVERY = 2000


@dataclass(frozen=True)
class Problem:
    """A file or folder that was skipped, and why (``kind`` is one of :data:`PROBLEM_KINDS`)."""

    path: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class FaceImage:
    """One usable image: ``image_id`` is its path below the root with '/' separators."""

    image_id: str
    identity: str
    label: int
    path: Path | None
    sha256: str
    note: str | None = None


@dataclass
class FolderScan:
    """Raw result of scanning an identity-folder tree: kept images, problems, notes."""

    root: Path
    images: list[tuple[str, str, Path, str, str | None]]  # (image_id, identity, path, sha256, note)
    problems: list[Problem]
    identities: list[str]  # every identity folder, usable or not, sorted
    cached: int = 0


# ------------------------------------------------------------------ scanning
def _scan_cache_path(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir("scans") / f"{digest}.json"


def _load_scan_cache(path: Path, root: Path) -> dict[str, list[Any]]:
    try:
        blob = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(blob, dict) or blob.get("version") != _SCAN_VERSION or blob.get("root") != str(root.resolve()):
        return {}
    entries = blob.get("entries")
    return entries if isinstance(entries, dict) else {}


def _check_file(path: Path) -> list[Any]:
    """[status, sha256, detail] for one file: status 'ok' (detail = note or None) or 'corrupt'."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return ["corrupt", "", f"cannot read ({exc.strerror or exc})"]
    digest = hashlib.sha256(raw).hexdigest()
    try:
        decoded = decode_image(path)
    except DataError as exc:
        reason = str(exc)
        prefix = f"{path}: "
        return ["corrupt", digest, reason[len(prefix) :] if reason.startswith(prefix) else reason]
    return ["ok", digest, decoded.note]


def scan_identity_folders(
    root: str | os.PathLike[str], *, cache: bool = True, workers: int | None = None, desc: str = "scanning images"
) -> FolderScan:
    """Walk ``root/<identity>/<file>``, decode and hash every image, and report what is skipped.

    Long because: one walk over the folder tree collects the files, the problems and the identities
    together, each check adding to the same lists in the order the user reads them.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected one sub-folder per identity)")
    problems: list[Problem] = []
    candidates: list[tuple[str, Path]] = []  # (identity, file)
    identities: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            if entry.name.startswith("."):
                continue  # hidden folders (.git, .cache) are not identities
            identities.append(entry.name)
            for f in sorted(entry.iterdir(), key=lambda p: p.name):
                if f.is_dir():
                    problems.append(Problem(str(f), "nested-folder", "folder inside an identity folder; not searched"))
                elif f.suffix.lower() in IMAGE_SUFFIXES:
                    candidates.append((entry.name, f))
                else:
                    problems.append(Problem(str(f), "not-image", f"not an image file (suffix {f.suffix or 'none'!r})"))
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            problems.append(
                Problem(str(entry), "outside-identity", "image directly under the root has no identity folder")
            )
    if not identities:
        raise DataError(f"{root}: no identity folders found (expected {root}/<identity>/<image files>)")

    cache_path = _scan_cache_path(root) if cache else None
    entries = _load_scan_cache(cache_path, root) if cache_path is not None else {}
    fresh: dict[str, list[Any]] = {}
    todo: list[tuple[str, Path, int, int]] = []
    hits = 0
    for _, f in candidates:
        rel = f.relative_to(root).as_posix()
        try:
            st = f.stat()
        except OSError as exc:
            fresh[rel] = [-1, -1, "corrupt", "", f"cannot stat ({exc.strerror or exc})"]
            continue
        old = entries.get(rel)
        if isinstance(old, list) and len(old) == 5 and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            fresh[rel] = old
            hits += 1
        else:
            todo.append((rel, f, st.st_size, st.st_mtime_ns))
    if todo:
        # decoding releases the GIL, so threads overlap it; results are saved every few thousand files
        n_workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(n_workers) as ex:
            results = ex.map(lambda t: (t, _check_file(t[1])), todo)
            for done, ((rel, _, size, mtime), res) in enumerate(
                progress(results, desc=desc, total=len(todo), unit="img"), start=1
            ):
                fresh[rel] = [size, mtime, *res]
                if cache_path is not None and done % _SAVE_EVERY == 0:
                    write_json(
                        cache_path,
                        {"version": _SCAN_VERSION, "root": str(root.resolve()), "entries": {**entries, **fresh}},
                    )
    if cache_path is not None and (todo or len(fresh) != len(entries)):
        write_json(cache_path, {"version": _SCAN_VERSION, "root": str(root.resolve()), "entries": fresh})

    images: list[tuple[str, str, Path, str, str | None]] = []
    first: dict[str, str] = {}
    usable: Counter[str] = Counter()
    for ident, f in candidates:
        rel = f.relative_to(root).as_posix()
        _, _, status, digest, detail = fresh[rel]
        if status != "ok":
            problems.append(Problem(str(f), "corrupt", str(detail)))
            continue
        if digest in first:
            problems.append(Problem(str(f), "duplicate", f"same content as {first[digest]}"))
            continue
        first[digest] = rel
        images.append((rel, ident, f, digest, f"{detail}" if detail else None))
        usable[ident] += 1
    for ident in identities:
        if usable[ident] == 0:
            problems.append(Problem(str(root / ident), "empty-identity", "identity folder has no usable image"))
    order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
    problems.sort(key=lambda p: (order.get(p.kind, 99), p.path))
    return FolderScan(root, images, problems, identities, cached=hits)


# ------------------------------------------------------------------ dataset
class FaceDataset:
    """Ordered face images with stable class indices and provenance.

    ``classes`` are sorted identity names and ``label`` indexes them.  Images live in files
    (``path``) or in memory (``pixels``, N x H x W x 3 uint8, one row per image).
    """

    def __init__(
        self,
        images: Sequence[FaceImage],
        classes: Sequence[str],
        *,
        name: str,
        root: Path | None = None,
        variant: str | None = None,
        synthetic: bool = False,
        alignment: str | None = None,
        problems: Sequence[Problem] = (),
        pixels: np.ndarray | None = None,
        dropped: dict[str, int] | None = None,
    ) -> None:
        self.images = list(images)
        self.classes = list(classes)
        self.name = name
        self.root = root
        self.variant = variant
        self.synthetic = bool(synthetic)
        self.alignment = alignment
        self.problems = list(problems)
        self.dropped = dict(dropped or {})
        if pixels is not None:
            pixels = np.asarray(pixels)
            if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8 or len(pixels) != len(self.images):
                raise DataError(
                    f"dataset {name!r}: in-memory pixels must be ({len(self.images)}, H, W, 3) uint8, "
                    f"got {pixels.shape} {pixels.dtype}"
                )
        self.pixels = pixels
        self._key: str | None = None

    # -- basics
    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[FaceImage]:
        return iter(self.images)

    def __getitem__(self, i: int) -> FaceImage:
        return self.images[i]

    def __repr__(self) -> str:
        tag = " synthetic" if self.synthetic else ""
        return f"FaceDataset({self.name!r}{tag}, {len(self)} images, {len(self.classes)} identities)"

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((im.label for im in self.images), dtype=np.int64, count=len(self.images))

    @property
    def image_ids(self) -> list[str]:
        return [im.image_id for im in self.images]

    @property
    def paths(self) -> list[Path | None]:
        return [im.path for im in self.images]

    def counts(self) -> dict[str, int]:
        """Images per identity, in class order."""
        c = Counter(im.label for im in self.images)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def content_key(self) -> str:
        """A hash of the images' ids, contents and labels: equal keys mean identical data."""
        if self._key is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.classes).encode())
            for im in self.images:
                h.update(f"{im.image_id}\0{im.sha256}\0{im.label}\n".encode())
            self._key = h.hexdigest()[:20]
        return self._key

    def describe(self) -> dict[str, Any]:
        """Provenance to store beside any result computed from this dataset."""
        return {
            "dataset": self.name,
            "variant": self.variant,
            "synthetic": self.synthetic,
            "root": str(self.root) if self.root is not None else None,
            "alignment": self.alignment,
            "images": len(self),
            "identities": len(self.classes),
            "content_key": self.content_key(),
        }

    # -- pixels
    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as H x W x 3 uint8 RGB."""
        if self.pixels is not None:
            return self.pixels[i]
        path = self.images[i].path
        if path is None:
            raise DataError(f"dataset {self.name!r}: image {self.images[i].image_id} has neither a file nor pixels")
        return decode_image(path).pixels

    # -- derived datasets
    def _derived(self, rows: Sequence[int] | np.ndarray, classes: list[str], dropped: dict[str, int]) -> FaceDataset:
        """The images at ``rows``, re-labelled over ``classes``, with this dataset's provenance."""
        label = {c: i for i, c in enumerate(classes)}
        rows = [int(i) for i in np.asarray(rows, dtype=np.int64).ravel()]
        images = [self.images[i] for i in rows]
        if classes != self.classes:
            images = [replace(im, label=label[im.identity]) for im in images]
        return FaceDataset(
            images,
            classes,
            name=self.name,
            root=self.root,
            variant=self.variant,
            synthetic=self.synthetic,
            alignment=self.alignment,
            problems=self.problems,
            pixels=self.pixels[rows] if self.pixels is not None else None,
            dropped=dropped,
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> FaceDataset:
        """The images at ``indices`` (same classes and labels)."""
        return self._derived(indices, self.classes, self.dropped)

    def select_identities(self, names: Iterable[str]) -> FaceDataset:
        """Only the identities ``names``, re-indexed (sorted); the others are left out by choice,
        so they are not added to ``dropped`` (identities already in it stay there)."""
        keep = sorted(set(names))
        unknown = [n for n in keep if n not in self.classes]
        if unknown:
            raise DataError(f"dataset {self.name!r}: no identities {unknown[:5]}")
        wanted = set(keep)
        rows = [i for i, im in enumerate(self.images) if im.identity in wanted]
        # identities dropped earlier (too few images) stay recorded: they were dropped, not chosen
        return self._derived(rows, keep, dict(self.dropped))

    def with_min_images(self, min_images: int) -> FaceDataset:
        """Keep identities with at least ``min_images`` images; re-index the classes (sorted names).

        Dropped identities are recorded in ``dropped`` (name -> image count).
        """
        if min_images < 1:
            raise DataError(f"min_images must be >= 1, got {min_images}")
        counts = self.counts()
        keep = [c for c in self.classes if counts[c] >= min_images]
        dropped = {**self.dropped, **{c: n for c, n in counts.items() if n < min_images}}
        wanted = set(keep)
        rows = [i for i, im in enumerate(self.images) if im.identity in wanted]
        return self._derived(rows, keep, dropped)

    def summary(self) -> dict[str, Any]:
        """Identities, images, per-class counts and every problem file (JSON-ready)."""
        counts = self.counts()
        kinds = Counter(p.kind for p in self.problems)
        return {
            **self.describe(),
            "per_class": counts,
            "min_per_class": min(counts.values()) if counts else 0,
            "max_per_class": max(counts.values()) if counts else 0,
            "converted": sum(1 for im in self.images if im.note),
            "notes": {im.image_id: im.note for im in self.images if im.note},
            "dropped_identities": self.dropped,
            "problems": {k: kinds.get(k, 0) for k in PROBLEM_KINDS},
            "problem_files": [{"path": p.path, "kind": p.kind, "reason": p.reason} for p in self.problems],
        }

    # -- constructors
    @classmethod
    def from_arrays(
        cls,
        pixels: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        *,
        name: str,
        image_ids: Sequence[str] | None = None,
        synthetic: bool = False,
        alignment: str | None = None,
        variant: str | None = None,
    ) -> FaceDataset:
        """A dataset of in-memory images (N x H x W x 3 uint8); image hashes are computed here."""
        pixels = np.asarray(pixels)
        y = np.asarray(labels, dtype=np.int64).ravel()
        if pixels.ndim != 4 or len(pixels) != len(y):
            raise DataError(f"dataset {name!r}: {len(y)} labels for pixels of shape {pixels.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(
                f"dataset {name!r}: labels must index the {len(classes)} classes, got range {y.min()}..{y.max()}"
            )
        ids = list(image_ids) if image_ids is not None else [f"{classes[int(c)]}/{i:06d}" for i, c in enumerate(y)]
        images = [
            FaceImage(
                ids[i],
                classes[int(y[i])],
                int(y[i]),
                None,
                hashlib.sha256(np.ascontiguousarray(pixels[i]).tobytes()).hexdigest(),
            )
            for i in range(len(y))
        ]
        return cls(images, classes, name=name, synthetic=synthetic, alignment=alignment, variant=variant, pixels=pixels)

    @classmethod
    def from_synthetic(cls, faces: Any) -> FaceDataset:
        """Wrap :class:`frad.data.synthetic.SyntheticFaces` (labelled synthetic, already aligned)."""
        return cls.from_arrays(
            faces.chips,
            faces.labels,
            faces.class_names,
            name=faces.name,
            image_ids=faces.image_ids,
            synthetic=True,
            alignment=faces.alignment,
            variant=f"seed-{faces.seed}",
        )


def load_identity_folders(
    root: str | os.PathLike[str],
    *,
    name: str | None = None,
    variant: str | None = None,
    min_images: int = 1,
    alignment: str | None = None,
    cache: bool = True,
) -> FaceDataset:
    """Scan ``root`` (see :func:`scan_identity_folders`) into a :class:`FaceDataset`.

    A ``frad-synthetic.json`` marker at the root (written by
    :func:`frad.data.synthetic.write_synthetic_dataset`) labels the data synthetic and already
    aligned.  Identities with fewer than ``min_images`` usable images are left out (recorded
    in ``dropped``).
    """
    from .synthetic import SYNTHETIC_MARKER

    root = Path(root).expanduser()
    scan = scan_identity_folders(root, cache=cache)
    synthetic = False
    marker = root / SYNTHETIC_MARKER
    if marker.is_file():
        try:
            meta = read_json(marker)
        except (OSError, ValueError) as exc:
            raise DataError(f"{marker}: unreadable synthetic-dataset marker ({exc})") from None
        synthetic = bool(meta.get("synthetic", True))
        alignment = alignment or meta.get("alignment")
        name = name or str(meta.get("dataset", "synthetic"))
        variant = variant or f"seed-{meta.get('seed')}"
    present = sorted({ident for _, ident, _, _, _ in scan.images})
    label = {c: i for i, c in enumerate(present)}
    images = [FaceImage(rel, ident, label[ident], path, digest, note) for rel, ident, path, digest, note in scan.images]
    ds = FaceDataset(
        images,
        present,
        name=name or root.name,
        root=root,
        variant=variant,
        synthetic=synthetic,
        alignment=alignment,
        problems=scan.problems,
        dropped={i: 0 for i in scan.identities if i not in label},
    )
    if scan.problems:
        log.info("%s: %d file(s) skipped (see the dataset summary)", root, len(scan.problems))
    return ds.with_min_images(min_images) if min_images > 1 else ds
