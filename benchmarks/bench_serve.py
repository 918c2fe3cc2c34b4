"""frad serve under load and faults (loopback only, bounded in time and requests).

Parts (all against `frad serve RUN` started as a subprocess on 127.0.0.1):

1. throughput: 16 concurrent clients sending identify requests, micro-batching off
   (--max-batch 1) and on, alternated ``--rounds`` times; both with whole LFW photos (the
   server finds and aligns the face) and with aligned chips (aligned=true: the network alone).
2. latency: one client, identify requests one after another, against the same work done
   in-process (decode, align, network + detector, identify) in this process, alternated.
3. load: 16 clients mixing identify / verify / enrol for ``--load-seconds``, while a 17th
   sends bad requests (each kind the service must refuse) and checks each gets its 4xx;
   afterwards the gallery must hold exactly the acknowledged enrolments.
4. fault: enrolment burst, the server killed with SIGKILL, restarted on the same gallery:
   the database passes PRAGMA integrity_check and every acknowledged enrolment is there.

    python benchmarks/bench_serve.py --run runs/demo --lfw-dir /work/shared/data/lfw [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

KEY = "bench-key-" + "x" * 24
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`frad serve` in a subprocess on a free loopback port."""

    report_only = False

    def __init__(self, run: Path, gallery: Path, *, max_batch: int, threads: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FRAD_API_KEY": KEY, "OMP_NUM_THREADS": str(threads)}
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "frad", "serve", str(run), "--port", str(self.port), "--gallery", str(gallery),
             "--max-batch", str(max_batch), "--threads", str(threads), *(["--report-only"] if self.report_only else [])],
            stdout=self.log, stderr=self.log, env=env,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"frad serve exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.proc.kill()
        raise RuntimeError("frad serve did not start within 180 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def lat_summary(xs: list[float]) -> dict[str, float | None]:
    return {"n": len(xs), "p50_ms": _ms(pct(xs, 50)), "p95_ms": _ms(pct(xs, 95)), "p99_ms": _ms(pct(xs, 99))}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(1000 * v, 1)


# ---------------------------------------------------------------------------- data
def lfw_photos(lfw: Path, people: int, per: int, seed: int = 0) -> dict[str, list[Path]]:
    root = lfw / "images" if (lfw / "images").is_dir() else lfw
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= per)
    rng = random.Random(seed)
    chosen = rng.sample(dirs, min(people, len(dirs)))
    return {d.name: sorted(d.glob("*.jpg"))[:per] for d in chosen}


def chips_of(paths: list[Path]) -> list[bytes]:
    """Aligned 150 x 150 chips (PNG bytes) of photos, cut with frad's aligner (dlib HOG)."""
    from PIL import Image

    from frad.data.alignment import AlignmentSettings, FaceAligner
    from frad.data.images import load_rgb

    al = FaceAligner(AlignmentSettings(detector="hog", fallback="centre"))
    out = []
    for p in paths:
        chip, _, _ = al.align(load_rgb(p))
        b = io.BytesIO()
        Image.fromarray(chip).save(b, format="PNG")
        out.append(b.getvalue())
    return out


# ---------------------------------------------------------------------------- 1. throughput
def hammer(base: str, payloads: list[bytes], aligned: bool, seconds: float, clients: int, max_requests: int) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    count = [0]

    def worker(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            k = i
            while time.perf_counter() < stop:
                with lock:
                    if count[0] >= max_requests:
                        return
                    count[0] += 1
                body = payloads[k % len(payloads)]
                k += clients
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/identify", files={"image": ("x", body, "image/png" if aligned else "image/jpeg")},
                               data={"aligned": "true" if aligned else "false"})
                    ok = r.status_code == 200 or (r.status_code == 422 and r.json().get("code") == "flagged_adversarial")
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                with lock:
                    lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "seconds": round(wall, 2), "throughput_rps": round(len(lat) / wall, 2),
            "errors": len(errors), "error_examples": errors[:3], **lat_summary(lat)}


