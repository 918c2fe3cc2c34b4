"""1:N face identification: a probe's embedding against one template per known identity.

:class:`TemplateIdentifier` follows the paper (Sec. 5.3.1): each identity's template is the
centroid (mean) of the embeddings of its enrolment images, which in frad's protocol are the
head-training images only, never the natural or source images that are later probed or
attacked (pass only those rows to ``fit``).  A probe is assigned to the most similar
template (cosine similarity, or Euclidean distance), or, with ``method='knn'``, by a
k-nearest-neighbour vote over the enrolment embeddings themselves.

Scores follow one sign: ``score_samples`` / ``decision_function`` return, per class, a
similarity where higher means more alike (cosine similarity, or the negated Euclidean
distance).  :meth:`TemplateIdentifier.as_module` turns these scores into a torch module on
top of the face network (pixels in [0, 255] -> per-class scores used as logits), so every
attack and criterion written for classifiers also targets the identification system.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..models.base import FaceModel
from .head_training import NotFittedError
from .similarity import check_metric, pairwise_similarity

__all__ = ["TemplateIdentifier", "TemplateScores", "NotFittedError"]


def _check_x(X: Any, what: str, dim: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"{what} must be (N, D) embeddings, got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise DataError(f"{what} have {X.shape[1]} dimensions, the fitted templates {dim}")
    if not np.isfinite(X).all():
        raise DataError(f"{what} contain NaN or infinity")
    return X


class TemplateIdentifier:
    """Nearest class template (or kNN) identification on embeddings; scikit-learn conventions.

    ``metric``: 'cosine' (similarity) or 'euclidean'.  ``method``: 'template' (centroids) or
    'knn' (``n_neighbors`` nearest enrolment embeddings vote; ties go to the class with the
    larger summed similarity among them).  After ``fit``: ``classes_`` (sorted labels),
    ``templates_`` (n_classes x D centroids, always computed), ``counts_`` (images per class)
    and, for kNN, ``gallery_`` / ``gallery_labels_``.
    """

    def __init__(self, *, metric: str = "cosine", method: str = "template", n_neighbors: int = 1) -> None:
        self.metric = metric
        self.method = method
        self.n_neighbors = n_neighbors

    def get_params(self) -> dict[str, Any]:
        return {"metric": self.metric, "method": self.method, "n_neighbors": self.n_neighbors}

    def __repr__(self) -> str:
        return "TemplateIdentifier(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def fit(self, X: np.ndarray, y: np.ndarray) -> TemplateIdentifier:
        """Build one template per class from the enrolment embeddings ``X`` with labels ``y``."""
        check_metric(self.metric)
        if self.method not in ("template", "knn"):
            raise ConfigError(f"TemplateIdentifier.method must be 'template' or 'knn', got {self.method!r}")
        if (
            not isinstance(self.n_neighbors, (int, np.integer))
            or isinstance(self.n_neighbors, bool)
            or self.n_neighbors < 1
        ):
            raise ConfigError(f"TemplateIdentifier.n_neighbors must be an integer >= 1, got {self.n_neighbors!r}")
        X = _check_x(X, "enrolment embeddings")
        y = np.asarray(y).ravel()
        if y.shape[0] != X.shape[0]:
            raise DataError(f"{X.shape[0]} enrolment embeddings but {y.shape[0]} labels")
        if X.shape[0] == 0:
            raise DataError("no enrolment embeddings to build templates from")
        classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
        sums = np.zeros((classes.size, X.shape[1]), np.float64)
        np.add.at(sums, inv, X)
        self.classes_ = classes
        self.templates_ = (sums / counts[:, None]).astype(np.float32)
        self.counts_ = counts
        self.n_features_in_ = X.shape[1]
        if self.method == "knn":
            self.gallery_ = X.copy()
            self.gallery_labels_ = inv.astype(np.int64)  # indices into classes_
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "templates_"):
            raise NotFittedError("TemplateIdentifier is not fitted: call fit(embeddings, labels) first")

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """(N, n_classes) similarity of each probe to each class (higher = more alike).

        Template method: similarity to the class template.  kNN: the similarity to the
        class's nearest enrolment embedding.
        """
        self._fitted()
        X = _check_x(X, "probe embeddings", self.n_features_in_)
        metric = check_metric(self.metric)
        if self.method == "template":
            return np.asarray(pairwise_similarity(X, self.templates_, metric), dtype=np.float32)
        sim = np.asarray(pairwise_similarity(X, self.gallery_, metric), dtype=np.float32)
        out = np.full((X.shape[0], self.classes_.size), -np.inf, np.float32)
        for c in range(self.classes_.size):
            out[:, c] = sim[:, self.gallery_labels_ == c].max(1)
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Same as :meth:`score_samples` (scores per class; the argmax is the prediction for
        the template method and for 1-NN)."""
        return self.score_samples(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The identity (a label from ``classes_``) of each probe."""
        self._fitted()
        if self.method == "template" or self.n_neighbors == 1:
            return self.classes_[self.score_samples(X).argmax(1)]
        X = _check_x(X, "probe embeddings", self.n_features_in_)
        sim = np.asarray(pairwise_similarity(X, self.gallery_, check_metric(self.metric)), dtype=np.float64)
        k = min(int(self.n_neighbors), sim.shape[1])
        nn_idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        votes = np.zeros((X.shape[0], self.classes_.size), np.float64)
        weight = np.zeros_like(votes)
        rows = np.repeat(np.arange(X.shape[0]), k)
        lab = self.gallery_labels_[nn_idx].ravel()
        np.add.at(votes, (rows, lab), 1.0)
        np.add.at(weight, (rows, lab), sim[np.arange(X.shape[0])[:, None], nn_idx].ravel())
        # majority vote; ties broken by the larger summed similarity (a small bounded bonus)
        w = weight - weight.min(1, keepdims=True)
        tie = w / (w.max(1, keepdims=True) + 1.0) * 0.5
        return self.classes_[(votes + np.where(votes > 0, tie, 0.0)).argmax(1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Top-1 identification accuracy."""
        return float((self.predict(X) == np.asarray(y).ravel()).mean())

    def topk_accuracy(self, X: np.ndarray, y: np.ndarray, k: int = 5) -> float:
        """Share of probes whose identity is among the ``k`` best-scoring classes."""
        s = self.score_samples(X)
        top = self.classes_[np.argsort(-s, axis=1)[:, :k]]
        return float((top == np.asarray(y).reshape(-1, 1)).any(1).mean())

    def as_module(self, backbone: FaceModel) -> TemplateScores:
        """A torch module: RGB pixels in [0, 255] -> (N, n_classes) template similarities (as logits)."""
        self._fitted()
        if self.method != "template":
            raise ConfigError("as_module needs method='template' (kNN scores are not differentiable in a useful way)")
        return TemplateScores(backbone, self.templates_, self.metric)


class TemplateScores(nn.Module):
    """``backbone`` followed by similarity to fixed class templates: the identification system
    as a differentiable model whose 'logits' are cosine similarities (or negated distances)."""

    def __init__(self, backbone: FaceModel, templates: np.ndarray | Tensor, metric: str = "cosine") -> None:
        super().__init__()
        self.backbone = backbone
        self.metric = check_metric(metric)
        t = torch.as_tensor(np.asarray(templates, dtype=np.float32))
        self.register_buffer("templates", t.to(backbone.device), persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.templates.shape[0])  # type: ignore[index]

    def forward(self, pixels: Tensor) -> Tensor:
        emb = self.backbone(pixels)
        templates: Tensor = self.templates  # type: ignore[assignment]
        return pairwise_similarity(emb, templates.to(emb.dtype), self.metric)
