"""``frad serve``: the run's FR system, guarded by its detector, as an HTTP service with a web page."""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from ._common import add_device_flag

log = logging.getLogger("frad.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a finished run's face recognition, guarded by its detector (HTTP API and web page)",
        description="Load RUN's face network, templates, verification threshold and best detector, and answer "
        "identify / verify / enrol / detect requests over HTTP (needs the 'serve' extra: pip install 'frad[serve]'). "
        "Images the detector flags are refused unless --report-only.  Mutating endpoints need the API key: "
        "$FRAD_API_KEY, else --api-key-file, else RUN/service/api_key (created with a random key).",
    )
    p.add_argument("run", metavar="RUN", help="a run folder made by `frad run` or `frad demo`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--gallery", metavar="FILE", help="SQLite gallery file (default: RUN/service/gallery.sqlite)")
    p.add_argument("--empty-gallery", action="store_true",
                   help="start a new gallery empty instead of with the run's identities")
    p.add_argument("--detector", metavar="NAME", help="'<setting>/<key>', e.g. targeted/lstm-medoid-euclidean "
                   "(default: the best targeted detector of the run)")
    p.add_argument("--report-only", action="store_true",
                   help="answer flagged images (with the detector's verdict) instead of refusing them")
    p.add_argument("--api-key-file", metavar="FILE", help="file holding the API key (when $FRAD_API_KEY is not set)")
    p.add_argument("--max-upload-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)
    p.add_argument("--max-batch", type=int, default=32, help="largest network batch; 1 turns micro-batching off")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long a batch waits for requests still being decoded (default: 5 ms)")
    p.add_argument("--face-detector", choices=["hog", "hog+cnn"], default="hog",
                   help="finding faces in uploads: dlib's HOG (default), or HOG then dlib's slow CNN for misses")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    add_device_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..service.app import create_app
    except ImportError as exc:
        raise ConfigError(f"frad serve needs the 'serve' extra: pip install 'frad[serve]' ({exc})") from None
    from pathlib import Path

    import torch

    from ..service.build import build_service, resolve_api_key
    from ..service.engine import ServiceSettings
    from ..utils.devices import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: must be in 1..65535, got {args.port}")
    run_dir = Path(args.run)
    key, source = resolve_api_key(args.api_key_file, run_dir / "service" / "api_key")
    settings = ServiceSettings(
        report_only=args.report_only, max_upload_bytes=args.max_upload_bytes, max_image_pixels=args.max_image_pixels,
        max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, face_detector=args.face_detector, api_key=key,
    )
    service = build_service(run_dir, gallery=args.gallery, settings=settings, detector=args.detector,
                            import_run_gallery=not args.empty_gallery, device=resolve_device(args.device, field="--device"))
    log.info("API key for enrol/delete from %s; flagged images are %s", source,
             "reported only" if args.report_only else "refused")
    log.info("serving on http://%s:%d/ (page), http://%s:%d/docs (API)", args.host, args.port, args.host, args.port)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
