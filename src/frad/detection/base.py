"""A detector as one saved object: everything it needs to score an image, in one folder.

In the spirit of pytorch-ood (a features path and a raw-input path) and scikit-learn
(estimators with ``fit`` / ``score_samples`` / ``predict``; learned state ends in ``_``):

- ``fit_reference(features, labels, predictions=None)``: the class-conditional part fitted
  on the FR system's head-training images (class means and covariance, neighbours, ...);
  a no-op for detectors that need none or were given fitted representatives.
- ``fit_features(features, y, *, labels=None, groups=None, source_ids=None) -> self``:
  ``features`` maps tap name -> (N, C) pooled features (the feature cache's layout),
  ``y`` 1 = adversarial / 0 = natural; ``labels`` the natural rows' identities (for
  detectors that calibrate on labelled naturals), ``groups`` the attack name per row,
  ``source_ids`` the image each row comes from.
- ``score_features(features) -> (N,)``: the score; higher always means more adversarial.
- ``score_samples(pixels) -> (N,)``: runs the face model on float N x 3 x H x W RGB pixels
  in [0, 255] (its pooled taps, in batches) and delegates to ``score_features``.
- ``set_threshold(natural_scores, fpr=0.05 | adversarial_scores=..., rule="eer")``: the
  operating threshold ``threshold_`` chosen on *validation* naturals; ``predict(pixels)`` and
  ``predict_features(features)`` give booleans (True = adversarial) at it.
- ``save(folder)`` / :func:`load_detector_folder` (``AdversarialDetector.load``): one folder
  holding ``detector.json`` (kind, parameters, the face model's name and fingerprint, taps,
  threshold, and the sha256 of every other file) beside arrays (``.npz``, read without
  pickle) and torch state dicts (read with ``weights_only=True``).  Loading checks every
  checksum and, given the face model, that its fingerprint is the one the detector was
  trained with; either mismatch is refused with a :class:`~frad.errors.WeightsError`.

Every detector kind registers itself in :data:`DETECTOR_KINDS` under its ``kind``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ..errors import ConfigError, DataError, NotFittedError, WeightsError
from ..utils.io import read_json, sha256_file, write_json
from .representatives import check_features

__all__ = [
    "AdversarialDetector",
    "DETECTOR_KINDS",
    "register_detector",
    "load_detector_folder",
    "threshold_at_fpr",
    "pixel_features",
    "LogisticCombiner",
]

FORMAT = "frad.detector"
VERSION = 1
MANIFEST = "detector.json"
DETECTOR_KINDS: dict[str, type[AdversarialDetector]] = {}


def register_detector(cls: type[AdversarialDetector]) -> type[AdversarialDetector]:
    """Class decorator: make a detector kind loadable from its folder by ``kind``."""
    DETECTOR_KINDS[cls.kind] = cls
    return cls


def threshold_at_fpr(natural_scores: ArrayLike, fpr: float) -> float:
    """The lowest threshold at which at most ``fpr`` of ``natural_scores`` are >= it.

    ``predict`` says adversarial when ``score >= threshold``; on these naturals the false
    positive rate is then <= ``fpr``.  The threshold lies half-way between two natural scores
    (or just above the highest), never on one.
    """
    s = np.asarray(natural_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError("no natural scores to choose a threshold on")
    if not np.isfinite(s).all():
        raise DataError("natural scores contain NaN or infinity")
    if not 0 <= fpr < 1:
        raise ConfigError(f"fpr must be in [0, 1), got {fpr}")
    neg = np.sort(s)[::-1]
    k = int(np.floor(fpr * neg.size + 1e-9))  # at most k naturals may be flagged
    # flag scores above the (k+1)-th highest natural: half-way to the next higher distinct score, so
    # that no natural sits on the threshold (round-off in a later feature pass cannot flip its verdict)
    higher = neg[:k][neg[:k] > neg[k]]
    if higher.size:
        return float((neg[k] + higher.min()) / 2)
    return float(neg[k] + 1e-6 * max(1.0, abs(float(neg[k]))))


def pixel_features(
    face_model: torch.nn.Module, pixels: Tensor, taps: Sequence[str], *, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Pooled taps ``{tap: (N, C)}`` of float RGB pixels in [0, 255], in batches, without gradients."""
    if not isinstance(pixels, Tensor):
        pixels = torch.as_tensor(np.asarray(pixels))
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise DataError(f"pixels must be (N, 3, H, W) RGB in [0, 255], got shape {tuple(pixels.shape)}")
    if not pixels.is_floating_point():
        pixels = pixels.float()
    device = next(iter(face_model.parameters())).device
    out: dict[str, list[np.ndarray]] = {t: [] for t in taps}
    with torch.no_grad():
        for s in range(0, pixels.shape[0], int(batch_size)):
            _, f = face_model.forward_intermediates(pixels[s : s + batch_size].to(device), list(taps), pool=True)
            for t in taps:
                out[t].append(f[t].float().cpu().numpy())
    return {t: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for t, v in out.items()}