def part_throughput(args: argparse.Namespace, work: Path, photos: list[Path], chips: list[bytes]) -> dict:
    jpegs = [p.read_bytes() for p in photos]
    rows: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for batching in ((False, True) if r % 2 == 0 else (True, False)):
            mb = args.max_batch if batching else 1
            srv = Server(args.run, work / f"tp-{r}-{mb}.sqlite", max_batch=mb, threads=args.threads, log=work / "server.log")
            try:
                hammer(srv.base, chips, True, 3, CLIENTS, 10**6)  # warm-up: network, allocator
                hammer(srv.base, jpegs, False, 3, CLIENTS, 10**6)  # warm-up: the face aligners
                for what, payload, aligned in (("chips", chips, True), ("photos", jpegs, False)):
                    res = hammer(srv.base, payload, aligned, args.tp_seconds, CLIENTS, args.max_requests)
                    rows.setdefault(f"{what}-{'batched' if batching else 'unbatched'}", []).append(res)
                    print(f"  round {r} {what:6s} batching={'on ' if batching else 'off'}: {res['throughput_rps']:.2f} req/s, "
                          f"p50 {res['p50_ms']} ms, errors {res['errors']}", flush=True)
            finally:
                srv.stop()
    out: dict = {"rounds": rows}
    for what in ("chips", "photos"):
        on = [x["throughput_rps"] for x in rows[f"{what}-batched"]]
        off = [x["throughput_rps"] for x in rows[f"{what}-unbatched"]]
        ratios = [a / b for a, b in zip(on, off) if b > 0]
        out[what] = {"batched_rps_median": statistics.median(on), "unbatched_rps_median": statistics.median(off),
                     "ratio_median": round(statistics.median(ratios), 2) if ratios else None,
                     "ratios": [round(x, 2) for x in ratios], "goal": 1.5}
    return out


# ---------------------------------------------------------------------------- 2. latency
def part_latency(args: argparse.Namespace, work: Path, photos: list[Path]) -> dict:
    import torch

    from frad.service import ServiceSettings, build_service

    torch.set_num_threads(args.threads)
    jpegs = [p.read_bytes() for p in photos]
    svc = build_service(args.run, gallery=work / "lat-inproc.sqlite", settings=ServiceSettings(api_key=KEY))

    def in_process(data: bytes) -> None:
        chip, _, _ = svc.prepare(data, field="image")
        (a,) = svc.analyse_batch([chip])
        svc.verdict(a.score)
        svc.identify(a)

    srv = Server(args.run, work / "lat.sqlite", max_batch=args.max_batch, threads=args.threads, log=work / "server.log")
    http_lat: list[float] = []
    local_lat: list[float] = []
    try:
        with httpx.Client(base_url=srv.base, timeout=120) as c:
            for d in jpegs[:3]:  # warm both
                c.post("/v1/identify", files={"image": ("x.jpg", d, "image/jpeg")})
                in_process(d)
            for i in range(args.latency_requests):
                d = jpegs[i % len(jpegs)]
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for o in order:
                    t0 = time.perf_counter()
                    if o == 0:
                        r = c.post("/v1/identify", files={"image": ("x.jpg", d, "image/jpeg")})
                        assert r.status_code in (200, 422), r.text
                        http_lat.append(time.perf_counter() - t0)
                    else:
                        in_process(d)
                        local_lat.append(time.perf_counter() - t0)
    finally:
        srv.stop()
    p_http, p_local = statistics.median(http_lat), statistics.median(local_lat)
    return {"service": lat_summary(http_lat), "in_process": lat_summary(local_lat),
            "ratio_p50": round(p_http / p_local, 3), "goal": 1.3}


