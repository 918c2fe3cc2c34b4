"""Downloads with checksums and resume, safe unpacking, and LFW fetched from a local mirror."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frad.cli import main
from frad.data import lfw
from frad.data.download import RemoteFile, download, extract_archive
from frad.errors import DataError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` and honours 'Range: bytes=N-' like a real file server."""

    def do_GET(self) -> None:  # noqa: N802
        data: bytes = self.server.payload  # type: ignore[attr-defined]
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.HTTPServer]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.payload = bytes(range(256)) * 4000  # type: ignore[attr-defined]
    srv.ranges = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_file_url_download_checks_the_sum(tmp_path: Path) -> None:
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir()
    src.write_bytes(b"x" * 5000)
    dest = download(src.as_uri(), tmp_path / "out" / "blob.bin", sha256=_sha(b"x" * 5000))
    assert dest.read_bytes() == b"x" * 5000
    # a good file already in place is kept without touching the URL
    assert download("file:///does/not/exist", dest, sha256=_sha(b"x" * 5000)) == dest


def test_checksum_mismatch_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"tampered")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DataError, match=r"checksum mismatch for blob\.bin: expected sha256 0{64}, got"):
        download(src.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())


def test_unreachable_url_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download failed"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "x.bin", sha256=None)


def test_interrupted_download_resumes_with_a_range_request(server: http.server.HTTPServer, tmp_path: Path) -> None:
    data: bytes = server.payload  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_port}/blob.bin"
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(data[:300_000])  # what an interrupted run left
    download(url, dest, sha256=_sha(data))
    assert dest.read_bytes() == data
    assert server.ranges == ["bytes=300000-"]  # type: ignore[attr-defined]
    assert not (tmp_path / "blob.bin.part").exists()


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_with_a_path_escaping_member_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(_tgz({"ok.txt": b"1", "../evil.txt": b"2"}))
    with pytest.raises(DataError, match="bad.tgz: cannot unpack"):
        extract_archive(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_lfw(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A miniature lfw.tgz (as the official archive unpacks: lfw/<Name>/<Name>_0001.jpg) and pairs files."""
    members = {
        f"lfw/{n}/{n}_{i:04d}.jpg": _jpeg(k * 10 + i) for k, n in enumerate(["Ann_A", "Bob_B"]) for i in (1, 2, 3)
    }
    files = {
        "lfw.tgz": _tgz(members),
        "pairs.txt": b"1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n",
        "pairsDevTrain.txt": b"1\nBob_B\t1\t3\nAnn_A\t2\tBob_B\t2\n",
        "pairsDevTest.txt": b"1\nAnn_A\t2\t3\nAnn_A\t3\tBob_B\t3\n",
    }
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in files.items():
        (mirror / name).write_bytes(data)
    return mirror, files


def test_fetch_lfw_from_a_local_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror, files = _fake_lfw(tmp_path)
    monkeypatch.setitem(
        lfw.LFW_ARCHIVES, "lfw", RemoteFile("lfw.tgz", "https://example.invalid/lfw", _sha(files["lfw.tgz"]))
    )
    for name in lfw.LFW_PROTOCOL_FILES:
        monkeypatch.setitem(
            lfw.LFW_PROTOCOL_FILES, name, RemoteFile(name, "https://example.invalid/" + name, _sha(files[name]))
        )
    assert main(["data", "fetch-lfw", "--dest", str(tmp_path / "lfw"), "--mirror", mirror.as_uri(), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    root = Path(out["root"])
    ds = lfw.lfw_people(root, min_images=1)
    assert ds.classes == ["Ann_A", "Bob_B"] and len(ds) == 6 and ds.variant == "lfw"
    layout = lfw.LFWLayout(root)  # what verify-lfw reads: the fetched folder works as is
    assert len(lfw.read_pairs(layout.protocol_file())) == 2
    assert layout.image_path("Bob_B/Bob_B_0003.jpg").is_file()
    # fetching again uses what is there (the mirror may be gone)
    for p in mirror.iterdir():
        p.unlink()
    assert lfw.fetch_lfw(tmp_path / "lfw", mirror=mirror.as_uri()) == root


def test_fetch_lfw_rejects_a_foreign_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real checksums (scikit-learn's) do not match the miniature archive: one clear error."""
    mirror, _ = _fake_lfw(tmp_path)
    assert main(["data", "fetch-lfw", "--dest", str(tmp_path / "lfw"), "--mirror", mirror.as_uri()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frad: error:") and "checksum mismatch for pairs.txt" in err and err.count("\n") == 1
    assert not list((tmp_path / "lfw" / "downloads").glob("*"))


def test_sums_are_scikit_learns() -> None:
    assert lfw.LFW_ARCHIVES["lfw"].sha256 == "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"
    assert lfw.LFW_ARCHIVES["lfw-funneled"].sha256 == "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a"
    assert (
        lfw.LFW_PROTOCOL_FILES["pairs.txt"].sha256 == "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592"
    )
    assert all(
        f.url.startswith("https://ndownloader.figshare.com/files/")
        for f in [*lfw.LFW_ARCHIVES.values(), *lfw.LFW_PROTOCOL_FILES.values()]
    )


def test_our_pairs_files_match_the_published_sums(lfw_dir: Path) -> None:
    from frad.utils.io import sha256_file

    layout = lfw.LFWLayout(lfw_dir)
    for name, remote in lfw.LFW_PROTOCOL_FILES.items():
        assert sha256_file(layout.protocol_file(name)) == remote.sha256


def test_open_lfw_unpacks_an_archive_once(tmp_path: Path) -> None:
    mirror, _ = _fake_lfw(tmp_path)
    root = lfw.open_lfw(mirror / "lfw.tgz")
    assert lfw.lfw_variant(root) == "lfw"
    assert lfw.lfw_image_root(root).name == "lfw"
    assert lfw.open_lfw(mirror / "lfw.tgz") == root
    with pytest.raises(DataError, match="expected an LFW folder or a .tgz"):
        lfw.open_lfw(mirror / "pairs.txt")
