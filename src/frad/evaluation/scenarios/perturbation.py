"""Maximum pixel perturbation (Figure 9).

``max_pixel_perturbation``: per pixel, the largest absolute change over R, G, B (grey
levels).  ``MPPHistogram`` accumulates its distribution chunk by chunk (one histogram bin
per grey level, 0 .. delta) and the share of pixels below ``within`` = 5 grey levels.
``mpp_summary`` runs it over an iterable of chunks; ``mpp_table`` tabulates summaries.

"Within 5" is read as *strictly below* 5: at delta = 5 every pixel is within 5 inclusively,
yet the paper reports 88.3%, so its share counts the pixels that did not reach the bound.
The inclusive share is reported too (``share_within_inclusive_pct``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ...errors import ConfigError, DataError
from .. import paper
from ._arrays import pct
from ...kinds import SETTINGS, Setting
from .labels import delta_label

__all__ = ["max_pixel_perturbation", "MPPHistogram", "mpp_summary", "mpp_table"]

_TOL = 1e-3  # grey levels: float round-off at a bound counts as at the bound


def _channel_axis(shape: tuple[int, ...], channels_last: bool | None) -> int:
    if len(shape) != 4:
        raise DataError(f"images must be N x 3 x H x W or N x H x W x 3, got shape {shape}")
    if channels_last is None:
        if shape[1] == 3:
            return 1
        if shape[3] == 3:
            return 3
        raise DataError(f"images must have 3 channels (N x 3 x H x W or N x H x W x 3), got shape {shape}")
    ax = 3 if channels_last else 1
    if shape[ax] != 3:
        raise DataError(f"images must have 3 channels on axis {ax}, got shape {shape}")
    return ax


def max_pixel_perturbation(
    adversarial: ArrayLike, source: ArrayLike, *, channels_last: bool | None = None
) -> np.ndarray:
    """(N, H, W) maximum absolute change over R, G, B per pixel, in the images' units (grey levels).

    Images are N x 3 x H x W or N x H x W x 3 (``channels_last=None`` looks at the shape and
    takes N x 3 x H x W when both fit).
    """
    a = np.asarray(adversarial)
    s = np.asarray(source)
    if a.shape != s.shape:
        raise DataError(f"adversarial and source images differ in shape: {a.shape} vs {s.shape}")
    ax = _channel_axis(a.shape, channels_last)
    return np.abs(a.astype(np.float32) - s.astype(np.float32)).max(axis=ax)


class MPPHistogram:
    """Accumulates the maximum-pixel-perturbation distribution of one attack, chunk by chunk.

    Bins are ``bin_width`` grey levels wide, centred on 0, 1, ..., ceil(delta) (for width 1),
    so quantised images put each integer perturbation in its own bin.  ``update`` adds a chunk
    of (adversarial, source) images (optionally only the rows in ``mask``); ``summary``
    returns the JSON-able distribution.  Memory: one chunk at a time.
    """

    def __init__(
        self,
        delta: float,
        *,
        within: float = 5.0,
        bin_width: float = 1.0,
        setting: str | None = None,
        label: str | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if not (math.isfinite(delta) and delta > 0):
            raise ConfigError(f"delta must be a number > 0, got {delta!r}")
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise ConfigError(f"bin_width must be > 0, got {bin_width!r}")
        if not (math.isfinite(within) and within > 0):
            raise ConfigError(f"within must be > 0, got {within!r}")
        if setting is not None and setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)} or None, got {setting!r}")
        self.delta = float(delta)
        self.within = float(within)
        self.bin_width = float(bin_width)
        self.setting = setting
        self.label = label
        self.channels_last = channels_last
        nb = int(math.ceil(self.delta / self.bin_width - 1e-9))
        self.edges = (np.arange(nb + 2) - 0.5) * self.bin_width
        self.counts = np.zeros(nb + 1, np.int64)
        self.pixels = 0
        self.images = 0
        self.below = 0
        self.at_most = 0
        self.above_delta = 0
        self.total = 0.0
        self.maximum = 0.0

    def update(self, adversarial: ArrayLike, source: ArrayLike, mask: ArrayLike | None = None) -> MPPHistogram:
        """Add a chunk (N images); ``mask`` (N,) bool keeps only some rows (e.g. the successful)."""
        mpp = max_pixel_perturbation(adversarial, source, channels_last=self.channels_last)
        if mask is not None:
            m = np.asarray(mask).astype(bool).ravel()
            if m.size != mpp.shape[0]:
                raise DataError(f"mask has {m.size} entries for {mpp.shape[0]} images")
            mpp = mpp[m]
        if not np.isfinite(mpp).all():
            raise DataError("images contain NaN or infinity")
        flat = mpp.ravel().astype(np.float64)
        self.images += int(mpp.shape[0])
        self.pixels += int(flat.size)
        if flat.size:
            self.counts += np.histogram(np.clip(flat, 0.0, self.edges[-1] - 1e-9), self.edges)[0]
            self.below += int((flat < self.within - _TOL).sum())
            self.at_most += int((flat <= self.within + _TOL).sum())
            self.above_delta += int((flat > self.delta + _TOL).sum())
            self.total += float(flat.sum())
            self.maximum = max(self.maximum, float(flat.max()))
        return self

    def summary(self) -> dict[str, Any]:
        """``{delta, within, setting, label, bin_edges, counts, images, pixels, share_within_pct
        (strictly below ``within``), share_within_inclusive_pct, above_delta, mean, max}``."""
        return {
            "delta": self.delta,
            "within": self.within,
            "setting": self.setting,
            "label": self.label,
            "bin_edges": self.edges.tolist(),
            "counts": self.counts.astype(int).tolist(),
            "images": self.images,
            "pixels": self.pixels,
            "share_within_pct": pct(self.below, self.pixels),
            "share_within_inclusive_pct": pct(self.at_most, self.pixels),
            "above_delta": self.above_delta,
            "mean": self.total / self.pixels if self.pixels else None,
            "max": self.maximum if self.pixels else None,
        }


def mpp_summary(
    chunks: Iterable[tuple[ArrayLike, ...]],
    delta: float,
    *,
    within: float = 5.0,
    bin_width: float = 1.0,
    setting: str | None = None,
    label: str | None = None,
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """:class:`MPPHistogram` over ``chunks`` of ``(adversarial, source)`` or
    ``(adversarial, source, mask)`` arrays (e.g. one attack shard at a time)."""
    h = MPPHistogram(delta, within=within, bin_width=bin_width, setting=setting, label=label,
                     channels_last=channels_last)
    for chunk in chunks:
        if len(chunk) not in (2, 3):
            raise DataError("each MPP chunk must be (adversarial, source) or (adversarial, source, mask)")
        h.update(*chunk)
    return h.summary()


def mpp_table(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per delta, the share of pixels below 5 grey levels, targeted and untargeted, from
    :func:`mpp_summary` results (each must carry ``delta`` and ``setting``)."""
    cells: dict[float, dict[str, Mapping[str, Any]]] = {}
    for name, s in summaries.items():
        if s.get("setting") not in SETTINGS:
            raise DataError(f"MPP summary {name!r} has no setting ('targeted' / 'untargeted')")
        cells.setdefault(float(s["delta"]), {})[s["setting"]] = s
    within = {float(s["within"]) for s in summaries.values()}
    w = f"{within.pop():g}" if len(within) == 1 else "5"
    rows = []
    for d in sorted(cells):
        t, u = cells[d].get(Setting.TARGETED), cells[d].get(Setting.UNTARGETED)
        rows.append([delta_label(d),
                     t["share_within_pct"] if t else None, u["share_within_pct"] if u else None,
                     t["mean"] if t else None, u["mean"] if u else None,
                     t["images"] if t else None, u["images"] if u else None])
    return {
        "title": f"Pixels whose maximum perturbation is below {w} grey levels (%)",
        "caption": "Deep-features adversarials; maximum absolute change over R, G, B per pixel (Figure 9).",
        "columns": ["δ", "Targeted", "Untargeted", "Mean MPP T", "Mean MPP UT", "Images T", "Images UT"],
        "rows": rows,
        "formats": ["", ".1f", ".1f", ".2f", ".2f", "d", "d"],
        "paper": paper.paper_table("mpp"),
        "notes": [f"Strictly below {w} grey levels: at δ = 5 every pixel is within 5 inclusively, and the "
                  "paper reports 88.3%, so it counts pixels that did not reach the bound."],
    }