# ---------------------------------------------------------------------------- bad requests
def _raw(base_port: int, data: bytes, read: bool = True) -> int:
    """Send raw bytes on a socket (kept open, as a stalled client would), return the HTTP status or 0."""
    with socket.create_connection(("127.0.0.1", base_port), timeout=30) as s:
        s.sendall(data)
        buf = b""
        while read and b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    try:
        return int(buf.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def bad_requests(base: str, port: int, good_jpeg: bytes, known: str) -> list[tuple[str, callable, int]]:
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")
    blank = io.BytesIO()
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank, format="PNG")
    big = b"\xff\xd8" + bytes(20 * 1024 * 1024)
    f = {"image": ("x.jpg", good_jpeg, "image/jpeg")}
    body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + good_jpeg[:2000])
    truncated_body = (f"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      f"Content-Length: {len(body) + 5000}\r\n\r\n").encode() + body

    def post(path: str, **kw):  # noqa: ANN003, ANN202
        return lambda c: c.post(path, **kw).status_code

    return [
        ("not an image", post("/v1/identify", files={"image": ("x.jpg", b"not an image at all", "image/jpeg")}), 415),
        ("no face", post("/v1/identify", files={"image": ("x.png", blank.getvalue(), "image/png")}), 422),
        ("too large (bytes)", post("/v1/identify", files={"image": ("x.jpg", big, "image/jpeg")}), 413),
        ("too large (pixels, decompression bomb)", post("/v1/identify", files={"image": ("x.png", bomb.getvalue(), "image/png")}), 413),
        ("truncated image", post("/v1/identify", files={"image": ("x.jpg", good_jpeg[: len(good_jpeg) // 3], "image/jpeg")}), 400),
        ("unknown identity", post("/v1/verify", files=f, data={"identity": "no-such-person"}), 404),
        ("missing key", post("/v1/enroll", files={"images": f["image"]}, data={"name": "x"}), 401),
        ("wrong key", post("/v1/enroll", files={"images": f["image"]}, data={"name": "x"}, headers={"X-API-Key": "wrong"}), 403),
        ("missing field", post("/v1/identify", data={"top_k": "3"}), 422),
        ("delete unknown", lambda c: c.delete("/v1/identities/no-such-person", headers={"X-API-Key": KEY}).status_code, 404),
        ("oversized Content-Length", lambda c: _raw(port, b"POST /v1/identify HTTP/1.1\r\nHost: x\r\n"
                                                    b"Content-Type: multipart/form-data; boundary=b\r\n"
                                                    b"Content-Length: 999999999\r\n\r\n"), 413),
        ("truncated body (stops short of Content-Length)", lambda c: _raw(port, truncated_body), 408),
    ]


# ---------------------------------------------------------------------------- 3. load
def part_load(args: argparse.Namespace, work: Path, people: dict[str, list[Path]]) -> dict:
    srv = Server(args.run, work / "load.sqlite", max_batch=args.max_batch, threads=args.threads, log=work / "server.log")
    names = list(people)
    jpegs = {n: [p.read_bytes() for p in ps] for n, ps in people.items()}
    rng0 = random.Random(1)
    lat: dict[str, list[float]] = {"identify": [], "verify": [], "enroll": []}
    statuses: dict[str, dict[int, int]] = {k: {} for k in lat}
    errors: list[str] = []
    acked: set[str] = set()
    lock = threading.Lock()
    stop = time.perf_counter() + args.load_seconds
    sent = [0]
    try:
        known = httpx.get(srv.base + "/v1/identities").json()["identities"][0]["name"]

        def client(i: int) -> None:
            rng = random.Random(100 + i)
            n_enrol = 0
            with httpx.Client(base_url=srv.base, timeout=120) as c:
                while time.perf_counter() < stop:
                    with lock:
                        if sent[0] >= args.max_requests:
                            return
                        sent[0] += 1
                    who = rng.choice(names)
                    img = rng.choice(jpegs[who])
                    op = rng.choices(["identify", "verify", "enroll"], weights=[6, 3, 1])[0]
                    t0 = time.perf_counter()
                    try:
                        if op == "identify":
                            r = c.post("/v1/identify", files={"image": ("x.jpg", img, "image/jpeg")})
                        elif op == "verify":
                            r = c.post("/v1/verify", files={"image": ("x.jpg", img, "image/jpeg")}, data={"identity": known})
                        else:
                            name = f"load-{i}-{n_enrol}"
                            n_enrol += 1
                            r = c.post("/v1/enroll", files=[("images", ("x.jpg", img, "image/jpeg"))],
                                       data={"name": name}, headers={"X-API-Key": KEY})
                            if r.status_code in (200, 201):
                                with lock:
                                    acked.add(name)
                    except httpx.HTTPError as exc:
                        with lock:
                            errors.append(f"{op}: {exc!r}")
                        continue
                    dt = time.perf_counter() - t0
                    with lock:
                        lat[op].append(dt)
                        statuses[op][r.status_code] = statuses[op].get(r.status_code, 0) + 1
                        # 422 'flagged_adversarial' is the detector refusing a natural photo: a false alarm, not an error
                        if r.status_code >= 500 or (r.status_code >= 400 and r.json().get("code") != "flagged_adversarial"):
                            errors.append(f"{op}: {r.status_code} {r.text[:120]}")

        bad_results: list[dict] = []

        def bad_client() -> None:
            good = jpegs[names[0]][0]
            cases = bad_requests(srv.base, srv.port, good, known)
            with httpx.Client(base_url=srv.base, timeout=120) as c:
                k = 0
                while time.perf_counter() < stop - 2 and k < 10 * len(cases):
                    what, fn, want = cases[k % len(cases)]
                    try:
                        got = fn(c)
                    except (httpx.HTTPError, OSError) as exc:
                        got = repr(exc)
                    bad_results.append({"request": what, "expected": want, "got": got})
                    k += 1
                    time.sleep(rng0.uniform(0.5, 1.5))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=bad_client))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        healthy = httpx.get(srv.base + "/healthz", timeout=30).json()["status"] == "ok"
        gallery = {x["name"] for x in httpx.get(srv.base + "/v1/identities", timeout=30).json()["identities"]}
        load_names = {n for n in gallery if n.startswith("load-")}
        metrics_text = httpx.get(srv.base + "/metrics", timeout=30).text
    finally:
        srv.stop()
    total = sum(len(v) for v in lat.values())
    by_kind: dict[str, dict] = {}
    for b in bad_results:
        d = by_kind.setdefault(b["request"], {"expected": b["expected"], "sent": 0, "as_expected": 0, "got": set()})
        d["sent"] += 1
        d["as_expected"] += int(b["got"] == b["expected"])
        d["got"].add(str(b["got"]))
    for d in by_kind.values():
        d["got"] = sorted(d["got"])
    flagged = sum(v for k, v in statuses["identify"].items() if k == 422)
    return {
        "seconds": round(wall, 1), "requests": total, "throughput_rps": round(total / wall, 2),
        "latency": {k: lat_summary(v) for k, v in lat.items()}, "all": lat_summary([x for v in lat.values() for x in v]),
        "statuses": {k: {str(s): n for s, n in v.items()} for k, v in statuses.items()},
        "errors": len(errors), "error_examples": errors[:5], "flagged_refusals_identify": flagged,
        "enrolments_acknowledged": len(acked), "gallery_load_identities": len(load_names),
        "gallery_matches_acknowledged": load_names == acked,
        "bad_requests": by_kind, "bad_requests_all_as_expected": all(d["sent"] == d["as_expected"] for d in by_kind.values()),
        "healthy_after": healthy, "batch_size_histogram": [ln for ln in metrics_text.splitlines() if ln.startswith("frad_batch_size")],
    }


# ---------------------------------------------------------------------------- 4. fault
def part_fault(args: argparse.Namespace, work: Path, people: dict[str, list[Path]]) -> dict:
    gallery = work / "fault.sqlite"
    imgs = [p.read_bytes() for ps in people.values() for p in ps]
    trials = []
    for trial in range(args.fault_trials):
        srv = Server(args.run, gallery, max_batch=args.max_batch, threads=args.threads, log=work / "server.log")
        acked: set[str] = set()
        codes: dict[str, int] = {}
        lock = threading.Lock()
        killed = threading.Event()

        def burst(i: int) -> None:
            with httpx.Client(base_url=srv.base, timeout=60) as c:
                k = 0
                while not killed.is_set() and k < 200:
                    name = f"fault-{trial}-{i}-{k}"
                    try:
                        r = c.post("/v1/enroll", files=[("images", ("x.jpg", imgs[(i * 7 + k) % len(imgs)], "image/jpeg"))],
                                   data={"name": name}, headers={"X-API-Key": KEY})
                        with lock:
                            codes[str(r.status_code)] = codes.get(str(r.status_code), 0) + 1
                            if r.status_code in (200, 201):
                                acked.add(name)
                    except httpx.HTTPError as exc:
                        with lock:
                            codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                    k += 1

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        t_start = time.time()  # kill once the burst is well under way (some enrolments acknowledged)
        while time.time() - t_start < 90:
            with lock:
                if len(acked) >= args.fault_after_acks:
                    break
            time.sleep(0.05)
        time.sleep(random.Random(trial).uniform(0.0, 0.5))
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        killed.set()
        for t in threads:
            t.join()
        srv.log.close()
        with sqlite3.connect(gallery) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        srv2 = Server(args.run, gallery, max_batch=args.max_batch, threads=args.threads, log=work / "server.log")
        try:
            names = {x["name"] for x in httpx.get(srv2.base + "/v1/identities", timeout=30).json()["identities"]}
            healthy = httpx.get(srv2.base + "/healthz", timeout=30).status_code == 200
        finally:
            srv2.stop()
        with sqlite3.connect(gallery) as db:
            integrity2 = db.execute("PRAGMA integrity_check").fetchone()[0]
        ours = {n for n in names if n.startswith(f"fault-{trial}-")}
        trials.append({"answers": codes, "acknowledged": len(acked), "present": len(ours), "missing": sorted(acked - ours)[:10],
                       "unacknowledged_but_committed": len(ours - acked), "integrity_after_kill": integrity,
                       "integrity_after_restart": integrity2, "restarted_healthy": healthy})
        print(f"  fault trial {trial}: {trials[-1]}", flush=True)
    return {"trials": trials, "all_acknowledged_present": all(not t["missing"] for t in trials),
            "integrity_ok": all(t["integrity_after_kill"] == "ok" == t["integrity_after_restart"] for t in trials)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--lfw-dir", type=Path, default=os.environ.get("FRAD_LFW_DIR"))
    ap.add_argument("--parts", default="throughput,latency,load,fault")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (batching off/on alternated)")
    ap.add_argument("--tp-seconds", type=float, default=20.0)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--latency-requests", type=int, default=40)
    ap.add_argument("--max-requests", type=int, default=20_000, help="cap per phase")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (and of the in-process side)")
    ap.add_argument("--fault-trials", type=int, default=2)
    ap.add_argument("--fault-after-acks", type=int, default=20,
                    help="SIGKILL once this many enrolments were acknowledged (plus 0-0.5 s)")
    ap.add_argument("--report-only", action="store_true", help="serve with --report-only (flagged images answered)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.lfw_dir:
        ap.error("--lfw-dir (or FRAD_LFW_DIR) is needed")
    if not (args.run / "detection" / "results.json").is_file():
        ap.error(f"{args.run}: not a run with detectors (run `frad demo` first)")
    Server.report_only = args.report_only
    people = lfw_photos(Path(args.lfw_dir), people=12, per=10)
    photos = [p for ps in people.values() for p in ps]
    out: dict = {"run": str(args.run), "report_only": args.report_only, "clients": CLIENTS, "threads": args.threads, "max_batch": args.max_batch,
                 "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="frad-bench-serve-") as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        if "throughput" in parts:
            print("throughput (16 clients, identify):", flush=True)
            out["throughput"] = part_throughput(args, work, photos[:48], chips_of(photos[:48]))
        if "latency" in parts:
            print("latency (1 client vs in-process):", flush=True)
            out["latency"] = part_latency(args, work, photos[:20])
            print(f"  {out['latency']}", flush=True)
        if "load" in parts:
            print(f"load ({CLIENTS} clients, mixed, {args.load_seconds:.0f} s, bad requests alongside):", flush=True)
            out["load"] = part_load(args, work, people)
        if "fault" in parts:
            print("fault (SIGKILL during an enrolment burst):", flush=True)
            out["fault"] = part_fault(args, work, people)
    text = json.dumps(out, indent=1, default=str)
    print(text if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
