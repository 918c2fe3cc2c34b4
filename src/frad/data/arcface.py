"""ArcFace's 112 x 112 face chips: the 5-point template, a similarity fit and the warp.

InsightFace's networks (and MobileFaceNet trained the same way) take faces warped so that
the eye centres, the nose tip and the mouth corners land on fixed points of a 112 x 112 chip
(:data:`ARCFACE_TEMPLATE`).  frad gets the five points from dlib's 68-point landmarks (eye
centre = mean of the six eye points, nose tip = point 30, mouth corners = 48 and 54), fits the
least-squares similarity transform to the template (Umeyama 1991) and warps bilinearly.

Coordinates follow the template's convention (OpenCV's ``warpAffine``): pixel ``(i, j)`` has
its centre at ``x = j, y = i``.  dlib's landmarks use the same convention.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ARCFACE_TEMPLATE", "five_points_from_68", "umeyama", "warp_similarity", "arcface_chip"]

#: (x, y) of left eye, right eye, nose tip, left and right mouth corner in a 112 x 112 chip.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """ArcFace's five points (5 x 2, x/y) from dlib's 68 landmarks (68 x 2)."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected 68 x 2 landmarks, got {p.shape}")
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform (rotation, uniform scale, shift) mapping ``src`` points
    onto ``dst`` in the least-squares sense (Umeyama 1991, without reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1
    R = U @ D @ Vt
    var = (s**2).sum() / len(src)
    scale = (S * np.diag(D)).sum() / var
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def warp_similarity(img: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Warp ``img`` (H x W x C uint8) with the image->chip transform ``M`` (2 x 3) into a
    ``size`` x ``size`` chip, bilinear, black outside the image (as ``cv2.warpAffine``)."""
    A, t = M[:, :2], M[:, 2]
    Ainv = np.linalg.inv(A)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)  # chip rows (y) and columns (x)
    chip_xy = np.stack([u.ravel(), v.ravel()])
    src = Ainv @ (chip_xy - t[:, None])  # image x, y
    coords = np.stack([src[1], src[0]])  # rows, cols
    img = np.asarray(img)
    out = np.empty((size, size, img.shape[2]), np.float64)
    for c in range(img.shape[2]):
        out[..., c] = ndimage.map_coordinates(img[..., c].astype(np.float64), coords, order=1, mode="constant",
                                              cval=0.0, prefilter=False).reshape(size, size)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def arcface_chip(img: np.ndarray, landmarks68: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """The ArcFace chip of ``img`` from its 68 landmarks, and the image->chip transform used."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    M = umeyama(five_points_from_68(landmarks68), template)
    return warp_similarity(img, M, size), M
