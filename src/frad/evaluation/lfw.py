"""LFW face verification on the official View 2 protocol (``pairs.txt``: 10 folds x 600 pairs).

Accuracy follows LFW's rule: each fold is scored at the threshold that is best on the other
nine folds; the figure is the mean over folds with its standard deviation.  ROC AUC and the
EER threshold are computed over all pairs.  Every pair of the protocol is scored: images in
which no detector finds a face are aligned from a centred fallback box (see
:mod:`frad.data.alignment`) and counted, never dropped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.alignment import AlignmentResult, align_images, alignment_for
from ..errors import ConfigError
from ..data.lfw import LFWLayout, Pair, lfw_variant, read_pairs
from ..models.base import FaceModel, embed_images
from ..recognition.similarity import Metric, check_metric, paired_similarity
from ..utils import metrics

__all__ = ["LFWVerification", "verify_lfw", "pair_scores", "score_pairs"]

log = logging.getLogger(__name__)


@dataclass
class LFWVerification:
    """Figures of one LFW verification run (thresholds in the metric's own units)."""

    model: str
    metric: str
    variant: str
    pairs: int
    folds: int
    accuracy: float
    accuracy_std: float
    accuracy_sem: float
    fold_accuracy: list[float]
    auc: float
    eer: float
    eer_threshold: float
    mean_fold_threshold: float
    images: int
    alignment: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        unit = "distance" if self.metric == "euclidean" else "cosine similarity"
        al = ", ".join(f"{k} {v}" for k, v in self.alignment.items())
        return "\n".join(
            [
                f"LFW verification ({self.variant}), {self.pairs} pairs in {self.folds} folds, model {self.model}, {self.metric}",
                f"  accuracy   {100 * self.accuracy:.2f}% +- {100 * self.accuracy_std:.2f} (std over folds; SE {100 * self.accuracy_sem:.2f})",
                f"  ROC AUC    {self.auc:.4f}",
                f"  EER        {100 * self.eer:.2f}% at {unit} threshold {self.eer_threshold:.4f}",
                f"  faces      {self.images} images: {al}",
            ]
        )


def score_pairs(emb: np.ndarray, index: dict[str, int], pairs: list[Pair], metric: Metric) -> np.ndarray:
    """Similarity of every pair (higher = more alike; Euclidean gives negative distances)."""
    a = np.array([index[p.keys[0]] for p in pairs])
    b = np.array([index[p.keys[1]] for p in pairs])
    return np.asarray(paired_similarity(emb[a], emb[b], metric), dtype=np.float64)


def pair_scores(
    scores: np.ndarray, pairs: list[Pair], metric: Metric
) -> tuple[metrics.KFoldResult, float, float, float]:
    """LFW figures from pair similarities: k-fold result, AUC, EER and EER threshold (metric units)."""
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    kf = metrics.kfold_accuracy(labels, scores, folds)
    auc = metrics.auc(labels, scores)
    rate, thr = metrics.eer(labels, scores)
    if metric == "euclidean":
        thr = -thr
    return kf, auc, rate, thr


def verify_lfw(
    model: FaceModel,
    data_dir: str | os.PathLike[str],
    *,
    metric: str | None = None,
    pairs_file: str = "pairs.txt",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    detector: str = "hog+cnn",
    variant: str | None = None,
    alignment: AlignmentResult | None = None,
) -> tuple[LFWVerification, np.ndarray, AlignmentResult]:
    """Run LFW's verification protocol with ``model``; returns the figures, the per-pair scores
    and the alignment (reusable, e.g. to score dlib's own network on the same chips)."""
    metric = check_metric(metric or model.info.metric)
    layout = LFWLayout(data_dir)
    pairs = read_pairs(layout.protocol_file(pairs_file))
    keys = sorted({k for p in pairs for k in p.keys})
    paths = layout.resolve(keys)
    t0 = time.perf_counter()
    if alignment is None:
        geometry = alignment_for(model.info.alignment, model.info.input_size)
        if geometry is None:
            raise ConfigError(
                f"model {model.info.name!r} declares alignment {model.info.alignment!r}; LFW verification "
                "needs face chips (dlib-5pt-150-pad0.25, arcface-5pt-112 or vggface2-loose-crop)"
            )
        alignment = align_images([paths[k] for k in keys], detector=detector, **geometry)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    if device is not None:
        model = model.to(device)
    emb = embed_images(model, alignment.chips, batch_size=batch_size, device=device, desc="embedding LFW faces")
    t2 = time.perf_counter()
    index = {k: i for i, k in enumerate(keys)}
    scores = score_pairs(emb, index, pairs, metric)
    kf, auc, rate, thr = pair_scores(scores, pairs, metric)
    mean_thr = float(np.mean(kf.fold_threshold))
    if metric == "euclidean":
        mean_thr = -mean_thr
    result = LFWVerification(
        model=model.info.name,
        metric=metric,
        variant=variant or lfw_variant(data_dir),
        pairs=len(pairs),
        folds=int(kf.fold_accuracy.size),
        accuracy=kf.mean,
        accuracy_std=kf.std,
        accuracy_sem=kf.sem,
        fold_accuracy=[float(a) for a in kf.fold_accuracy],
        auc=auc,
        eer=rate,
        eer_threshold=thr,
        mean_fold_threshold=mean_thr,
        images=len(keys),
        alignment=alignment.counts(),
        seconds={"align": round(t1 - t0, 2), "embed": round(t2 - t1, 2)},
    )
    return result, scores, alignment
