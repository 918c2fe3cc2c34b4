"""The FR service without HTTP: face network + detector behind the micro-batcher, the SQLite
gallery, and the identify / verify / enrol / detect / attack operations on model inputs.

The HTTP layer (:mod:`frad.service.app`) decodes uploads, calls these, and turns
:class:`~frad.service.uploads.UploadError` into 4xx answers.
"""

from __future__ import annotations

import base64
import io
import concurrent.futures as cf
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..recognition.similarity import paired_similarity, pairwise_similarity
from .batcher import MicroBatcher
from ..detection import AdversarialDetector
from .loading import RunParts
from .store import Gallery
from .uploads import FaceCropper, UploadError, decode_upload

__all__ = ["ServiceSettings", "FaceService", "Analysis", "png_base64"]

log = logging.getLogger("frad.serve")


@dataclass(frozen=True)
class ServiceSettings:
    """How the service behaves; the CLI maps its flags onto these fields."""

    report_only: bool = False  # True: flagged images are answered (and reported), not refused
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_enrol_images: int = 16
    max_batch: int = 32  # 1 = no micro-batching
    batch_window_ms: float = 5.0
    top_k: int = 5
    face_detector: str = "hog"  # 'hog' or 'hog+cnn' (CNN only where HOG finds nothing; ~2.5 s an image)
    prepare_workers: int = max(1, os.cpu_count() or 1)  # threads decoding uploads and finding faces
    attack_max_iterations: int = 100
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        for name in ("max_upload_bytes", "max_image_pixels", "max_enrol_images", "max_batch", "top_k",
                     "attack_max_iterations", "prepare_workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"service setting {name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.batch_window_ms, (int, float)) or not 0 <= self.batch_window_ms <= 1000:
            raise ConfigError(f"service setting batch_window_ms must be in [0, 1000], got {self.batch_window_ms!r}")
        if self.face_detector not in ("hog", "hog+cnn"):
            raise ConfigError(f"service setting face_detector must be 'hog' or 'hog+cnn', got {self.face_detector!r}")


@dataclass
class Analysis:
    """One face through the network: its embedding and the detector's score."""

    embedding: np.ndarray
    score: float


def png_base64(chip: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(chip, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class FaceService:
    """Everything the endpoints do, on decoded images."""

    def __init__(self, parts: RunParts, detector: AdversarialDetector, gallery: Gallery, settings: ServiceSettings,
                 *, on_batch: Any = None) -> None:
        self.parts = parts
        self.model = parts.model
        self.detector = detector
        self.gallery = gallery
        self.settings = settings
        self.cropper = FaceCropper(parts.alignment, parts.input_size, detector=settings.face_detector)
        self._taps = list(detector.taps_)
        self.batcher = MicroBatcher(self.analyse_batch, max_batch=settings.max_batch,
                                    window_ms=settings.batch_window_ms, on_batch=on_batch)
        self._attack_lock = threading.Lock()
        self._prep_pool: cf.ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.batcher.start()
        if self._prep_pool is None:
            self._prep_pool = cf.ThreadPoolExecutor(self.settings.prepare_workers, thread_name_prefix="frad-prepare")

    def stop(self) -> None:
        self.batcher.stop()
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=True, cancel_futures=True)
            self._prep_pool = None

    def submit_prepare(self, data: bytes, *, field: str, aligned: bool = False) -> cf.Future[tuple[np.ndarray, str, str]]:
        """:meth:`prepare` on the service's small pool of threads (each keeps one face aligner)."""
        if self._prep_pool is None:
            self.start()
        assert self._prep_pool is not None
        return self._prep_pool.submit(self.prepare, data, field=field, aligned=aligned)

    # ------------------------------------------------------------------ the network
    @torch.no_grad()
    def analyse_batch(self, chips: list[np.ndarray]) -> list[Analysis]:
        """Embeddings and detector scores of face chips (H x W x 3 uint8), in one pass."""
        from ..models.base import to_pixels

        x = to_pixels(np.stack(chips), self.model.device)
        # one pass gives the embedding and the detector's taps (the detector's raw path would run it again)
        emb, taps = self.model.forward_intermediates(x, self._taps, pool=True)
        scores = self.detector.score_features({t: v.float().cpu().numpy() for t, v in taps.items()})
        e = emb.float().cpu().numpy()
        return [Analysis(e[i], float(scores[i])) for i in range(len(chips))]

    def prepare(self, data: bytes, *, field: str, aligned: bool = False) -> tuple[np.ndarray, str, str]:
        """Upload bytes -> ``(model-input chip, image sha256, how the face was found)``."""
        s = self.settings
        up = decode_upload(data, field=field, max_bytes=s.max_upload_bytes, max_pixels=s.max_image_pixels)
        chip, how = self.cropper(up.pixels, field=field, aligned=aligned)
        return chip, up.sha256, how

    # ------------------------------------------------------------------ answers
    def verdict(self, score: float) -> dict[str, Any]:
        thr = float(self.detector.threshold_)
        flagged = bool(score >= thr)
        return {"score": round(float(score), 6), "threshold": round(thr, 6), "flagged": flagged,
                "verdict": "adversarial" if flagged else "natural", "detector": getattr(self.detector, "name", None),
                "policy": "report-only" if self.settings.report_only else "refuse"}

    def check_flag(self, a: Analysis, what: str, **extra: Any) -> None:
        """Refuse a flagged image unless the service is report-only."""
        v = self.verdict(a.score)
        if v["flagged"] and not self.settings.report_only:
            raise UploadError(422, f"{what}: refused, the detector flags the image as adversarial "
                                   f"(score {v['score']:.3f} >= threshold {v['threshold']:.3f})",
                              code="flagged_adversarial", detector=v, **extra)

    def identify(self, a: Analysis, top_k: int | None = None) -> dict[str, Any]:
        names, templates, counts = self.gallery.templates()
        if not names:
            raise UploadError(409, "the gallery is empty: enrol identities first (POST /v1/enroll)")
        k = min(int(top_k or self.settings.top_k), len(names))
        e = a.embedding[None].astype(np.float32)
        sim = np.asarray(pairwise_similarity(e, templates, self.parts.metric))[0]
        order = np.argsort(-sim, kind="stable")[:k]
        vsim = np.asarray(paired_similarity(np.repeat(e, k, 0), templates[order], self.parts.verification_metric))
        thr = self.parts.verification_threshold
        cands = [{"name": names[j], "similarity": round(float(sim[j]), 6),
                  "verification_similarity": round(float(vs), 6), "match": bool(vs >= thr)}
                 for j, vs in zip(order, vsim)]
        best = cands[0]
        return {"identity": best["name"] if best["match"] else None, "candidates": cands,
                "metric": self.parts.metric, "verification_metric": self.parts.verification_metric,
                "verification_threshold": round(thr, 6)}

    def verify_identity(self, a: Analysis, name: str) -> dict[str, Any]:
        names, templates, _ = self.gallery.templates()
        if name not in names:
            raise UploadError(404, f"identity: {name!r} is not enrolled")
        t = templates[names.index(name)][None]
        s = float(np.asarray(paired_similarity(a.embedding[None].astype(np.float32), t, self.parts.verification_metric))[0])
        return self._decision(s, {"identity": name})

    def verify_pair(self, a: Analysis, b: Analysis) -> dict[str, Any]:
        s = float(np.asarray(paired_similarity(a.embedding[None].astype(np.float32), b.embedding[None].astype(np.float32),
                                               self.parts.verification_metric))[0])
        return self._decision(s, {})

    def _decision(self, s: float, extra: dict[str, Any]) -> dict[str, Any]:
        thr = self.parts.verification_threshold
        return {**extra, "similarity": round(s, 6), "threshold": round(thr, 6), "metric": self.parts.verification_metric,
                "accepted": bool(s >= thr)}

    # ------------------------------------------------------------------ attacks (the web page's second panel)
    def attack(self, chip: np.ndarray, *, kind: str, target: str | None, epsilon: float) -> dict[str, Any]:
        """Make an adversarial of a face chip on the server: BIM towards ``target`` (through the
        gallery's templates as a classifier), or the deep-features attack (towards ``target``'s
        template, or away from the current identity when no target is given)."""
        from ..attacks.criteria import Misclassification, TargetedMisclassification
        from ..models.base import to_pixels

        names, templates, _ = self.gallery.templates()
        if len(names) < 2:
            raise UploadError(409, "attacks need at least 2 enrolled identities in the gallery")
        if target is not None and target not in names:
            raise UploadError(404, f"target: {target!r} is not enrolled")
        if not self._attack_lock.acquire(blocking=False):
            raise UploadError(429, "another attack is running; try again in a few seconds")
        try:
            x = to_pixels(chip, self.model.device)
            if kind == "bim":
                from ..attacks.gradient import BIM
                from ..recognition.identification import TemplateScores

                if target is None:
                    raise UploadError(422, "target: BIM needs a target identity")
                if not 0 < epsilon <= 0.25:
                    raise UploadError(422, f"epsilon: BIM's budget is a fraction of 255 in (0, 0.25], got {epsilon}")
                clf = TemplateScores(self.model, templates, self.parts.metric).eval()
                res = BIM(steps=20)(clf, x, TargetedMisclassification(torch.tensor([names.index(target)])),
                                    epsilons=float(epsilon))
                adv = res.adversarials
                budget = {"epsilon": epsilon, "epsilon_grey_levels": round(epsilon * 255, 3), "steps": 20}
            elif kind == "deep_features":
                from ..attacks.deep_features import DeepFeaturesAttack

                if not 1 <= epsilon <= 64:
                    raise UploadError(422, f"epsilon: the deep-features delta is in grey levels, 1 to 64, got {epsilon}")
                tl = np.arange(len(names))
                if target is not None:
                    crit: Any = TargetedMisclassification(torch.tensor([names.index(target)]))
                else:
                    own = int(np.argmax(np.asarray(pairwise_similarity(self.model(x).detach().float().cpu().numpy(),
                                                                       templates, self.parts.metric))[0]))
                    crit = Misclassification(torch.tensor([own]))
                att = DeepFeaturesAttack(max_iterations=self.settings.attack_max_iterations, workers=1,
                                         metric=self.parts.metric)
                res = att(self.model, x, crit, epsilons=float(epsilon), templates=templates, template_labels=tl)
                adv = res.adversarials
                budget = {"delta_grey_levels": epsilon, "max_iterations": self.settings.attack_max_iterations}
            else:
                raise UploadError(422, f"kind: must be 'bim' or 'deep_features', got {kind!r}")
        finally:
            self._attack_lock.release()
        # 8-bit pixels (what a PNG carries), kept inside the budget after rounding
        budget_pix = math.floor(epsilon * 255 if kind == "bim" else epsilon)
        adv16 = adv.detach().round()[0].permute(1, 2, 0).cpu().numpy().astype(np.int16)
        c16 = chip.astype(np.int16)
        adv8 = np.clip(adv16, c16 - budget_pix, c16 + budget_pix).clip(0, 255).astype(np.uint8)
        diff = adv8.astype(np.int16) - c16
        linf = int(np.abs(diff).max())
        amp = 127.0 / max(linf, 1)
        vis = np.clip(127.5 + diff * amp, 0, 255).astype(np.uint8)
        return {"kind": kind, "target": target, **budget, "linf_grey_levels": linf,
                "l2_grey_levels": round(float(np.linalg.norm(diff.astype(np.float64))), 3),
                "amplification": round(amp, 3), "original_png": png_base64(chip), "adversarial_png": png_base64(adv8),
                "perturbation_png": png_base64(vis), "width": int(chip.shape[1]), "height": int(chip.shape[0])}
