"""Labeled Faces in the Wild: locating a local copy, and its pairs protocol files.

A local LFW folder may be laid out as the official archives unpack (``<root>/<Name>/<Name>_0001.jpg``,
possibly one level down in ``lfw/``, ``lfw_funneled/`` or ``lfw-deepfunneled/``), or as the
subset shipped with frad's test data (``images/`` plus ``pairs-images/``, protocol files in
``protocol/``).  :class:`LFWLayout` hides the difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .download import RemoteFile

if TYPE_CHECKING:
    from .folders import FaceDataset

__all__ = [
    "Pair",
    "read_pairs",
    "LFWLayout",
    "LFW_ARCHIVES",
    "LFW_PROTOCOL_FILES",
    "fetch_lfw",
    "open_lfw",
    "lfw_variant",
    "guess_variant",
    "lfw_image_root",
    "lfw_people",
]

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


# ---------------------------------------------------------------- download and local copies
# The canonical archives and protocol files, from scikit-learn's figshare mirror (the URLs
# and sha256 sums scikit-learn's ``fetch_lfw_people``/``fetch_lfw_pairs`` use).
LFW_ARCHIVES: dict[str, RemoteFile] = {
    "lfw": RemoteFile(
        "lfw.tgz", "https://ndownloader.figshare.com/files/5976018",
        "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0",
    ),
    "lfw-funneled": RemoteFile(
        "lfw-funneled.tgz", "https://ndownloader.figshare.com/files/5976015",
        "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
    ),
}
LFW_PROTOCOL_FILES: dict[str, RemoteFile] = {
    "pairs.txt": RemoteFile(
        "pairs.txt", "https://ndownloader.figshare.com/files/5976006",
        "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    ),
    "pairsDevTrain.txt": RemoteFile(
        "pairsDevTrain.txt", "https://ndownloader.figshare.com/files/5976012",
        "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
    ),
    "pairsDevTest.txt": RemoteFile(
        "pairsDevTest.txt", "https://ndownloader.figshare.com/files/5976009",
        "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
    ),
}
#: Marker written into folders made by :func:`fetch_lfw` / :func:`open_lfw`, naming the variant.
LFW_MARKER = "frad-lfw.json"
_ARCHIVE_VARIANTS = {"lfw.tgz": "lfw", "lfw-funneled.tgz": "lfw-funneled", "lfw-deepfunneled.tgz": "lfw-deepfunneled"}
_VARIANT_DIRS = ("images", "lfw-deepfunneled", "lfw_funneled", "lfw")


def fetch_lfw(
    dest: str | os.PathLike[str] | None = None,
    *,
    variant: str = "lfw",
    protocol: bool = True,
    mirror: str | None = None,
) -> Path:
    """Download (if needed) and unpack one LFW archive plus the pairs files; return the folder.

    ``variant`` is 'lfw' (original images) or 'lfw-funneled'.  Files come from scikit-learn's
    figshare mirror and are checked against their sha256; ``mirror`` fetches the same file
    names from another base URL (``https://...`` or ``file:///...``).  ``dest`` (default:
    frad's cache folder) receives ``downloads/`` and ``data/``; the returned ``data/`` holds
    the archive as it unpacks (``lfw/<Name>/...``), the protocol files and a ``frad-lfw.json``
    marker naming the variant, so :class:`LFWLayout` and :func:`lfw_people` read it as is.
    """
    from ..utils.cache import cache_dir
    from ..utils.io import atomic_write_bytes, write_json
    from .download import extract_archive, fetch

    if variant not in LFW_ARCHIVES:
        raise DataError(f"LFW variant must be one of {', '.join(LFW_ARCHIVES)}, got {variant!r}")
    base = Path(dest).expanduser() if dest is not None else cache_dir("datasets", variant)
    downloads = base / "downloads"
    remote = LFW_ARCHIVES[variant]
    protocol_files = [fetch(f, downloads, mirror=mirror) for f in LFW_PROTOCOL_FILES.values()] if protocol else []
    archive = fetch(remote, downloads, mirror=mirror)
    root = extract_archive(archive, base / "data")
    for path in protocol_files:
        if not (root / path.name).is_file():
            atomic_write_bytes(root / path.name, path.read_bytes())
    write_json(root / LFW_MARKER, {"dataset": "lfw", "variant": variant, "archive": remote.filename, "sha256": remote.sha256})
    return root


def open_lfw(path: str | os.PathLike[str]) -> Path:
    """A local LFW copy as a folder: a folder is returned as is, a ``.tgz``/``.tar`` archive is
    unpacked once into frad's cache (keyed by the archive's sha256) and that folder returned."""
    from ..utils.cache import cache_dir
    from ..utils.io import sha256_file, write_json
    from .download import extract_archive

    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if not path.is_file():
        raise DataError(f"{path}: LFW folder or archive not found")
    if not path.name.endswith((".tgz", ".tar.gz", ".tar")):
        raise DataError(f"{path}: expected an LFW folder or a .tgz/.tar.gz/.tar archive")
    digest = sha256_file(path)
    root = extract_archive(path, cache_dir("datasets", "lfw-archives", digest[:16]) / "data")
    variant = _ARCHIVE_VARIANTS.get(path.name)
    if variant is None:
        known = {f.sha256: v for v, f in LFW_ARCHIVES.items()}
        variant = known.get(digest)
    if variant is not None and not (root / LFW_MARKER).is_file():
        write_json(root / LFW_MARKER, {"dataset": "lfw", "variant": variant, "archive": path.name, "sha256": digest})
    return root


def guess_variant(data_dir: str | os.PathLike[str]) -> str:
    """Which LFW images a folder holds, from its README or folder names ('lfw-deepfunneled', ...)."""
    root = Path(data_dir)
    readme = root / "README.md"
    if readme.is_file() and "deep-funneled" in readme.read_text(encoding="utf-8", errors="replace")[:2000]:
        return "lfw-deepfunneled"
    for name, variant in (("lfw-deepfunneled", "lfw-deepfunneled"), ("lfw_funneled", "lfw-funneled"), ("lfw", "lfw")):
        if (root / name).is_dir() or root.name == name:
            return variant
    return "lfw (unknown variant)"


def lfw_variant(root: str | os.PathLike[str]) -> str:
    """Which LFW images ``root`` holds ('lfw', 'lfw-funneled', 'lfw-deepfunneled', ...)."""
    from ..utils.io import read_json

    marker = Path(root) / LFW_MARKER
    if marker.is_file():
        try:
            return str(read_json(marker)["variant"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return guess_variant(root)


def lfw_image_root(root: str | os.PathLike[str]) -> Path:
    """The folder holding LFW's complete identity folders inside a local copy.

    Looks for ``images/`` (frad's test subset), ``lfw-deepfunneled/``, ``lfw_funneled/`` or
    ``lfw/`` (as the archives unpack); ``pairs-images/`` is never used because its identity
    folders are partial.
    """
    root = Path(root)
    for d in _VARIANT_DIRS:
        if (root / d).is_dir() and _holds_lfw_people(root / d):
            return root / d
    # the identity folders themselves (Name/Name_0001.jpg directly under root)
    if _holds_lfw_people(root):
        return root
    raise DataError(f"{root}: no LFW image folder found (looked for {', '.join(_VARIANT_DIRS)} holding LFW's "
                    "Name/Name_0001.jpg files)")


def _holds_lfw_people(folder: Path, look: int = 50) -> bool:
    """Whether ``folder`` holds identity folders named as LFW's (``Name/Name_0001.jpg``): a folder
    merely called ``images`` or ``lfw`` is not taken for LFW without them."""
    seen = 0
    try:
        for d in sorted(folder.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                if (d / f"{d.name}_0001.jpg").is_file():
                    return True
                seen += 1
                if seen >= look:
                    break
    except OSError:
        return False
    return False


def lfw_people(
    path: str | os.PathLike[str], *, min_images: int = 10, variant: str | None = None, cache: bool = True
) -> FaceDataset:
    """LFW as an identity-folder dataset of the people with at least ``min_images`` images.

    ``path`` is a local folder or archive (see :func:`open_lfw`).  The dataset is named 'lfw'
    and carries its variant (e.g. 'lfw-deepfunneled'): figures measured on one variant do not
    carry over to another.
    """
    from .folders import load_identity_folders

    root = open_lfw(path)
    return load_identity_folders(
        lfw_image_root(root), name="lfw", variant=variant or lfw_variant(root), min_images=min_images, cache=cache
    )
