"""A synthetic identity dataset drawn by frad: cartoon faces, directly as aligned face chips.

Every identity has a fixed face geometry and colouring (face shape, skin, eyes, brows, nose,
mouth, hair, optional beard and glasses), drawn from a generator seeded by ``(seed,
identity index)``; every image varies it a little (roll, shift and scale, a small yaw,
lighting, expression, background and noise), seeded by ``(seed, identity, image)``.  So the
data is deterministic, identities do not depend on how many others are drawn, and a head on
a face network's embeddings can learn them.

The faces are drawn where dlib's 5-point chips (150 x 150, padding 0.25) put real faces, so
they are treated as already aligned (:data:`SYNTHETIC_ALIGNMENT`): no face detector would
find them.  The data is always labelled synthetic: ``name='synthetic'``, ``synthetic=True``,
and folders written by :func:`write_synthetic_dataset` carry a ``frad-synthetic.json``
marker that :func:`frad.data.folders.load_identity_folders` turns into the same labels.
These faces are for self-contained tests and for running the pipeline without real data;
figures measured on them say nothing about real face recognition.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import ConfigError
from ..utils.io import atomic_write_bytes, write_json

__all__ = [
    "SYNTHETIC_ALIGNMENT",
    "SYNTHETIC_MARKER",
    "SyntheticFaces",
    "draw_face",
    "identity_params",
    "make_synthetic_faces",
    "write_synthetic_dataset",
]

#: The chips are drawn as if aligned like dlib's chips (size 150, padding 0.25).
SYNTHETIC_ALIGNMENT = "dlib-5pt-150-pad0.25"
#: Marker file at the root of a synthetic dataset written to disk.
SYNTHETIC_MARKER = "frad-synthetic.json"
_VERSION = 1
_SS = 2  # supersampling factor for anti-aliased drawing

_SKIN = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [161, 102, 64], [120, 74, 46], [88, 54, 36]],
    dtype=np.float64,
)
_HAIR = np.array(
    [[20, 16, 14], [60, 40, 28], [110, 72, 40], [170, 120, 60], [220, 190, 120], [150, 150, 150], [140, 50, 30]],
    dtype=np.float64,
)
_IRIS = np.array([[70, 45, 25], [40, 90, 150], [60, 110, 70], [110, 110, 120], [30, 20, 15]], dtype=np.float64)


@dataclass(frozen=True)
class SyntheticFaces:
    """Drawn face chips with their labels; always ``synthetic=True``.

    ``chips`` is N x size x size x 3 uint8 RGB, ``labels`` N int64 indices into ``class_names``,
    ``image_ids`` N strings ``identity/identity_0001``.
    """

    chips: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_ids: list[str]
    seed: int
    name: str = "synthetic"
    synthetic: bool = True
    alignment: str = SYNTHETIC_ALIGNMENT
    settings: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.size)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_VERSION, *key]))


def identity_params(seed: int, identity: int) -> dict[str, Any]:
    """The fixed appearance of identity ``identity`` under ``seed`` (fractions of the chip side)."""
    r = _rng(seed, identity, 0)
    skin = _SKIN[r.integers(len(_SKIN))] + r.normal(0, 8, 3)
    hair = _HAIR[r.integers(len(_HAIR))] + r.normal(0, 10, 3)
    return {
        "skin": np.clip(skin, 0, 255),
        "hair": np.clip(hair, 0, 255),
        "iris": np.clip(_IRIS[r.integers(len(_IRIS))] + r.normal(0, 8, 3), 0, 255),
        "lip": np.clip(skin * np.array([0.85, 0.55, 0.55]) + r.normal(0, 8, 3), 0, 255),
        "face_w": r.uniform(0.27, 0.36),
        "face_h": r.uniform(0.36, 0.45),
        "face_cy": r.uniform(0.52, 0.57),
        "jaw": r.uniform(1.6, 2.6),  # superellipse exponent of the lower half: low = pointed chin
        "eye_dx": r.uniform(0.12, 0.175),
        "eye_y": r.uniform(0.37, 0.43),
        "eye_rx": r.uniform(0.038, 0.058),
        "eye_ry": r.uniform(0.018, 0.032),
        "brow_dy": r.uniform(0.045, 0.075),
        "brow_w": r.uniform(0.006, 0.016),
        "brow_tilt": r.uniform(-0.02, 0.02),
        "nose_len": r.uniform(0.08, 0.15),
        "nose_w": r.uniform(0.028, 0.055),
        "mouth_y": r.uniform(0.66, 0.73),
        "mouth_w": r.uniform(0.07, 0.13),
        "lip_h": r.uniform(0.008, 0.022),
        "hairline": r.uniform(0.19, 0.28),
        "hair_style": int(r.integers(4)),  # 0 short, 1 fringe, 2 long sides, 3 bald
        "beard": bool(r.random() < 0.2),
        "glasses": bool(r.random() < 0.15),
        "ear": r.uniform(0.03, 0.05),
    }


def _superellipse(
    cx: float, cy: float, rx: float, ry: float, top_exp: float, bottom_exp: float, n: int = 96
) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = np.where(s > 0, bottom_exp, top_exp)  # y grows downwards: s > 0 is the lower half
    x = cx + rx * np.sign(c) * np.abs(c) ** (2 / e)
    y = cy + ry * np.sign(s) * np.abs(s) ** (2 / e)
    return list(zip(x.tolist(), y.tolist()))


def draw_face(params: dict[str, Any], rng: np.random.Generator, size: int = 150) -> np.ndarray:
    """One image (size x size x 3 uint8) of the identity ``params``, varied by ``rng``.

    Long because: a drawing script, one facial feature after another on the same canvas; every line
    paints with the identity's parameters and the image's random variation.
    """
    p = params
    S = size * _SS
    bg = np.clip(rng.uniform(40, 215, 3), 0, 255)
    img = Image.new("RGB", (S, S), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(img)

    def col(c: object, k: float = 1.0) -> tuple[int, int, int]:
        a = np.clip(np.asarray(c, dtype=np.float64) * k, 0, 255)
        return int(a[0]), int(a[1]), int(a[2])

    yaw = rng.normal(0, 0.015)  # shifts inner features sideways
    smile = rng.normal(0.012, 0.012)
    open_mouth = max(0.0, rng.normal(0.0, 0.008))
    eye_open = float(np.clip(rng.normal(1.0, 0.12), 0.45, 1.25))
    brow_raise = rng.normal(0, 0.008)

    cx = 0.5
    fw, fh, fcy = float(p["face_w"]), float(p["face_h"]), float(p["face_cy"])
    hair, skin = p["hair"], p["skin"]
    style = int(p["hair_style"])  # type: ignore[call-overload]

    def P(x: float, y: float) -> tuple[float, float]:
        return x * S, y * S

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * S, y0 * S, x1 * S, y1 * S]

    # long hair behind the head
    if style == 2:
        d.rounded_rectangle(
            box(cx - fw - 0.06, fcy - fh - 0.03, cx + fw + 0.06, fcy + fh * 0.75), radius=0.12 * S, fill=col(hair)
        )
    # ears
    er = float(p["ear"])
    for sx in (-1, 1):
        ex = cx + sx * (fw - 0.005) + yaw * 0.5
        d.ellipse(box(ex - er, 0.45 - 1.6 * er, ex + er, 0.45 + 1.6 * er), fill=col(skin, 0.92))
    # face
    d.polygon([P(x, y) for x, y in _superellipse(cx + yaw * 0.3, fcy, fw, fh, 2.2, float(p["jaw"]))], fill=col(skin))
    # beard
    if p["beard"]:
        pts = _superellipse(cx + yaw * 0.3, fcy, fw, fh, 2.2, float(p["jaw"]))
        low = [P(x, y) for x, y in pts if y > float(p["mouth_y"]) - 0.07]
        if len(low) > 2:
            d.polygon(low, fill=col(hair, 0.9))
    # hair on top: the part of a slightly larger outline above the hairline
    hl = float(p["hairline"])
    if style in (0, 1, 2):
        outline = _superellipse(cx + yaw * 0.3, fcy - 0.01, fw + 0.02, fh + 0.035, 2.2, 2.0)
        cap = [P(x, y) for x, y in outline if y <= hl]
        if len(cap) > 2:
            d.polygon(cap, fill=col(hair))
        if style == 1:
            d.polygon(
                [P(cx - fw * 0.9, hl - 0.01), P(cx + fw * 0.2, hl + 0.06), P(cx + fw * 0.9, hl - 0.01)], fill=col(hair)
            )
    # eyes, brows
    ey = float(p["eye_y"])
    erx, ery = float(p["eye_rx"]), float(p["eye_ry"]) * eye_open
    for sx in (-1, 1):
        ex = cx + sx * float(p["eye_dx"]) + yaw
        d.ellipse(box(ex - erx, ey - ery, ex + erx, ey + ery), fill=(245, 245, 240))
        ir = min(erx, float(p["eye_ry"])) * 0.95
        d.ellipse(box(ex - ir, ey - min(ir, ery), ex + ir, ey + min(ir, ery)), fill=col(p["iris"]))
        pr = ir * 0.45
        d.ellipse(box(ex - pr, ey - min(pr, ery), ex + pr, ey + min(pr, ery)), fill=(10, 10, 10))
        by = ey - float(p["brow_dy"]) - brow_raise
        tilt = float(p["brow_tilt"]) * sx
        d.line(
            [P(ex - erx * 1.1, by + tilt), P(ex + erx * 1.1, by - tilt)],
            fill=col(hair, 0.8),
            width=max(1, int(float(p["brow_w"]) * S)),
        )
        if p["glasses"]:
            d.ellipse(
                box(ex - erx * 1.5, ey - erx * 1.2, ex + erx * 1.5, ey + erx * 1.2),
                outline=(30, 30, 30),
                width=max(1, int(0.008 * S)),
            )
    if p["glasses"]:
        d.line(
            [P(cx - float(p["eye_dx"]) + erx * 1.5 + yaw, ey), P(cx + float(p["eye_dx"]) - erx * 1.5 + yaw, ey)],
            fill=(30, 30, 30),
            width=max(1, int(0.008 * S)),
        )
    # nose
    nl, nw = float(p["nose_len"]), float(p["nose_w"])
    nx = cx + yaw * 1.3
    d.polygon([P(nx, ey + 0.02), P(nx - nw, ey + nl + 0.03), P(nx + nw, ey + nl + 0.03)], fill=col(skin, 0.86))
    # mouth: a curved band, wider and bent with the smile, opened a little
    my, mw, lh = float(p["mouth_y"]), float(p["mouth_w"]), float(p["lip_h"])
    xs = np.linspace(-1, 1, 24)
    mx = cx + yaw * 1.1
    upper = [P(mx + mw * x, my + smile * (1 - x * x) - lh * np.sqrt(1 - x * x)) for x in xs]
    lower = [P(mx + mw * x, my + smile * (1 - x * x) + (lh + open_mouth) * np.sqrt(1 - x * x)) for x in xs[::-1]]
    d.polygon(upper + lower, fill=col(p["lip"]))
    if open_mouth > 0.004:
        d.line(
            [P(mx - mw * 0.8, my + smile * 0.3), P(mx + mw * 0.8, my + smile * 0.3)],
            fill=(60, 20, 20),
            width=max(1, int(open_mouth * S)),
        )

    # pose: roll, scale and shift about the chip centre
    angle = rng.normal(0, 4.0)
    scale = float(np.clip(rng.normal(1.0, 0.03), 0.9, 1.1))
    tx, ty = rng.normal(0, 0.012 * S, 2)
    a = np.deg2rad(angle)
    c, s = np.cos(a) / scale, np.sin(a) / scale
    ox, oy = S / 2, S / 2
    # inverse map for PIL: output (x, y) -> input
    coeffs = (c, s, ox - c * (ox + tx) - s * (oy + ty), -s, c, oy + s * (ox + tx) - c * (oy + ty))
    img = img.transform(
        (S, S), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=tuple(int(v) for v in bg)
    )
    img = img.filter(ImageFilter.GaussianBlur(radius=_SS * 0.4)).resize((size, size), Image.Resampling.LANCZOS)

    # light: overall gain and a linear gradient from a random direction, then noise
    x = np.asarray(img, dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.8, 1.15) * (1 + rng.uniform(0.0, 0.35) * (np.cos(theta) * xx + np.sin(theta) * yy))
    tint = 1 + rng.normal(0, 0.03, 3)
    x = x * gain[..., None] * tint + rng.normal(0, rng.uniform(1.5, 5.0), x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _check_counts(n_identities: int, images_per_identity: int | list[int]) -> list[int]:
    if not isinstance(n_identities, (int, np.integer)) or n_identities < 2:
        raise ConfigError(f"n_identities must be an integer >= 2, got {n_identities!r}")
    counts = (
        [images_per_identity] * n_identities
        if isinstance(images_per_identity, (int, np.integer))
        else list(images_per_identity)
    )
    if len(counts) != n_identities:
        raise ConfigError(f"images_per_identity lists {len(counts)} counts for {n_identities} identities")
    if any((not isinstance(c, (int, np.integer))) or c < 1 for c in counts):
        raise ConfigError(f"images_per_identity must be integers >= 1, got {counts}")
    return [int(c) for c in counts]


def make_synthetic_faces(
    n_identities: int = 10,
    images_per_identity: int | list[int] = 20,
    *,
    size: int = 150,
    seed: int = 0,
) -> SyntheticFaces:
    """Draw ``n_identities`` identities with ``images_per_identity`` chips each (deterministic in ``seed``)."""
    counts = _check_counts(n_identities, images_per_identity)
    if size < 32:
        raise ConfigError(f"size must be >= 32 pixels, got {size}")
    width = max(4, len(str(n_identities - 1)))
    names = [f"synthetic_{i:0{width}d}" for i in range(n_identities)]
    chips = np.zeros((sum(counts), size, size, 3), np.uint8)
    labels = np.zeros(sum(counts), np.int64)
    ids: list[str] = []
    k = 0
    for i, (name, n) in enumerate(zip(names, counts)):
        params = identity_params(seed, i)
        for j in range(n):
            chips[k] = draw_face(params, _rng(seed, i, j + 1), size)
            labels[k] = i
            ids.append(f"{name}/{name}_{j + 1:04d}")
            k += 1
    settings = {
        "n_identities": n_identities,
        "images_per_identity": counts,
        "size": size,
        "seed": seed,
        "version": _VERSION,
    }
    alignment = SYNTHETIC_ALIGNMENT if size == 150 else f"dlib-5pt-{size}-pad0.25"
    return SyntheticFaces(chips, labels, names, ids, seed, alignment=alignment, settings=settings)


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    n_identities: int = 10,
    images_per_identity: int | list[int] = 20,
    *,
    size: int = 150,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset as identity folders of PNG chips plus the ``frad-synthetic.json`` marker.

    Files are written atomically and an existing identical file is left alone, so an
    interrupted call can simply be repeated.
    """
    faces = make_synthetic_faces(n_identities, images_per_identity, size=size, seed=seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    import io

    for chip, image_id in zip(faces.chips, faces.image_ids):
        path = root / f"{image_id}.png"
        buf = io.BytesIO()
        Image.fromarray(chip).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        if path.is_file() and hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest():
            continue
        atomic_write_bytes(path, data)
    write_json(
        root / SYNTHETIC_MARKER,
        {
            "dataset": "synthetic",
            "synthetic": True,
            "alignment": faces.alignment,
            "generator": "frad.data.synthetic",
            **faces.settings,
        },
    )
    return root
