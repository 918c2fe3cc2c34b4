"""Tiny random-weight models shared by the tests (fast, deterministic from a seed)."""

from __future__ import annotations

import torch
from torch import nn

from frad.models.base import FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo


def _init(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)


class TinyConv(nn.Module):
    """A small random classifier on 3 x 16 x 16 pixels in [0, 255]."""

    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(256, classes),
        )
        _init(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x / 255 - 0.5) * 4)


class Unit(nn.Module):
    """The same model on pixels in [0, 1] (for foolbox's bounds (0, 1))."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x * 255)


class TinyFace(FaceModel):
    """A random 2-conv face model on 3 x size x size pixels: taps block1, block2, embedding (6-d)."""

    def __init__(self, seed: int = 0, metric: str = "euclidean", size: int = 12) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.c2 = nn.Conv2d(8, 16, 3, 2, 1)
        side = -(-(-(-size // 2)) // 2)  # two stride-2 convs with padding 1
        self.fc = nn.Linear(16 * side * side, 6)
        _init(self, seed)
        self.preprocess = PixelPreprocess(Preprocessing(mean=(127.5, 127.5, 127.5), scale=1 / 32))
        self.info = ModelInfo(name="tiny_face", architecture="tiny", embedding_dim=6, input_size=(size, size),
                              alignment="none", metric=metric)  # type: ignore[arg-type]
        self.feature_info = [TapInfo("block1", 8, 2, "c1"), TapInfo("block2", 16, 4, "c2"),
                             TapInfo("embedding", 6, 4, "fc")]
        self.requires_grad_(False)
        self.eval()

    def _features(self, x, wanted):  # noqa: ANN001, ANN202
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        emb = self.fc(b.flatten(1))
        return emb, {k: v for k, v in (("block1", a), ("block2", b)) if k in wanted}
