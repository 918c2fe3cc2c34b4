"""A face network with an N-way head: the classifier that classifier attacks target.

The network stays frozen (the paper trains only the head), so the head can be trained on
cached embeddings; at attack time the whole thing maps RGB pixels in [0, 255] to logits and
gradients flow through the network's own preprocessing back to the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import EMBEDDING, FaceModel

__all__ = ["FaceClassifier", "make_head"]


def make_head(in_features: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """The paper's replacement head: dropout then a fully connected layer."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class FaceClassifier(nn.Module):
    """``backbone`` (a :class:`FaceModel`) followed by ``head`` on one of its taps (default: the embedding).

    ``forward(pixels) -> logits``.  ``forward_intermediates`` returns the logits together with
    the backbone's embedding and taps from the same pass.
    """

    def __init__(
        self,
        backbone: FaceModel,
        num_classes: int | None = None,
        *,
        head: nn.Module | None = None,
        feature: str = EMBEDDING,
        dropout: float = 0.5,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if feature not in backbone.tap_names:
            raise KeyError(f"{backbone.info.name}: no tap {feature!r}; available: {backbone.tap_names}")
        if num_classes is None and head is None and class_names is not None:
            num_classes = len(class_names)
        if head is None:
            if num_classes is None:
                raise ValueError("give num_classes, class_names or a head")
            dim = next(t.channels for t in backbone.feature_info if t.name == feature)
            head = make_head(dim, num_classes, dropout)
        self.backbone = backbone
        self.head = head
        self.feature = feature
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and num_classes is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")

    @property
    def num_classes(self) -> int:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        return int(last.out_features)

    def _feature(self, pixels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.feature == EMBEDDING:
            emb = self.backbone(pixels)
            return emb, {}
        emb, taps = self.backbone.forward_intermediates(pixels, [self.feature], pool=True)
        return taps[self.feature], taps

    def forward(self, pixels: Tensor) -> Tensor:
        """Logits for RGB pixels in [0, 255]."""
        return self.head(self._feature(pixels)[0])

    def forward_intermediates(
        self, pixels: Tensor, taps: Sequence[str] | str | None = None, *, pool: bool = False
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(logits, embedding, taps)`` from one pass through the backbone."""
        names = self.backbone.resolve_taps(taps)
        want = list(dict.fromkeys([*names, self.feature]))
        emb, out = self.backbone.forward_intermediates(pixels, want, pool=pool)
        feat = emb if self.feature == EMBEDDING else out[self.feature]
        if feat.ndim == 4:
            feat = feat.mean(dim=(2, 3))
        logits = self.head(feat)
        return logits, emb, {n: out[n] for n in names}

    @torch.no_grad()
    def predict(self, pixels: Tensor, batch_size: int = 64) -> Tensor:
        """Predicted class indices (eval mode, batched)."""
        was = self.training
        self.eval()
        try:
            return torch.cat([self(pixels[i : i + batch_size]).argmax(1) for i in range(0, len(pixels), batch_size)])
        finally:
            self.train(was)
