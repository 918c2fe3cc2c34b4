"""Prometheus metrics of one service instance (its own registry, so tests and several apps in
one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServiceMetrics", "route_label"]

_ROUTES = ("/", "/static/app.js", "/healthz", "/metrics", "/v1/enroll", "/v1/identities", "/v1/identify", "/v1/verify",
           "/v1/detect", "/v1/attack")


def route_label(path: str) -> str:
    """A bounded label for a request path (unknown paths share one label)."""
    if path.startswith("/v1/identities/"):
        return "/v1/identities/{name}"
    return path if path in _ROUTES else "other"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("frad_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "frad_request_latency_seconds", "Time from request to answer", ["route"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.flagged = Counter("frad_flagged_inputs", "Images the detector flagged as adversarial",
                               ["route", "action"], registry=r)
        self.scored = Counter("frad_scored_inputs", "Images the detector scored", ["route"], registry=r)
        self.batch_size = Histogram("frad_batch_size", "Images per network batch (micro-batcher)", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.identities = Gauge("frad_gallery_identities", "Identities in the gallery", registry=r)