class LogisticCombiner:
    """Standardise per-column scores, then scikit-learn's logistic regression; stored as arrays.

    The score is the probability of "adversarial", computed in NumPy from the saved
    mean, scale, coefficients and intercept (so loading needs no pickle).
    """

    def __init__(self, C: float = 1.0, random_state: int | None = 0) -> None:
        self.C = C
        self.random_state = random_state

    def fit(self, Z: np.ndarray, y: np.ndarray) -> LogisticCombiner:
        from sklearn.linear_model import LogisticRegression

        Z = np.asarray(Z, np.float64)
        self.mean_ = Z.mean(axis=0)
        sd = Z.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        # Newton's method to a tight tolerance: the regularised problem has one optimum, and
        # reaching it (not lbfgs's stop at tol 1e-4 on a flat valley of collinear layer scores)
        # keeps the weights a smooth function of the features: runs differing by float rounding
        # got coefficients 5% apart and AUCs 0.02 apart that way
        lr = LogisticRegression(C=self.C, solver="newton-cholesky", tol=1e-10, max_iter=200,
                                class_weight="balanced", random_state=self.random_state)
        lr.fit((Z - self.mean_) / self.scale_, np.asarray(y).astype(int))
        self.coef_ = lr.coef_.ravel().astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def decision_function(self, Z: np.ndarray) -> np.ndarray:
        return ((np.asarray(Z, np.float64) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba1(self, Z: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(self.decision_function(Z))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean_, f"{prefix}scale": self.scale_, f"{prefix}coef": self.coef_,
                f"{prefix}intercept": np.array([self.intercept_])}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str, C: float = 1.0) -> LogisticCombiner:
        self = cls(C=C)
        self.mean_ = np.asarray(arrays[f"{prefix}mean"], np.float64)
        self.scale_ = np.asarray(arrays[f"{prefix}scale"], np.float64)
        self.coef_ = np.asarray(arrays[f"{prefix}coef"], np.float64)
        self.intercept_ = float(np.asarray(arrays[f"{prefix}intercept"]).ravel()[0])
        return self


class AdversarialDetector:
    """Base class of every frad detector (trajectory detectors and baselines); see the module doc."""

    kind: ClassVar[str] = ""
    #: short description shown in tables
    title: ClassVar[str] = ""
    #: whether training needs adversarial examples (False: naturals only)
    needs_adversarials: ClassVar[bool] = True

    # -- face model binding ---------------------------------------------------------------
    face_model_name: str | None = None
    face_model_fingerprint: str | None = None
    face_model_: Any = None
    threshold_: float = float("nan")
    threshold_rule_: str | None = None
    taps_: list[str]

    def bind(self, face_model: Any) -> AdversarialDetector:
        """Attach the face model whose taps this detector reads (records name and fingerprint)."""
        name = getattr(getattr(face_model, "info", None), "name", None) or type(face_model).__name__
        fp = face_model.fingerprint() if hasattr(face_model, "fingerprint") else None
        if self.face_model_fingerprint is not None and fp != self.face_model_fingerprint:
            raise WeightsError(
                f"{type(self).__name__} was trained on face model {self.face_model_name!r} (fingerprint "
                f"{self.face_model_fingerprint}), not on {name!r} (fingerprint {fp})"
            )
        self.face_model_name, self.face_model_fingerprint, self.face_model_ = name, fp, face_model
        return self

    def describe_face_model(self, name: str, fingerprint: str | None) -> AdversarialDetector:
        """Record the face model by name and fingerprint without holding it (features-only use)."""
        self.face_model_name, self.face_model_fingerprint = name, fingerprint
        return self

    # -- to implement -------------------------------------------------------------------------
    def fit_reference(
        self, features: Mapping[str, ArrayLike], labels: ArrayLike, predictions: ArrayLike | None = None
    ) -> AdversarialDetector:
        """Fit the class-conditional part on the head-training images (default: nothing to fit)."""
        return self

    def fit_features(
        self,
        features: Mapping[str, ArrayLike],
        y: ArrayLike,
        *,
        labels: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        source_ids: ArrayLike | None = None,
    ) -> AdversarialDetector:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Tensor]]:  # pragma: no cover
        """(JSON-able settings, arrays, torch tensors) that rebuild the fitted detector."""
        raise NotImplementedError

    @classmethod
    def _from_state(
        cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], tensors: Mapping[str, Tensor], folder: Path
    ) -> AdversarialDetector:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write_extra(self, folder: Path) -> list[str]:
        """Hook: files beyond arrays.npz / tensors.pt (returns their names, relative to folder)."""
        return []

    # -- shared ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "taps_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit_features(...) or load(folder) first")

    def _features(self, features: Mapping[str, ArrayLike], name: str = "features") -> tuple[dict[str, np.ndarray], int]:
        self._check_fitted()
        _, feats, n = check_features(features, self.taps_, name)
        return feats, n

    def score_samples(self, pixels: Tensor, *, batch_size: int = 32) -> np.ndarray:
        """(N,) scores of float RGB pixels in [0, 255] (higher = more adversarial)."""
        self._check_fitted()
        if self.face_model_ is None:
            raise NotFittedError(
                f"{type(self).__name__}: no face model attached; load(folder, face_model=...) or bind(model) first "
                f"(it was trained on {self.face_model_name!r})"
            )
        if len(pixels) == 0:
            return np.zeros(0)
        return self.score_features(pixel_features(self.face_model_, pixels, self.taps_, batch_size=batch_size))

    def set_threshold(
        self,
        natural_scores: ArrayLike,
        *,
        fpr: float | None = 0.05,
        adversarial_scores: ArrayLike | None = None,
        rule: str = "fpr",
    ) -> AdversarialDetector:
        """Choose ``threshold_`` on validation scores: at a false-positive rate, or at the EER."""
        if rule == "fpr":
            if fpr is None:
                raise ConfigError("set_threshold: rule 'fpr' needs fpr (e.g. 0.05)")
            self.threshold_ = threshold_at_fpr(natural_scores, float(fpr))
            self.threshold_rule_ = f"{float(fpr):.0%} false positives on validation naturals"
        elif rule == "eer":
            from ..utils.metrics import eer

            if adversarial_scores is None:
                raise ConfigError("set_threshold: rule 'eer' needs adversarial_scores")
            nat = np.asarray(natural_scores, np.float64).ravel()
            adv = np.asarray(adversarial_scores, np.float64).ravel()
            _, thr = eer(np.r_[np.zeros(nat.size), np.ones(adv.size)], np.r_[nat, adv])
            self.threshold_ = float(thr)
            self.threshold_rule_ = "equal error rate on validation data"
        else:
            raise ConfigError(f"set_threshold: rule must be 'fpr' or 'eer', got {rule!r}")
        return self

    def _check_threshold(self) -> None:
        if not np.isfinite(self.threshold_):
            raise NotFittedError(f"{type(self).__name__} has no operating threshold: call set_threshold(...) first")

    def predict_features(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """(N,) bool: True where the score reaches ``threshold_`` (adversarial)."""
        self._check_threshold()
        return self.score_features(features) >= self.threshold_

    def predict(self, pixels: Tensor, *, batch_size: int = 32) -> np.ndarray:
        """(N,) bool for float RGB pixels in [0, 255]: True = adversarial at ``threshold_``."""
        self._check_threshold()
        return self.score_samples(pixels, batch_size=batch_size) >= self.threshold_

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, face_model={self.face_model_name!r})"

    # -- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the detector into ``folder`` (``detector.json`` last, with every file's sha256)."""
        from ..utils.io import atomic_write_bytes, save_npz

        self._check_fitted()
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        manifest = d / MANIFEST
        if manifest.exists():
            manifest.unlink()  # an interrupted rewrite must not leave a manifest of old files
        settings, arrays, tensors = self._state()
        files: list[str] = []
        if arrays:
            save_npz(d / "arrays.npz", **arrays)
            files.append("arrays.npz")
        if tensors:
            import io

            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
            atomic_write_bytes(d / "tensors.pt", buf.getvalue())
            files.append("tensors.pt")
        files += self._write_extra(d)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "class": type(self).__name__,
            "face_model": {"name": self.face_model_name, "fingerprint": self.face_model_fingerprint},
            "taps": list(self.taps_),
            "threshold": None if not np.isfinite(self.threshold_) else float(self.threshold_),
            "threshold_rule": self.threshold_rule_,
            "settings": settings,
            "files": {f: sha256_file(d / f) for f in files},
            "metadata": dict(metadata) if metadata is not None else getattr(self, "metadata_", None),
        }
        write_json(manifest, meta)
        return d

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, face_model: Any = None) -> AdversarialDetector:
        """Rebuild a detector written by :meth:`save`; with ``face_model`` it is checked and attached."""
        return load_detector_folder(folder, face_model=face_model, expected=cls)


