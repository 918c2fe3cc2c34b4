"""What counts as a successful attack on a classifier (foolbox 3's criteria, in spirit).

A criterion maps logits to one boolean per sample.  Plain label tensors (or arrays, lists)
are promoted to :class:`Misclassification`, as in foolbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Criterion",
    "Misclassification",
    "TargetedMisclassification",
    "UndetectedMisclassification",
    "get_criterion",
]


def _as_labels(values: Any, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    if t.ndim != 1:
        raise ValueError(f"{what} must be a 1-d sequence of class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer class indices, got dtype {t.dtype}")
    return t.long()


class Criterion:
    """Base class: ``criterion(logits) -> bool tensor (N,)``; ``classes`` are labels or targets."""

    targeted: bool = False

    def __init__(self, classes: Tensor) -> None:
        self.classes = classes

    def __len__(self) -> int:
        return len(self.classes)

    def __call__(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def subset(self, index: Tensor | slice | Sequence[int]) -> Criterion:
        """The same criterion for a subset of the samples."""
        return type(self)(self.classes[index])

    def to(self, device: torch.device | str) -> Criterion:
        return type(self)(self.classes.to(device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.classes.tolist()!r})" if len(self) <= 8 else (
            f"{type(self).__name__}(<{len(self)} classes>)"
        )


class Misclassification(Criterion):
    """Untargeted: success when the predicted class differs from the true label."""

    targeted = False

    def __init__(self, labels: Any) -> None:
        super().__init__(_as_labels(labels, "labels"))

    @property
    def labels(self) -> Tensor:
        return self.classes

    def __call__(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=-1) != self.classes.to(logits.device)


class TargetedMisclassification(Criterion):
    """Targeted: success when the predicted class is the target."""

    targeted = True

    def __init__(self, targets: Any) -> None:
        super().__init__(_as_labels(targets, "targets"))

    @property
    def targets(self) -> Tensor:
        return self.classes

    def __call__(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=-1) == self.classes.to(logits.device)


class UndetectedMisclassification(Misclassification):
    """Untargeted against a model with a reject class (e.g. a detector's "flagged" class,
    the last column of a guarded model's logits): success when the predicted class is
    neither the true label nor ``reject`` (None: the last column).

    Targeted attacks need no such criterion: predicting the target already means "not
    flagged".
    """

    def __init__(self, labels: Any, reject: int | None = None) -> None:
        super().__init__(labels)
        if reject is not None and (isinstance(reject, bool) or not isinstance(reject, (int, np.integer))):
            raise TypeError(f"reject must be a class index or None, got {reject!r}")
        self.reject = None if reject is None else int(reject)

    def __call__(self, logits: Tensor) -> Tensor:
        pred = logits.argmax(dim=-1)
        reject = logits.shape[-1] - 1 if self.reject is None else self.reject
        return (pred != self.classes.to(logits.device)) & (pred != reject)

    def subset(self, index: Tensor | slice | Sequence[int]) -> Criterion:
        return type(self)(self.classes[index], self.reject)

    def to(self, device: torch.device | str) -> Criterion:
        return type(self)(self.classes.to(device), self.reject)


def get_criterion(criterion: Criterion | Tensor | np.ndarray | Sequence[int]) -> Criterion:
    """A criterion as is; labels (tensor, array or list) as :class:`Misclassification`."""
    if isinstance(criterion, Criterion):
        return criterion
    return Misclassification(criterion)
