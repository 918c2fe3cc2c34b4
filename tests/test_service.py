"""frad serve: the HTTP API (FastAPI's TestClient), the gallery, the micro-batcher, and the web
page in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

import io
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from frad.cli import main  # noqa: E402

KEY = "test-key-0123456789abcdef"
TINY = {
    "name": "tiny-serve",
    "seed": 0,
    "threads": 1,
    "data": {"source": "synthetic", "synthetic": {"identities": 5, "images_per_identity": 12}},
    "split": {"n_natural": 2, "n_source": 3, "min_head_images": 3},
    "classifier": {"max_epochs": 300},
    "attacks": {"shard_size": 5, "batch_size": 5,
                "attacks": [{"attack": "bim", "targeted": [True, False], "epsilon": 0.03, "steps": 5}]},
    "deep_features": {"enabled": False},
    "detection": {"n_bootstrap": 20, "configurations": ["mlp-centroid-euclidean", "mlp-medoid-cosine"],
                  "detector": {"max_epochs": 5, "batch_size": 64}},
    "benchmark": {"detectors": ["mlp-medoid-cosine", "mahalanobis"]},
}


def png(a: np.ndarray, fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, format=fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run up to its detector benchmark (about a minute on one thread)."""
    d = tmp_path_factory.mktemp("serve")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(cfg), "--out", str(d / "run"), "--until", "benchmark"]) == 0
    return d / "run"


@pytest.fixture(scope="module")
def faces(tiny_run: Path) -> tuple[list[np.ndarray], list[str]]:
    """Natural (split role) chips of the tiny run and their identities."""
    from frad.data.split import read_split
    from frad.pipeline.context import build_dataset
    from frad.pipeline.run import open_run_config

    ds = build_dataset(open_run_config(tiny_run))
    split = read_split(tiny_run)
    idx = split.indices("natural")
    return [ds.load(int(i)) for i in idx], [split.classes[int(c)] for c in split.labels("natural")]


def make_service(run: Path, gallery: Path, **settings):  # noqa: ANN003, ANN201
    """The tiny run's service; report-only unless a test sets the policy (the tiny synthetic
    run's detector, at 5% false positives on validation naturals, flags some natural faces)."""
    from frad.service import ServiceSettings, build_service

    settings.setdefault("report_only", True)
    return build_service(run, gallery=gallery, settings=ServiceSettings(api_key=KEY, **settings))


@pytest.fixture()
def client(tiny_run: Path, tmp_path: Path):  # noqa: ANN201
    from frad.service import create_app

    svc = make_service(tiny_run, tmp_path / "g.sqlite")
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        c.service = svc  # type: ignore[attr-defined]
        yield c


def identify(c: TestClient, chip: np.ndarray, **data):  # noqa: ANN003, ANN201
    return c.post("/v1/identify", files={"image": ("x.png", png(chip), "image/png")},
                  data={"aligned": "true", **{k: str(v) for k, v in data.items()}})


# ---------------------------------------------------------------------------- answers against references
def test_identify_matches_a_hand_computed_nearest_template(client: TestClient, faces, tiny_run: Path) -> None:
    from frad.models.base import to_pixels
    from frad.utils.io import load_npz

    svc = client.service  # type: ignore[attr-defined]
    chips, names = faces
    z = load_npz(tiny_run / "recognition" / "templates.npz")
    import torch

    with torch.no_grad():
        emb = svc.model(to_pixels(np.stack(chips))).numpy().astype(np.float64)
    tpl = z["templates"].astype(np.float64)
    dist = np.sqrt(((emb[:, None, :] - tpl[None]) ** 2).sum(-1))  # the run's metric is dlib's euclidean
    right = 0
    for i, chip in enumerate(chips):
        r = identify(client, chip, top_k=3)
        assert r.status_code == 200, r.json()
        body = r.json()
        ref = svc.parts.template_names[int(np.argmin(dist[i]))]
        assert body["candidates"][0]["name"] == ref
        assert body["candidates"][0]["similarity"] == pytest.approx(-dist[i].min(), abs=1e-4)
        assert len(body["candidates"]) == 3
        assert set(body["detector"]) >= {"score", "threshold", "verdict", "flagged"}
        right += ref == names[i]
    assert right >= 0.8 * len(chips)  # dlib on the synthetic faces: the run reports 100 % natural top-1


