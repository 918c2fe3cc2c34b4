"""The HTTP layer: FastAPI routes over :class:`~frad.service.engine.FaceService`.

Every error a client can cause is answered with a 4xx JSON body ``{"error": "...", ...}``
naming the field and what was wrong; anything else is a 500 with a fixed message (the
traceback goes to the server's log only).  Mutating endpoints need the API key
(``X-API-Key`` header or ``Authorization: Bearer``), compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .engine import Analysis, FaceService
from .metrics import ServiceMetrics, route_label
from .uploads import UploadError

__all__ = ["create_app"]

log = logging.getLogger("frad.serve")
_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,128}$")
_SLACK = 64 * 1024  # multipart headers and text fields on top of the images


def _json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class _Guard:
    """Outermost ASGI layer: request-body limit, metrics, and no traceback ever to a client."""

    def __init__(self, app: Any, *, metrics: ServiceMetrics, max_body: int, body_timeout: float = 10.0) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = {"status": 500, "started": False, "too_large": False, "received": 0, "timed_out": False}
        route = route_label(scope.get("path", ""))
        scope["frad.guard"] = state  # lets the error handlers name a body cut off by this layer

        async def send_wrapper(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                state["status"] = msg["status"]
                state["started"] = True
            await send(msg)

        async def reply(status: int, message: str) -> None:
            if state["started"]:
                return
            body = json.dumps({"error": message}).encode()
            try:
                await send_wrapper({"type": "http.response.start", "status": status,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            except Exception:  # noqa: BLE001 - the client is gone
                state["status"] = status

        async def receive_wrapper() -> dict[str, Any]:
            if state["started"]:
                return await receive()  # after the answer: only the disconnect is left to wait for
            try:
                msg = await asyncio.wait_for(receive(), timeout=self.body_timeout)
            except asyncio.TimeoutError:
                state["timed_out"] = True  # a body that stops short of its announced length
                return {"type": "http.disconnect"}
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > self.max_body:
                    state["too_large"] = True
                    return {"type": "http.disconnect"}
            return msg

        headers = dict(scope.get("headers") or [])
        try:
            cl = headers.get(b"content-length")
            if cl is not None and (not cl.isdigit() or int(cl) > self.max_body):
                await reply(413 if cl.isdigit() else 400,
                            f"request body of {cl.decode(errors='replace')} bytes; the limit is {self.max_body} bytes"
                            if cl.isdigit() else "Content-Length is not a number")
                return
            await self.app(scope, receive_wrapper, send_wrapper)
            if state["too_large"]:
                await reply(413, f"request body larger than the limit of {self.max_body} bytes")
            elif state["timed_out"]:
                await reply(408, f"the request body stopped short of its announced length (waited {self.body_timeout:g} s)")
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            from starlette.requests import ClientDisconnect

            if state["too_large"]:
                await reply(413, f"request body larger than the limit of {self.max_body} bytes")
            elif state["timed_out"]:
                await reply(408, f"the request body stopped short of its announced length (waited {self.body_timeout:g} s)")
            elif isinstance(exc, ClientDisconnect):
                await reply(400, "the request body ended before its announced length")
            else:
                log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
                await reply(500, "internal error (logged on the server)")
        finally:
            self.metrics.requests.labels(route, scope.get("method", ""), str(state["status"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def create_app(service: FaceService, *, metrics: ServiceMetrics | None = None, max_body: int | None = None,
               body_timeout: float = 10.0) -> FastAPI:
    """The FastAPI application serving ``service`` (started and stopped with the app).

    Long because: the HTTP API's route table; each route is a closure over the service, its metrics
    and the body limit, so the routes are defined where the app is built.
    """
    metrics = metrics or ServiceMetrics()
    settings = service.settings
    if max_body is None:
        max_body = settings.max_upload_bytes * 2 + _SLACK
    service.batcher.on_batch = lambda n: metrics.batch_size.observe(n)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        service.start()
        metrics.identities.set(len(service.gallery))
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="frad serve", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.metrics = metrics

    # ------------------------------------------------------------------ errors as JSON
    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return _json_error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
        return _json_error(422, "; ".join(problems) or "invalid request", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        guard = request.scope.get("frad.guard") or {}
        if guard.get("too_large"):
            return _json_error(413, f"request body larger than the limit of {max_body} bytes")
        if guard.get("timed_out"):
            return _json_error(408, "the request body stopped short of its announced length")
        msg = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = "no such endpoint"
        elif exc.status_code == 405:
            msg = "method not allowed on this endpoint"
        return _json_error(exc.status_code, msg)

    # ------------------------------------------------------------------ helpers
    def require_key(request: Request) -> None:
        key = settings.api_key
        if not key:
            raise UploadError(403, "this endpoint is disabled: the server has no API key configured")
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise UploadError(401, "missing API key: send it in the X-API-Key header")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
            raise UploadError(403, "wrong API key")

    async def analyse(upload: UploadFile, field: str, aligned: bool) -> tuple[Any, str, str, Analysis]:
        data = await upload.read()
        with service.batcher.expecting():
            chip, sha, how = await asyncio.wrap_future(service.submit_prepare(data, field=field, aligned=aligned))
            fut = service.batcher.submit(chip)
        a = await asyncio.wrap_future(fut)
        return chip, sha, how, a

    def face_info(chip: Any, how: str, return_face: bool) -> dict[str, Any]:
        from .engine import png_base64

        out: dict[str, Any] = {"found_by": how, "width": int(chip.shape[1]), "height": int(chip.shape[0])}
        if return_face:
            out["png"] = png_base64(chip)
        return out

    def scored(route: str, a: Analysis, refuse: bool = True, what: str = "image") -> dict[str, Any]:
        v = service.verdict(a.score)
        metrics.scored.labels(route).inc()
        if v["flagged"]:
            metrics.flagged.labels(route, "reported" if settings.report_only or not refuse else "refused").inc()
        if refuse:
            service.check_flag(a, what)
        return v

    def check_name(name: str, field: str = "name") -> str:
        n = name.strip()
        if not _NAME.match(n):
            raise UploadError(422, f"{field}: 1 to 128 characters without control characters or slashes, got {name!r}")
        return n

    # ------------------------------------------------------------------ endpoints
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        d = service.detector
        return {"status": "ok", "version": __version__, "identities": len(service.gallery),
                "model": service.parts.model.info.name, "detector": getattr(d, "name_", None),
                "detector_threshold": float(d.threshold_), "policy": "report-only" if settings.report_only else "refuse",
                "batching": {"max_batch": settings.max_batch, "window_ms": settings.batch_window_ms}}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.identities.set(len(service.gallery))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/identities")
    async def identities() -> dict[str, Any]:
        rows = await run_in_threadpool(service.gallery.identities)
        return {"identities": rows, "count": len(rows)}

    @app.delete("/v1/identities/{name}")
    async def delete_identity(name: str, request: Request) -> dict[str, Any]:
        require_key(request)
        n = check_name(name)
        if not await run_in_threadpool(service.gallery.delete, n):
            raise UploadError(404, f"name: {n!r} is not enrolled")
        log.info("deleted identity %r", n)
        return {"deleted": n}

    @app.post("/v1/enroll")
    async def enroll(request: Request, name: str = Form(...), images: list[UploadFile] = File(...),
                     aligned: bool = Form(False)) -> JSONResponse:
        require_key(request)
        n = check_name(name)
        if len(images) > settings.max_enrol_images:
            raise UploadError(413, f"images: {len(images)} files, more than the limit of {settings.max_enrol_images}")
        results = await asyncio.gather(*(analyse(f, f"images[{i}]", aligned) for i, f in enumerate(images)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        verdicts = [scored("/v1/enroll", r[3], what=f"images[{i}]") for i, r in enumerate(results)]  # type: ignore[index]
        import numpy as np

        emb = np.stack([r[3].embedding for r in results])  # type: ignore[index]
        out = await run_in_threadpool(service.gallery.enrol, n, emb, [r[1] for r in results])  # type: ignore[index]
        log.info("enrolled %r: %d image(s) added, %d duplicate(s)", n, out.added, out.duplicates)
        return JSONResponse({"name": n, "added": out.added, "duplicates": out.duplicates, "embeddings": out.embeddings,
                             "created": out.created, "detector": verdicts}, status_code=201 if out.created else 200)

    @app.post("/v1/identify")
    async def identify(image: UploadFile = File(...), top_k: int = Form(0), aligned: bool = Form(False),
                       return_face: bool = Form(False)) -> dict[str, Any]:
        if not 0 <= top_k <= 100:
            raise UploadError(422, f"top_k: must be between 1 and 100 (0 = the server's default), got {top_k}")
        chip, _, how, a = await analyse(image, "image", aligned)
        face = face_info(chip, how, return_face)
        v = service.verdict(a.score)
        try:
            scored("/v1/identify", a)
        except UploadError as exc:
            exc.extra["face"] = face
            raise
        return {**service.identify(a, top_k or None), "detector": v, "face": face}

    @app.post("/v1/verify")
    async def verify(image: UploadFile = File(...), identity: str | None = Form(None),
                     image2: UploadFile | None = File(None), aligned: bool = Form(False)) -> dict[str, Any]:
        if (identity is None) == (image2 is None):
            raise UploadError(422, "verify needs an image and either 'identity' (a claimed enrolled name) or 'image2'")
        if identity is not None:
            name = check_name(identity, "identity")
            _, _, _, a = await analyse(image, "image", aligned)
            v = scored("/v1/verify", a)
            return {**service.verify_identity(a, name), "detector": v}
        (_, _, _, a), (_, _, _, b) = await asyncio.gather(analyse(image, "image", aligned),
                                                          analyse(image2, "image2", aligned))  # type: ignore[arg-type]
        va = scored("/v1/verify", a, what="image")
        vb = scored("/v1/verify", b, what="image2")
        return {**service.verify_pair(a, b), "detector": va, "detector2": vb}

    @app.post("/v1/detect")
    async def detect(image: UploadFile = File(...), aligned: bool = Form(False),
                     return_face: bool = Form(False)) -> dict[str, Any]:
        chip, _, how, a = await analyse(image, "image", aligned)
        v = scored("/v1/detect", a, refuse=False)
        return {**v, "probability": v["score"], "face": face_info(chip, how, return_face)}

    @app.post("/v1/attack")
    async def attack(image: UploadFile = File(...), kind: str = Form("bim"), target: str | None = Form(None),
                     epsilon: float | None = Form(None), aligned: bool = Form(False)) -> dict[str, Any]:
        data = await image.read()
        chip, _, _ = await asyncio.wrap_future(service.submit_prepare(data, field="image", aligned=aligned))
        t = check_name(target, "target") if target else None
        eps = epsilon if epsilon is not None else (0.03 if kind == "bim" else 10.0)
        t0 = time.perf_counter()
        out = await run_in_threadpool(service.attack, chip, kind=kind, target=t, epsilon=float(eps))
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out

    # ------------------------------------------------------------------ the web page
    static = files("frad.service") / "static"

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(static.joinpath("index.html").read_text(encoding="utf-8"))

    @app.get("/static/app.js")
    async def app_js() -> Response:
        return Response(static.joinpath("app.js").read_text(encoding="utf-8"), media_type="text/javascript")

    app.add_middleware(_Guard, metrics=metrics, max_body=max_body, body_timeout=body_timeout)
    return app
