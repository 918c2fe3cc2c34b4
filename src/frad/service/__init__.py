"""``frad serve``: a finished run's face recognition system as an HTTP service, guarded by the
run's adversarial detector, with a web page (needs the ``serve`` extra).

- :mod:`.loading`: the run's face network, templates and thresholds; the detector (one function);
- :mod:`.store`: the SQLite gallery (identities, embeddings, enrolment image hashes);
- :mod:`.uploads`: checking and decoding uploads, finding the face;
- :mod:`.batcher`: the micro-batcher in front of the network;
- :mod:`.engine`: identify / verify / enrol / detect / attack on decoded faces;
- :mod:`.app`: the FastAPI routes, errors as JSON, metrics; ``static/``: the page.
"""

from .build import build_service
from .engine import FaceService, ServiceSettings

__all__ = ["build_service", "FaceService", "ServiceSettings", "create_app"]


def create_app(service: FaceService, **kwargs):  # noqa: ANN003, ANN201 - FastAPI imported lazily
    """The FastAPI app serving ``service`` (see :func:`frad.service.app.create_app`)."""
    from .app import create_app as _create

    return _create(service, **kwargs)