def test_detector_score_is_the_run_detectors_score_on_pixels(client: TestClient, faces, tiny_run: Path) -> None:
    """The service's one-pass score equals the loaded detector's own pixel path."""
    from frad.detection import AdversarialDetector, load_run_detector
    from frad.models.base import to_pixels

    chips, _ = faces
    det = load_run_detector(tiny_run)
    assert isinstance(det, AdversarialDetector) and det.face_model_name == "dlib_resnet_v1"
    ref = det.score_samples(to_pixels(np.stack(chips[:4])))
    got = [client.post("/v1/detect", files={"image": ("x.png", png(c), "image/png")}, data={"aligned": "true"}).json()
           for c in chips[:4]]
    np.testing.assert_allclose([g["score"] for g in got], ref, atol=1e-5)
    assert [g["verdict"] == "adversarial" for g in got] == list(det.predict(to_pixels(np.stack(chips[:4]))))


def test_verify_by_identity_and_by_pair(client: TestClient, faces) -> None:
    from frad.recognition.similarity import paired_similarity

    chips, names = faces
    svc = client.service  # type: ignore[attr-defined]
    a, b = svc.analyse_batch([chips[0], chips[1]])
    r = client.post("/v1/verify", files={"image": ("a.png", png(chips[0]), "image/png"),
                                         "image2": ("b.png", png(chips[1]), "image/png")}, data={"aligned": "true"})
    assert r.status_code == 200, r.json()
    ref = float(paired_similarity(a.embedding[None], b.embedding[None], "cosine")[0])
    assert r.json()["similarity"] == pytest.approx(ref, abs=1e-5)
    assert r.json()["accepted"] == (ref >= svc.parts.verification_threshold)
    assert "detector" in r.json() and "detector2" in r.json()
    r = client.post("/v1/verify", files={"image": ("a.png", png(chips[0]), "image/png")},
                    data={"aligned": "true", "identity": names[0]})
    assert r.status_code == 200 and r.json()["identity"] == names[0] and r.json()["accepted"] is True
    r = client.post("/v1/verify", files={"image": ("a.png", png(chips[0]), "image/png")},
                    data={"aligned": "true", "identity": "nobody"})
    assert r.status_code == 404 and "nobody" in r.json()["error"]
    r = client.post("/v1/verify", files={"image": ("a.png", png(chips[0]), "image/png")}, data={"aligned": "true"})
    assert r.status_code == 422 and "identity" in r.json()["error"]


def test_flagged_images_are_refused_by_default_and_reported_in_report_only(tiny_run: Path, tmp_path: Path, faces) -> None:
    from frad.service import create_app

    chips, _ = faces
    for report_only in (False, True):
        svc = make_service(tiny_run, tmp_path / f"g{report_only}.sqlite", report_only=report_only)
        svc.detector.threshold_ = 0.0  # every image is flagged now
        with TestClient(create_app(svc)) as c:
            r = identify(c, chips[0])
            det = r.json()["detector"]
            assert det["flagged"] is True and det["verdict"] == "adversarial"
            if report_only:
                assert r.status_code == 200 and r.json()["candidates"]
            else:
                assert r.status_code == 422 and r.json()["code"] == "flagged_adversarial"
                assert "adversarial" in r.json()["error"] and "candidates" not in r.json()
            m = c.get("/metrics").text
            action = "reported" if report_only else "refused"
            assert f'frad_flagged_inputs_total{{action="{action}",route="/v1/identify"}} 1.0' in m


