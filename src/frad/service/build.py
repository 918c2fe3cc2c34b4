"""Putting a service together from a run folder, and the API key's sources."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .engine import FaceService, ServiceSettings
from ..detection import load_run_detector
from .loading import load_run_parts
from .store import Gallery

__all__ = ["build_service", "resolve_api_key", "API_KEY_ENV"]

log = logging.getLogger("frad.serve")
API_KEY_ENV = "FRAD_API_KEY"


def resolve_api_key(key_file: str | os.PathLike[str] | None, default_file: Path | None) -> tuple[str | None, str]:
    """The API key and where it came from (never the key itself in the description):
    ``$FRAD_API_KEY``, else ``key_file``, else ``default_file`` (created with a random key,
    readable by its owner only, when missing)."""
    env = os.environ.get(API_KEY_ENV)
    if env:
        return env.strip(), f"${API_KEY_ENV}"
    path = Path(key_file) if key_file else default_file
    if path is None:
        return None, "none"
    if not path.is_file():
        if key_file:
            raise ConfigError(f"--api-key-file: {path} not found")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 16:
        raise ConfigError(f"{path}: the API key must be at least 16 characters")
    return key, str(path)


def build_service(
    run_dir: str | os.PathLike[str],
    *,
    gallery: str | os.PathLike[str] | None = None,
    settings: ServiceSettings | None = None,
    detector: str | None = None,
    import_run_gallery: bool = True,
    device: Any = None,
) -> FaceService:
    """A :class:`FaceService` for a finished run: its face model, FR thresholds, detector, and a
    SQLite gallery (default ``RUN/service/gallery.sqlite``); a new gallery gets the run's own
    identities (one centroid template each) unless ``import_run_gallery`` is False."""
    run = Path(run_dir)
    parts = load_run_parts(run, device=device)
    det = load_run_detector(run, detector, face_model=parts.model)
    path = Path(gallery) if gallery else run / "service" / "gallery.sqlite"
    new = not path.exists()
    g = Gallery(path, dim=parts.templates.shape[1])
    if new and import_run_gallery:
        n = g.import_templates(parts.template_names, parts.templates)
        log.info("gallery %s: created with the run's %d identities", path, n)
    else:
        log.info("gallery %s: %d identities", path, len(g))
    return FaceService(parts, det, g, settings or ServiceSettings())