def load_detector_folder(
    folder: str | os.PathLike[str], *, face_model: Any = None, expected: type[AdversarialDetector] | None = None
) -> AdversarialDetector:
    """Load any detector folder written by ``save``; refuses tampered files and foreign face models."""
    from ..utils.io import load_npz

    d = Path(folder)
    manifest = d / MANIFEST
    if not manifest.is_file():
        raise WeightsError(f"{d}: not a frad detector folder (no {MANIFEST})")
    try:
        meta = read_json(manifest)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{manifest}: cannot read ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsError(f"{manifest}: not a frad detector (format {FORMAT!r} expected)")
    if meta.get("version") != VERSION:
        raise WeightsError(f"{manifest}: unsupported version {meta.get('version')!r} (expected {VERSION})")
    klass = DETECTOR_KINDS.get(str(meta.get("kind")))
    if klass is None:
        raise WeightsError(f"{manifest}: unknown detector kind {meta.get('kind')!r}; known: {', '.join(DETECTOR_KINDS)}")
    if expected is not None and expected is not AdversarialDetector and not issubclass(klass, expected):
        raise WeightsError(f"{manifest}: holds a {klass.__name__}, not a {expected.__name__}")
    files = meta.get("files") or {}
    for name, digest in files.items():
        p = d / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise WeightsError(f"{manifest}: file name {name!r} points outside the folder")
        if not p.is_file():
            raise WeightsError(f"{p}: missing (listed in {MANIFEST})")
        if sha256_file(p) != digest:
            raise WeightsError(f"{p}: checksum differs from the one recorded in {MANIFEST} (file changed or replaced)")
    fm = meta.get("face_model") or {}
    if face_model is not None:
        name = getattr(getattr(face_model, "info", None), "name", None) or type(face_model).__name__
        fp = face_model.fingerprint() if hasattr(face_model, "fingerprint") else None
        if fm.get("fingerprint") is not None and fp != fm.get("fingerprint"):
            raise WeightsError(
                f"{d}: this detector was trained on face model {fm.get('name')!r} (fingerprint {fm.get('fingerprint')}), "
                f"not on {name!r} (fingerprint {fp}); its scores would be meaningless"
            )
    arrays = load_npz(d / "arrays.npz") if "arrays.npz" in files else {}
    tensors: dict[str, Tensor] = {}
    if "tensors.pt" in files:
        import io

        try:
            tensors = torch.load(io.BytesIO((d / "tensors.pt").read_bytes()), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise WeightsError(f"{d / 'tensors.pt'}: cannot read the detector tensors ({exc})") from None
    try:
        det = klass._from_state(meta.get("settings") or {}, arrays, tensors, d)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"{d}: the stored state does not rebuild a {klass.__name__} ({exc})") from None
    det.taps_ = list(meta.get("taps") or [])
    det.face_model_name = fm.get("name")
    det.face_model_fingerprint = fm.get("fingerprint")
    thr = meta.get("threshold")
    det.threshold_ = float("nan") if thr is None else float(thr)
    det.threshold_rule_ = meta.get("threshold_rule")
    det.metadata_ = meta.get("metadata")
    if face_model is not None:
        det.face_model_ = face_model
    return det
