"""Face alignment to dlib's face chips, with an on-disk cache so a dataset is aligned once.

Detection and landmarks are dlib's own (``dlib-bin``): the HOG frontal-face detector, tried
at the original size and then upsampled once; where it finds nothing, dlib's CNN (MMOD)
detector (slow, ~2.5 s an image on a CPU, so only for the misses); where that finds nothing
too, a fallback box centred in the image (the typical face box of a centred face crop), so
that no image, and no LFW pair, is ever dropped.  Each image records which of these gave its
chip (``methods``), and the counts are reported.  Where several faces are found, the one
nearest the image centre is used.  The 5-point landmark model and ``dlib.get_face_chip``
(size 150, padding 0.25) then cut the chip, exactly as dlib's own pipeline does.

Chips are cached as PNG files keyed by the image file's sha256 and the alignment settings,
written atomically as soon as each image is done: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import ConfigError, DataError
from ..utils.cache import cache_dir
from ..utils.io import atomic_write_bytes
from ..utils.progress import progress
from .images import decode_image

__all__ = [
    "AlignmentSettings",
    "AlignmentResult",
    "FaceAligner",
    "align_images",
    "alignment_for",
    "METHODS",
]

log = logging.getLogger(__name__)

#: How a chip was obtained, best first.  'error' = the file could not be decoded.
METHODS = ("hog", "hog-up1", "cnn", "fallback", "none", "error")
_CACHE_VERSION = 1
_FALLBACK_SIDE = 0.42  # fallback box side as a share of the image's shorter side
_PARALLEL_MIN = 64  # fewer uncached images than this are aligned in-process


@dataclass(frozen=True)
class AlignmentSettings:
    """How chips are cut.  ``detector``: 'hog' or 'hog+cnn' (CNN only where HOG finds nothing);
    ``fallback``: 'centre' (a centred box where no detector finds a face) or 'none' (report failure)."""

    size: int = 150
    padding: float = 0.25
    detector: Literal["hog", "hog+cnn"] = "hog+cnn"
    fallback: Literal["centre", "none"] = "centre"
    #: 'dlib': dlib's 5-point chips (``get_face_chip``); 'arcface': ArcFace's 5-point template
    #: from dlib's 68 landmarks (:mod:`frad.data.arcface`; ``padding`` is unused)
    template: Literal["dlib", "arcface"] = "dlib"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ConfigError(f"alignment size must be >= 16 pixels, got {self.size}")
        if not 0.0 <= self.padding <= 2.0:
            raise ConfigError(f"alignment padding must be in [0, 2], got {self.padding}")
        if self.detector not in ("hog", "hog+cnn"):
            raise ConfigError(f"alignment detector must be 'hog' or 'hog+cnn', got {self.detector!r}")
        if self.fallback not in ("centre", "none"):
            raise ConfigError(f"alignment fallback must be 'centre' or 'none', got {self.fallback!r}")
        if self.template not in ("dlib", "arcface"):
            raise ConfigError(f"alignment template must be 'dlib' or 'arcface', got {self.template!r}")

    def key(self) -> str:
        fields = asdict(self)
        if self.template == "dlib":  # keeps the keys (and caches) of dlib chips from before templates existed
            del fields["template"]
        blob = json.dumps({**fields, "v": _CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


#: Chip geometry per ``ModelInfo.alignment``.  dlib's chips are what its network was trained on;
#: for VGGFace2's loose crops a larger padding approximates their framing (face ~55% of the side).
_ALIGNMENT_PADDING = {"dlib-5pt-150-pad0.25": 0.25, "vggface2-loose-crop": 0.4}
#: Alignments cut with another template than dlib's (padding unused for them).
_ALIGNMENT_TEMPLATE = {"arcface-5pt-112": "arcface"}


def alignment_for(alignment: str, input_size: tuple[int, int]) -> dict[str, object] | None:
    """Keyword arguments for :func:`align_images` that suit a model, or None when the model
    takes whole images (its ``alignment`` is 'none' or unknown) and resizes them itself."""
    if alignment in _ALIGNMENT_TEMPLATE:
        return {"size": int(input_size[0]), "padding": 0.0, "template": _ALIGNMENT_TEMPLATE[alignment]}
    padding = _ALIGNMENT_PADDING.get(alignment)
    if padding is None:
        return None
    return {"size": int(input_size[0]), "padding": padding}


@dataclass
class AlignmentResult:
    """Chips of a list of images, in order.  Failed images (``ok`` False) have all-zero chips."""

    paths: list[Path]
    chips: np.ndarray
    methods: list[str]
    n_faces: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    cached: int = 0

    @property
    def ok(self) -> np.ndarray:
        return np.array([m not in ("none", "error") for m in self.methods], dtype=bool)

    def counts(self) -> dict[str, int]:
        """Number of images per method (see :data:`METHODS`)."""
        c = Counter(self.methods)
        return {m: c.get(m, 0) for m in METHODS if c.get(m, 0)}

    def summary(self) -> str:
        parts = ", ".join(f"{m}: {n}" for m, n in self.counts().items())
        return f"{len(self.paths)} images aligned ({parts}); {self.cached} from the cache"


class FaceAligner:
    """dlib's detectors, landmark model and chip extraction for one process (loaded lazily)."""

    def __init__(self, settings: AlignmentSettings | None = None) -> None:
        self.settings = settings or AlignmentSettings()
        self._hog = None
        self._cnn = None
        self._sp = None
        self._sp68 = None

    def _landmarks68(self):  # noqa: ANN202 - dlib type
        import dlib

        from ..models.dlib_resnet import find_models_file

        if self._sp68 is None:
            self._sp68 = dlib.shape_predictor(str(find_models_file("shape_predictor_68_face_landmarks.dat")))
        return self._sp68

    def _load(self) -> None:
        import dlib

        from ..models.dlib_resnet import find_models_file

        if self._hog is None:
            self._hog = dlib.get_frontal_face_detector()
            self._sp = dlib.shape_predictor(str(find_models_file("shape_predictor_5_face_landmarks.dat")))

    def _cnn_detector(self):  # noqa: ANN202 - dlib type
        import dlib

        from ..models.dlib_resnet import find_models_file

        if self._cnn is None:
            self._cnn = dlib.cnn_face_detection_model_v1(str(find_models_file("mmod_human_face_detector.dat")))
        return self._cnn

    def detect(self, img: np.ndarray) -> tuple[list, str]:  # noqa: ANN401 - dlib rectangles
        """Face boxes and the method that found them ('none' if nothing did)."""
        import dlib

        self._load()
        for up, name in ((0, "hog"), (1, "hog-up1")):
            rects = list(self._hog(img, up))
            if rects:
                return rects, name
        if self.settings.detector == "hog+cnn":
            rects = [d.rect for d in self._cnn_detector()(img, 1)]
            if rects:
                return rects, "cnn"
        if self.settings.fallback == "centre":
            h, w = img.shape[:2]
            side = _FALLBACK_SIDE * min(h, w)
            cx, cy = w / 2, h / 2 + 0.05 * side
            r = dlib.rectangle(int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
            return [r], "fallback"
        return [], "none"

    def chip_transform(self, img: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The 2 x 3 image->chip similarity transform :meth:`align` uses for ``img`` (pixel centres
        at integer coordinates), and the detection method; ``(None, method)`` without a face.
        Used to carry a perturbation from one model's chip into another's (transfer attacks)."""
        import dlib

        from .arcface import ARCFACE_TEMPLATE, five_points_from_68, umeyama

        img = np.ascontiguousarray(img, dtype=np.uint8)
        rects, method = self.detect(img)
        if not rects:
            return None, method
        h, w = img.shape[:2]
        rect = min(rects, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        if self.settings.template == "arcface":
            shape = self._landmarks68()(img, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            return umeyama(five_points_from_68(pts), ARCFACE_TEMPLATE * (self.settings.size / 112.0)), method
        d = dlib.get_face_chip_details(self._sp(img, rect), size=self.settings.size, padding=self.settings.padding)
        return dlib_chip_transform(d), method

    def align(self, img: np.ndarray) -> tuple[np.ndarray | None, str, int]:
        """``(chip or None, method, number of faces found)`` for one RGB uint8 image."""
        import dlib

        img = np.ascontiguousarray(img, dtype=np.uint8)
        rects, method = self.detect(img)
        if not rects:
            return None, method, 0
        h, w = img.shape[:2]
        rect = min(rects, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        if self.settings.template == "arcface":
            from .arcface import arcface_chip

            shape = self._landmarks68()(img, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            chip, _ = arcface_chip(img, pts, self.settings.size)
            return chip, method, (len(rects) if method != "fallback" else 0)
        shape = self._sp(img, rect)
        chip = dlib.get_face_chip(img, shape, size=self.settings.size, padding=self.settings.padding)
        n = len(rects) if method != "fallback" else 0
        return np.asarray(chip, dtype=np.uint8), method, n


def dlib_chip_transform(details: object) -> np.ndarray:
    """dlib's ``get_mapping_to_chip`` for a ``chip_details``: the similarity transform that takes
    the rect's corners, rotated by ``angle`` about its centre, to the chip's corners."""
    from .arcface import umeyama

    r, a = details.rect, float(details.angle)  # type: ignore[attr-defined]
    cx, cy = (r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0
    c, s = np.cos(a), np.sin(a)

    def rot(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    rows, cols = int(details.rows), int(details.cols)  # type: ignore[attr-defined]
    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())])
    dst = np.array([[0.0, 0.0], [cols - 1.0, 0.0], [cols - 1.0, rows - 1.0]])
    return umeyama(src, dst)


# ------------------------------------------------------------------ cache
def _cache_root(settings: AlignmentSettings, cache: bool | str | os.PathLike[str]) -> Path | None:
    if cache is False:
        return None
    base = cache_dir("chips") if cache is True else Path(cache)
    root = base / settings.key()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _entry(root: Path, digest: str) -> Path:
    return root / digest[:2] / f"{digest}.png"


def _read_entry(path: Path, size: int) -> tuple[np.ndarray, str, int] | None:
    try:
        with Image.open(path) as im:
            im.load()
            method = im.text.get("frad-method", "")
            n = int(im.text.get("frad-faces", "0"))
            chip = np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None  # unreadable cache entry: align again
    if method not in METHODS or chip.shape != (size, size, 3):
        return None
    return chip, method, n


def _write_entry(path: Path, chip: np.ndarray, method: str, n_faces: int) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("frad-method", method)
    info.add_text("frad-faces", str(n_faces))
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="PNG", pnginfo=info, compress_level=1)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------ workers
_worker_aligner: FaceAligner | None = None


def _init_worker(settings: AlignmentSettings) -> None:
    global _worker_aligner
    _worker_aligner = FaceAligner(settings)


def _align_one(args: tuple[str, AlignmentSettings, str | None]) -> tuple[str, np.ndarray | None, str, int, str | None, str | None]:
    """Worker: decode, align and cache one file.  Returns (path, chip, method, faces, error, note)."""
    global _worker_aligner
    path, settings, root = args
    if _worker_aligner is None or _worker_aligner.settings != settings:
        _worker_aligner = FaceAligner(settings)
    try:
        raw = Path(path).read_bytes()
        decoded = decode_image(path)
    except (DataError, OSError) as exc:
        return path, None, "error", 0, str(exc), None
    chip, method, n = _worker_aligner.align(decoded.pixels)
    if chip is None:
        chip = np.zeros((settings.size, settings.size, 3), np.uint8)
    if root is not None:
        _write_entry(_entry(Path(root), hashlib.sha256(raw).hexdigest()), chip, method, n)
    return path, chip, method, n, None, decoded.note


def align_images(
    paths: Sequence[str | os.PathLike[str]],
    *,
    size: int = 150,
    padding: float = 0.25,
    detector: Literal["hog", "hog+cnn"] = "hog+cnn",
    fallback: Literal["centre", "none"] = "centre",
    cache: bool | str | os.PathLike[str] = True,
    workers: int | None = None,
    desc: str = "aligning faces",
    template: Literal["dlib", "arcface"] = "dlib",
) -> AlignmentResult:
    """Align every image in ``paths`` to a ``size`` x ``size`` dlib face chip.

    Cached chips are read back; the rest are aligned in ``workers`` processes (default: one
    per CPU, at most 4) and cached one by one.  Undecodable files are reported in ``errors``
    (method 'error'), never fatal.

    Long because: reading the cache, dispatching the missing images to the worker processes and
    writing each chip back as it arrives share the result arrays and the progress bar.
    """
    settings = AlignmentSettings(size=size, padding=padding, detector=detector, fallback=fallback, template=template)
    root = _cache_root(settings, cache)
    paths = [Path(p) for p in paths]
    n = len(paths)
    chips = np.zeros((n, size, size, 3), np.uint8)
    methods = ["none"] * n
    faces = np.zeros(n, np.int32)
    errors: dict[int, str] = {}
    notes: dict[int, str] = {}
    todo: list[int] = []
    cached = 0
    for i, p in enumerate(progress(paths, desc="checking chip cache", disable=None if n > 500 else True)):
        if root is not None:
            try:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as exc:
                errors[i], methods[i] = f"{p}: cannot read ({exc.strerror})", "error"
                continue
            hit = _read_entry(_entry(root, digest), size)
            if hit is not None:
                chips[i], methods[i], faces[i] = hit
                cached += 1
                continue
        todo.append(i)

    if todo:
        jobs = [(str(paths[i]), settings, str(root) if root is not None else None) for i in todo]
        index = {str(paths[i]): i for i in todo}
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        bar = progress(total=len(todo), desc=desc, unit="img")

        def store(res: tuple) -> None:  # type: ignore[type-arg]
            path, chip, method, nf, err, note = res
            i = index[path]
            methods[i], faces[i] = method, nf
            if chip is not None:
                chips[i] = chip
            if err:
                errors[i] = err
            if note:
                notes[i] = f"{path}: {note}"
            bar.update(1)

        try:
            if workers <= 1 or len(todo) < _PARALLEL_MIN:
                for job in jobs:
                    store(_align_one(job))
            else:
                ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch/OpenMP threads exist
                try:
                    with cf.ProcessPoolExecutor(
                        workers, mp_context=ctx, initializer=_init_worker, initargs=(settings,)
                    ) as ex:
                        for res in ex.map(_align_one, jobs, chunksize=16):
                            store(res)
                except cf.process.BrokenProcessPool:
                    # e.g. a __main__ that spawned workers cannot import; finish in this process
                    left = [job for job in jobs if methods[index[job[0]]] == "none" and index[job[0]] not in errors]
                    log.warning("alignment workers could not start; aligning %d images in-process", len(left))
                    for job in left:
                        store(_align_one(job))
        finally:
            bar.close()

    result = AlignmentResult(paths, chips, methods, faces, errors, notes, cached)
    if todo:
        log.info("%s", result.summary())
    return result