# ---------------------------------------------------------------------------- enrolment and the key
def test_enrol_list_delete_need_the_key_and_persist(tiny_run: Path, tmp_path: Path, faces) -> None:
    from frad.service import create_app

    chips, _ = faces
    files = [("images", (f"{i}.png", png(c), "image/png")) for i, c in enumerate(chips[:2])]
    g = tmp_path / "g.sqlite"
    with TestClient(create_app(make_service(tiny_run, g))) as c:
        n0 = c.get("/v1/identities").json()["count"]
        assert n0 == 5  # the run's identities were imported into the new gallery
        assert c.post("/v1/enroll", files=files, data={"name": "alice", "aligned": "true"}).status_code == 401
        r = c.post("/v1/enroll", files=files, data={"name": "alice", "aligned": "true"}, headers={"X-API-Key": "nope"})
        assert r.status_code == 403 and r.json() == {"error": "wrong API key"}
        r = c.post("/v1/enroll", files=files, data={"name": "alice", "aligned": "true"}, headers={"X-API-Key": KEY})
        assert r.status_code == 201 and r.json()["added"] == 2 and r.json()["created"] is True
        r = c.post("/v1/enroll", files=files[:1], data={"name": "alice", "aligned": "true"},
                   headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["duplicates"] == 1 and r.json()["embeddings"] == 2
        r = c.post("/v1/enroll", files=files, data={"name": "a/b", "aligned": "true"}, headers={"X-API-Key": KEY})
        assert r.status_code == 422 and r.json()["error"].startswith("name:")
        assert c.delete("/v1/identities/alice").status_code == 401
        names = [i["name"] for i in c.get("/v1/identities").json()["identities"]]
        assert "alice" in names
    # reopened from disk: alice is there, with the centroid of her two embeddings as template
    svc = make_service(tiny_run, g)
    a = svc.analyse_batch(chips[:2])
    tnames, tpl, counts = svc.gallery.templates()
    k = tnames.index("alice")
    np.testing.assert_allclose(tpl[k], np.mean([a[0].embedding, a[1].embedding], axis=0), atol=1e-5)
    assert counts[k] == 2 and svc.gallery.integrity_check() == "ok"
    with sqlite3.connect(g) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        hashes = {h for (h,) in db.execute("SELECT image_sha256 FROM embeddings WHERE name='alice'")}
    import hashlib

    assert hashes == {hashlib.sha256(png(ch)).hexdigest() for ch in chips[:2]}
    with TestClient(create_app(svc)) as c:
        assert c.delete("/v1/identities/alice", headers={"X-API-Key": KEY}).json() == {"deleted": "alice"}
        assert c.delete("/v1/identities/alice", headers={"X-API-Key": KEY}).status_code == 404
        assert c.get("/v1/identities").json()["count"] == 5


def test_empty_gallery_and_no_key_configured(tiny_run: Path, tmp_path: Path, faces) -> None:
    from frad.service import ServiceSettings, build_service, create_app

    svc = build_service(tiny_run, gallery=tmp_path / "e.sqlite", settings=ServiceSettings(report_only=True),
                        import_run_gallery=False)
    with TestClient(create_app(svc)) as c:
        r = identify(c, faces[0][0])
        assert r.status_code == 409 and "empty" in r.json()["error"]
        r = c.post("/v1/enroll", files=[("images", ("a.png", png(faces[0][0]), "image/png"))],
                   data={"name": "x", "aligned": "true"}, headers={"X-API-Key": "anything"})
        assert r.status_code == 403 and "no API key" in r.json()["error"]


# ---------------------------------------------------------------------------- bad requests
def test_every_bad_request_gets_a_4xx_json_error(tiny_run: Path, tmp_path: Path, faces) -> None:
    from frad.service import create_app

    chips, _ = faces
    svc = make_service(tiny_run, tmp_path / "g.sqlite", max_upload_bytes=200_000, max_image_pixels=1_000_000)
    good = png(chips[0])
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")  # 144 M pixels in a few kB
    blank = np.full((300, 300, 3), 128, np.uint8)
    cases = [
        ("not an image", {"image": ("x.png", b"hello, world" * 10, "image/png")}, {}, 415, "not a JPEG, PNG or WebP"),
        ("gif", {"image": ("x.gif", png(chips[0], "GIF"), "image/gif")}, {}, 415, "not a JPEG, PNG or WebP"),
        ("truncated", {"image": ("x.png", good[: len(good) // 2], "image/png")}, {"aligned": "true"}, 400, "truncated"),
        ("empty", {"image": ("x.png", b"", "image/png")}, {}, 400, "empty"),
        ("bomb", {"image": ("x.png", bomb.getvalue(), "image/png")}, {}, 413, "pixels"),
        ("too many bytes", {"image": ("x.png", b"\x89PNG" + bytes(250_000), "image/png")}, {}, 413, "bytes"),
        ("no face", {"image": ("x.png", png(blank), "image/png")}, {}, 422, "no face"),
        ("not a chip", {"image": ("x.png", png(blank), "image/png")}, {"aligned": "true"}, 422, "150x150"),
        ("missing image", None, {"aligned": "true"}, 422, "image"),
        ("bad top_k", {"image": ("x.png", good, "image/png")}, {"top_k": "many"}, 422, "top_k"),
    ]
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        for what, files, data, status, words in cases:
            r = c.post("/v1/identify", files=files, data=data)
            assert r.status_code == status, (what, r.status_code, r.text)
            body = r.json()
            assert words in body["error"], (what, body)
            assert "Traceback" not in r.text
        r = c.post("/v1/identify", content=b"x" * 500_000, headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = c.post("/v1/identify", content=b"--b\r\nbroken", headers={"content-type": "multipart/form-data; boundary=b"})
        assert 400 <= r.status_code < 500 and "error" in r.json()
        assert c.get("/v1/nothing").status_code == 404 and c.get("/v1/nothing").json()["error"] == "no such endpoint"
        assert c.get("/v1/identify").status_code == 405
        webp = c.post("/v1/identify", files={"image": ("x.webp", png(chips[0], "WEBP"), "image/webp")},
                      data={"aligned": "true"})
        assert webp.status_code == 200
        jpeg = c.post("/v1/identify", files={"image": ("x.jpg", png(chips[0], "JPEG"), "image/jpeg")},
                      data={"aligned": "true"})
        assert jpeg.status_code == 200
        # an unexpected failure is a 500 with a fixed message, never a traceback
        svc.gallery.templates = None  # type: ignore[assignment]
        r = identify(c, chips[0])
        assert r.status_code == 500 and r.json() == {"error": "internal error (logged on the server)"}
        assert c.get("/healthz").json()["status"] == "ok"


# ---------------------------------------------------------------------------- attacks for the page
def test_attack_endpoint_makes_an_adversarial_within_its_budget(client: TestClient, faces) -> None:
    import base64

    chips, names = faces
    target = next(n for n in client.service.parts.template_names if n != names[0])  # type: ignore[attr-defined]
    r = client.post("/v1/attack", files={"image": ("a.png", png(chips[0]), "image/png")},
                    data={"aligned": "true", "kind": "bim", "target": target, "epsilon": "0.03"})
    assert r.status_code == 200, r.json()
    body = r.json()
    adv = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["adversarial_png"]))))
    orig = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["original_png"]))))
    np.testing.assert_array_equal(orig, chips[0])
    d = np.abs(adv.astype(int) - orig.astype(int)).max()
    assert 0 < d <= 7 and body["linf_grey_levels"] == d  # floor(0.03 x 255) grey levels
    got = identify(client, adv).json()
    assert got["candidates"][0]["name"] == target  # the FR system is fooled towards the target
    r = client.post("/v1/attack", files={"image": ("a.png", png(chips[0]), "image/png")},
                    data={"aligned": "true", "kind": "bim", "target": "nobody"})
    assert r.status_code == 404
    r = client.post("/v1/attack", files={"image": ("a.png", png(chips[0]), "image/png")},
                    data={"aligned": "true", "kind": "magic", "target": target})
    assert r.status_code == 422 and "kind" in r.json()["error"]


