"""Downloading files with a checksum, resuming interrupted downloads, and unpacking archives.

:func:`download` streams a URL (``https://``, ``http://`` or ``file://``) into
``<dest>.part``, resumes an existing ``.part`` with an HTTP range request where the server
honours it (and starts over where it does not), checks the sha256, and only then renames the
file into place: a later run never trusts a half-written or damaged file.  On a checksum
mismatch the partial file is deleted and a :class:`~frad.errors.DataError` names the URL and
both sums.

:func:`extract_archive` unpacks a tar archive (``.tgz``, ``.tar.gz``, ``.tar``) with
tarfile's ``data`` filter (no absolute paths, no links out of the folder, no devices) into a
temporary folder beside the destination, then renames it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..utils.io import sha256_file
from ..utils.progress import progress

__all__ = ["RemoteFile", "download", "fetch", "extract_archive"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its local name, its URL and its sha256."""

    filename: str
    url: str
    sha256: str


def _open(url: str, start: int, timeout: float) -> tuple[object, bool, int | None]:
    """Open ``url`` from byte ``start``; returns (response, resumed?, total size or None)."""
    req = urllib.request.Request(url, headers={"User-Agent": "frad"})
    if start > 0:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the user chose the URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:  # range not satisfiable: the .part is stale; start over
            return _open(url, 0, timeout)
        raise DataError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: download failed ({reason})") from None
    status = getattr(resp, "status", None)
    resumed = start > 0 and status == 206
    length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
    total = int(length) + (start if resumed else 0) if length and length.isdigit() else None
    return resp, resumed, total


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    resume: bool = True,
    timeout: float = 60.0,
    desc: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and check its sha256; return ``dest``.

    An existing ``dest`` with the right checksum is kept without any network access (a
    wrong one is downloaded again).  ``sha256=None`` skips the check (for user-supplied URLs
    only; frad's own files always carry a checksum).
    """
    dest = Path(dest)
    want = sha256.lower() if sha256 else None
    if dest.is_file():
        if want is None or sha256_file(dest) == want:
            return dest
        log.warning("%s: checksum differs from the expected one; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if (resume and part.is_file()) else 0
    resp, resumed, total = _open(url, start, timeout)
    h = hashlib.sha256()
    mode = "ab" if resumed else "wb"
    if resumed:
        with open(part, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        log.info("%s: resuming at byte %d", dest.name, start)
    bar = progress(total=total, initial=start if resumed else 0, unit="B", unit_scale=True, desc=desc or dest.name)
    try:
        with resp, open(part, mode) as out:  # type: ignore[attr-defined]
            while block := resp.read(_CHUNK):  # type: ignore[attr-defined]
                out.write(block)
                h.update(block)
                bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise DataError(f"{url}: download interrupted ({exc}); run again to resume from {part}") from None
    finally:
        bar.close()
    got = h.hexdigest()
    if want is not None and got != want:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise DataError(
            f"{url}: checksum mismatch for {dest.name}: expected sha256 {want}, got {got}; the file was deleted"
        )
    os.replace(part, dest)
    return dest


def fetch(remote: RemoteFile, folder: str | os.PathLike[str], *, mirror: str | None = None, **kwargs: object) -> Path:
    """Download ``remote`` into ``folder``; with ``mirror``, from ``<mirror>/<filename>`` instead of its URL."""
    url = remote.url if mirror is None else mirror.rstrip("/") + "/" + remote.filename
    return download(url, Path(folder) / remote.filename, sha256=remote.sha256, **kwargs)  # type: ignore[arg-type]


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Unpack the tar archive ``archive`` into the folder ``dest`` (atomically; kept if it exists)."""
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in progress(members, desc=f"unpacking {archive.name}", unit="file"):
                    tar.extract(m, tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DataError(f"{archive}: cannot unpack the archive ({exc})") from None
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