def test_deep_features_attack_endpoint(tiny_run: Path, tmp_path: Path, faces) -> None:
    import base64

    from frad.service import create_app

    chips, _ = faces
    svc = make_service(tiny_run, tmp_path / "g.sqlite", attack_max_iterations=15)
    with TestClient(create_app(svc)) as c:
        r = c.post("/v1/attack", files={"image": ("a.png", png(chips[0]), "image/png")},
                   data={"aligned": "true", "kind": "deep_features", "epsilon": "5"})
        assert r.status_code == 200, r.json()
        adv = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["adversarial_png"]))))
        assert np.abs(adv.astype(int) - chips[0].astype(int)).max() <= 5


# ---------------------------------------------------------------------------- the micro-batcher
def test_micro_batcher_groups_concurrent_requests_and_runs_a_lone_one_at_once() -> None:
    from frad.service.batcher import MicroBatcher

    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.02)
        return [i * 2 for i in items]

    b = MicroBatcher(fn, max_batch=8, window_ms=200)
    b.start()
    try:
        t0 = time.perf_counter()
        assert b.submit(3).result(timeout=5) == 6  # nobody else is coming: no waiting for the window
        assert time.perf_counter() - t0 < 0.15
        results: list[int] = []

        def client(i: int, ready: threading.Barrier) -> None:
            with b.expecting():
                ready.wait()
                time.sleep(0.005 * i)  # arrive spread over 30 ms, within the window
                fut = b.submit(i)
            results.append(fut.result(timeout=5))

        ready = threading.Barrier(7)
        threads = [threading.Thread(target=client, args=(i, ready)) for i in range(7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [2 * i for i in range(7)]
        assert sizes[1:] == [7]
        b1 = MicroBatcher(fn, max_batch=1)
        b1.start()
        futs = [b1.submit(i) for i in range(3)]
        assert [f.result(timeout=5) for f in futs] == [0, 2, 4]
        b1.stop()
    finally:
        b.stop()


def test_serve_cli_errors_clearly(tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a frad run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the page, in a browser
CHROMIUM = Path("/usr/bin/chromium")


def test_a_body_that_stops_short_gets_408_over_real_http(tiny_run: Path, tmp_path: Path) -> None:
    """uvicorn on loopback: a client announcing more bytes than it sends is answered 408 after
    the body timeout, and one announcing too many bytes 413 at once."""
    import uvicorn

    from frad.service import create_app

    svc = make_service(tiny_run, tmp_path / "g.sqlite")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc, body_timeout=1.0), host="127.0.0.1", port=port,
                                           log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)

        def raw(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                s.sendall(data)
                buf = b""
                while b"\r\n\r\n" not in buf or not buf.rstrip().endswith(b"}"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                return buf

        head = b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        t0 = time.perf_counter()
        got = raw(head + b"Content-Length: 5000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc")
        assert got.startswith(b"HTTP/1.1 408") and b"stopped short" in got, got[:300]
        assert 0.9 < time.perf_counter() - t0 < 10
        got = raw(head + b"Content-Length: 999999999\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 413") and b"limit" in got, got[:300]
    finally:
        server.should_exit = True
        th.join(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_web_page_identifies_an_lfw_face_and_shows_an_adversarial(tiny_run: Path, tmp_path: Path, lfw_dir: Path) -> None:
    """Enrol an LFW person through the API, then drive the page in chromium: upload another
    photo of them, read the identity and verdict, make an adversarial and read its verdict."""
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import httpx
    import uvicorn

    from frad.service import create_app

    person = "Colin_Powell"
    photos = sorted((lfw_dir / "images" / person).glob("*.jpg"))
    if len(photos) < 5:
        pytest.skip(f"{person} not found in {lfw_dir}")
    svc = make_service(tiny_run, tmp_path / "g.sqlite", report_only=True)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:4]]
        r = httpx.post(f"{base}/v1/enroll", files=files, data={"name": person}, headers={"X-API-Key": KEY}, timeout=60)
        assert r.status_code == 201, r.text
        probe = photos[4]
        api = httpx.post(f"{base}/v1/identify", files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
                         timeout=60).json()
        assert api["candidates"][0]["name"] == person  # identity may be null: the threshold is synthetic faces'
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page()
                page.goto(base + "/")
                page.set_input_files("#file", str(probe))
                page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
                shown = page.text_content("#identity")
                assert shown == (person if api["identity"] else f"unknown (closest: {person})")
                verdict = page.text_content("#verdict")
                assert verdict.startswith(api["detector"]["verdict"])
                assert page.get_attribute("#face", "src").startswith("data:image/png;base64,")
                target = svc.parts.template_names[0]
                page.select_option("#attack-target", target)
                page.select_option("#attack-kind", "bim")
                page.click("#attack-btn")
                page.wait_for_function("document.getElementById('attack-status').textContent === 'done'",
                                       timeout=120_000)
                assert page.get_attribute("#adv-image", "src").startswith("data:image/png;base64,")
                assert page.get_attribute("#adv-download", "href").startswith("data:image/png;base64,")
                adv_verdict = page.text_content("#adv-verdict")
                assert adv_verdict.split(" ")[0].rstrip(":") in ("natural", "adversarial")
                adv_shown = page.text_content("#adv-identity")
                assert adv_shown not in ("", "-")
                fooled = page.text_content("#adv-fooled")
                assert fooled.startswith("yes") == (person not in adv_shown), (fooled, adv_shown)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        th.join(timeout=30)
