"""The feature cache: embeddings and pooled taps of every image, computed once and reused.

:func:`extract_features` runs a :class:`~frad.models.base.FaceModel` over a
:class:`~frad.data.folders.FaceDataset` or over an in-memory batch of images (e.g. the
adversarials an attack produced) and returns a :class:`FeatureSet`: ``{tap: (N, C_l)
float32}`` with every map global-average-pooled to a vector, the embedding included.

Results are stored under ``cache_dir('features', '<model>-<fingerprint>', <input key>)``:

- the model part is the model's :meth:`~frad.models.base.FaceModel.fingerprint` (weights and
  preprocessing), so a changed model or preprocessing never reads stale features;
- the input key hashes the dataset's content (ids, file sha256s, labels) together with how
  images become model inputs (the alignment settings, or the resize, see
  :func:`input_preparation`), or, for arrays, the pixel bytes;
- rows are stored in chunks of ``chunk_size`` images, one ``.npy`` per (tap, chunk), each
  written atomically as soon as it is computed: an interrupted extraction resumes at the
  first missing chunk, and asking later for more taps computes only those.

Only pooled features are cached (full maps of every tap would not fit on disk for a real
dataset); use ``model.forward_intermediates`` directly for maps.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..models.base import EMBEDDING, FaceModel, to_pixels
from ..utils.cache import cache_dir
from ..utils.executors import Executor, LocalExecutor
from ..utils.io import atomic_write_bytes, load_npz, read_json, save_npz, write_json
from ..utils.progress import progress
from .folders import FaceDataset

__all__ = [
    "FeatureSet",
    "PreparedInputs",
    "extract_features",
    "input_preparation",
    "prepare_inputs",
    "input_key",
]

log = logging.getLogger(__name__)
_CACHE_VERSION = 1
Detector = Literal["hog", "hog+cnn"]
Fallback = Literal["centre", "none"]


# ------------------------------------------------------------------ inputs
def _geometry(alignment: str, input_size: tuple[int, int]) -> tuple[int, float]:
    """Chip size and padding for a model alignment name that needs face chips."""
    from .alignment import alignment_for

    g = alignment_for(alignment, input_size)
    if g is None:
        raise ConfigError(f"alignment {alignment!r} does not cut face chips")
    return int(g["size"]), float(g["padding"])  # type: ignore[arg-type]


def _template(alignment: str, input_size: tuple[int, int]) -> str:
    """The chip template ('dlib' or 'arcface') of a model alignment name."""
    from .alignment import alignment_for

    return str((alignment_for(alignment, input_size) or {}).get("template", "dlib"))


def input_preparation(
    model: FaceModel,
    dataset: FaceDataset | None = None,
    *,
    detector: Detector = "hog+cnn",
    fallback: Fallback = "centre",
) -> dict[str, Any]:
    """How images become ``model``'s inputs: a JSON-ready description that is part of cache keys.

    - ``{'kind': 'as-is'}``: the images already have the model's alignment (e.g. synthetic chips);
    - ``{'kind': 'align', ...}``: dlib 5-point chips cut by :func:`frad.data.alignment.align_images`;
    - ``{'kind': 'resize', ...}``: a model without alignment ('none') gets images resized (short
      side to the preprocessing's ``resize``, centre square) or scaled to its input size.
    """
    target = model.info.alignment
    h, w = model.info.input_size
    if dataset is not None and dataset.alignment is not None and dataset.alignment == target:
        return {"kind": "as-is", "alignment": target, "size": [h, w]}
    from .alignment import alignment_for

    if alignment_for(target, (h, w)) is None:  # 'none' or unknown: the model takes whole images
        spec = getattr(model.preprocess, "spec", None)
        side = getattr(spec, "resize", None)
        if side:
            return {"kind": "resize", "short_side": int(side), "square": True}
        return {"kind": "resize", "size": [h, w]}
    size, padding = _geometry(target, (h, w))
    from .alignment import AlignmentSettings

    settings = AlignmentSettings(size=size, padding=padding, detector=detector, fallback=fallback,  # type: ignore[arg-type]
                                 template=_template(target, (h, w)))  # type: ignore[arg-type]
    return {
        "kind": "align",
        "alignment": target,
        "settings_key": settings.key(),
        "detector": detector,
        "fallback": fallback,
    }


@dataclass
class PreparedInputs:
    """Model-ready images (N x H x W x 3 uint8) and whether each one could be prepared."""

    pixels: np.ndarray
    ok: np.ndarray
    methods: list[str]
    errors: dict[int, str] = field(default_factory=dict)


def _resize(img: np.ndarray, prep: dict[str, Any]) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(img)
    if "short_side" in prep:
        s = prep["short_side"]
        w, h = im.size
        k = s / min(w, h)
        im = im.resize((max(s, round(w * k)), max(s, round(h * k))), Image.Resampling.BILINEAR)
        w, h = im.size
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    else:
        hh, ww = prep["size"]
        im = im.resize((ww, hh), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def prepare_inputs(
    dataset: FaceDataset,
    model: FaceModel,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    detector: Detector = "hog+cnn",
    fallback: Fallback = "centre",
    cache: bool = True,
    workers: int | None = None,
) -> PreparedInputs:
    """The images ``indices`` of ``dataset`` as ``model``'s inputs (see :func:`input_preparation`).

    Images that cannot be read or aligned are all-zero with ``ok`` False and a reason in
    ``errors``; nothing raises for a single bad image.
    """
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    prep = input_preparation(model, dataset, detector=detector, fallback=fallback)
    n = len(idx)
    if prep["kind"] == "align":
        size, padding = _geometry(prep["alignment"], model.info.input_size)
        paths = [dataset.images[i].path for i in idx]
        if dataset.pixels is None and all(p is not None for p in paths):
            from .alignment import align_images

            res = align_images(
                paths,  # type: ignore[arg-type]
                size=size,
                padding=padding,
                detector=detector,
                fallback=fallback,
                cache=cache,
                workers=workers,  # type: ignore[arg-type]
                template=_template(prep["alignment"], model.info.input_size),  # type: ignore[arg-type]
            )
            return PreparedInputs(res.chips, res.ok, list(res.methods), dict(res.errors))
        from .alignment import AlignmentSettings, FaceAligner

        aligner = FaceAligner(AlignmentSettings(size=size, padding=padding, detector=detector, fallback=fallback,  # type: ignore[arg-type]
                                                template=_template(prep["alignment"], model.info.input_size)))  # type: ignore[arg-type]
        chips = np.zeros((n, size, size, 3), np.uint8)
        methods: list[str] = []
        errors: dict[int, str] = {}
        for k, i in enumerate(idx):
            try:
                chip, method, _ = aligner.align(dataset.load(int(i)))
            except DataError as exc:
                chip, method = None, "error"
                errors[k] = str(exc)
            if chip is not None:
                chips[k] = chip
            methods.append(method)
        ok = np.array([m not in ("none", "error") for m in methods], dtype=bool)
        return PreparedInputs(chips, ok, methods, errors)

    if prep["kind"] == "as-is":
        h, w = prep["size"]
    elif "short_side" in prep:
        h = w = prep["short_side"]
    else:
        h, w = prep["size"]
    out = np.zeros((n, h, w, 3), np.uint8)
    ok = np.ones(n, dtype=bool)
    methods = [prep["kind"]] * n
    errors = {}
    for k, i in enumerate(idx):
        try:
            img = dataset.load(int(i))
            if prep["kind"] == "resize":
                img = _resize(img, prep)
            if img.shape != (h, w, 3):
                raise DataError(
                    f"{dataset.images[i].path or dataset.images[i].image_id}: image is {img.shape[1]}x{img.shape[0]}, "
                    f"but {dataset.name!r} claims alignment {dataset.alignment!r} ({w}x{h} chips)"
                )
            out[k] = img
        except DataError as exc:
            ok[k], methods[k], errors[k] = False, "error", str(exc)
    return PreparedInputs(out, ok, methods, errors)


def input_key(inputs: FaceDataset | np.ndarray, prep: dict[str, Any] | None = None) -> str:
    """Content key of the model inputs: dataset content + preparation, or the array's bytes."""
    h = hashlib.sha256()
    if isinstance(inputs, FaceDataset):
        h.update(b"dataset\0")
        h.update(inputs.content_key().encode())
        h.update(json.dumps(prep or {}, sort_keys=True).encode())
    else:
        a = np.ascontiguousarray(inputs)
        h.update(b"array\0")
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes() if not a.flags.c_contiguous else memoryview(a).cast("B"))  # type: ignore[arg-type]
    return h.hexdigest()[:24]


# ------------------------------------------------------------------ result
@dataclass
class FeatureSet:
    """Pooled features of N images: ``taps[name]`` is (N, C) float32, ``embedding`` included.

    ``ok`` marks images that could be read and aligned (failed ones were embedded as black
    chips: filter them); ``methods`` says how each was aligned.  ``computed`` counts the
    chunks computed by this call (0: everything came from the cache).
    """

    taps: dict[str, np.ndarray]
    model: str
    fingerprint: str
    key: str
    ok: np.ndarray
    methods: list[str] | None = None
    computed: int = 0
    chunks: int = 0
    path: Path | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ok.size)

    def __getitem__(self, tap: str) -> np.ndarray:
        try:
            return self.taps[tap]
        except KeyError:
            raise KeyError(f"no tap {tap!r} in these features; available: {list(self.taps)}") from None

    @property
    def embedding(self) -> np.ndarray:
        return self.taps[EMBEDDING]

    @property
    def blocks(self) -> dict[str, np.ndarray]:
        """Every tap except the embedding (the detector's trajectory layers, input side first)."""
        return {k: v for k, v in self.taps.items() if k != EMBEDDING}

    @property
    def from_cache(self) -> bool:
        return self.computed == 0

    def subset(self, indices: Sequence[int] | np.ndarray) -> FeatureSet:
        idx = np.asarray(indices, dtype=np.int64).ravel()
        return FeatureSet(
            {k: v[idx] for k, v in self.taps.items()},
            self.model,
            self.fingerprint,
            self.key,
            self.ok[idx],
            [self.methods[i] for i in idx] if self.methods is not None else None,
            self.computed,
            self.chunks,
            self.path,
            self.source,
        )


# ------------------------------------------------------------------ storage
def _save_npy(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _load_npy(path: Path, rows: int) -> np.ndarray | None:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # missing or damaged: compute again
    return a if a.ndim == 2 and a.shape[0] == rows and a.dtype == np.float32 else None


def _tap_file(root: Path, tap: str, chunk: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tap)
    return root / f"{safe}.{chunk:05d}.npy"


@torch.no_grad()
def _run(
    model: FaceModel, pixels: np.ndarray, taps: list[str], batch_size: int, device: torch.device
) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {t: [] for t in taps}
    for s in range(0, len(pixels), batch_size):
        chunk = pixels[s : s + batch_size]
        if chunk.dtype == np.uint8:
            x = to_pixels(chunk, device)
        else:  # float N x 3 x H x W pixels, used as they are (no rounding)
            x = torch.as_tensor(np.ascontiguousarray(chunk), dtype=torch.float32, device=device)
        emb, feats = model.forward_intermediates(x, taps, pool=True)
        for t in taps:
            v = feats[t]
            if v.ndim > 2:
                v = v.flatten(2).mean(2)
            out[t].append(v.float().cpu().numpy())
    return {t: np.concatenate(v).astype(np.float32, copy=False) for t, v in out.items()}


@dataclass
class _FeatureTask:
    """One chunk's model inputs and the taps to compute for it."""

    pixels: np.ndarray
    taps: list[str]


class _FeatureWorker:
    """Runs the face model over feature chunks; built where the chunks run (here, or in a Ray
    actor, where it takes the actor's GPU when it has one)."""

    def __init__(self, model: FaceModel, batch_size: int, device: torch.device) -> None:
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        self.model, self.batch_size, self.device = model.to(device).eval(), batch_size, device

    @staticmethod
    def factory(model: FaceModel, batch_size: int, device: torch.device) -> Callable[[], _FeatureWorker]:
        return functools.partial(_FeatureWorker, model, batch_size, device)

    def __call__(self, task: _FeatureTask) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return _run(self.model, task.pixels, task.taps, self.batch_size, self.device)


def extract_features(
    model: FaceModel,
    inputs: FaceDataset | np.ndarray,
    *,
    taps: Sequence[str] | str | None = "all",
    key: str | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    device: torch.device | str | None = None,
    cache: bool | str | os.PathLike[str] = True,
    detector: Detector = "hog+cnn",
    fallback: Fallback = "centre",
    workers: int | None = None,
    desc: str | None = None,
    executor: Executor | None = None,
) -> FeatureSet:
    """Pooled features of every image of ``inputs``: a dataset, N x H x W x 3 uint8 model inputs,
    or N x 3 x H x W float pixels in [0, 255] (adversarials, used unrounded).

    ``taps``: 'all' (default), 'blocks', or tap names; the embedding is always included.
    ``key`` overrides the content key of an array input (e.g. an attack-run id), saving the
    hashing.  ``cache``: True (frad's cache folder), a folder, or False (compute, store nothing).
    Datasets are prepared with :func:`prepare_inputs` (aligned where the model needs it).
    ``executor``: where the network runs over missing chunks (default: here; see
    :mod:`frad.utils.executors`); inputs are prepared and results cached here either way.

    Long because: the cache (its meta file, per-chunk tap files and preparation records) and the
    task generator that feeds the executor share the per-chunk bookkeeping (``found``, ``infos``,
    ``queued``); a split into a cache object and a chunk loop is possible but was not made in issue
    15.
    """
    if not isinstance(model, FaceModel):
        raise TypeError(f"extract_features needs a FaceModel, got {type(model).__name__}")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
    names = model.resolve_taps(taps)
    if EMBEDDING not in names:
        names = [*names, EMBEDDING]
    device = torch.device(device) if device is not None else model.device
    if model.device != device:
        model.to(device)
    ds: FaceDataset | None = inputs if isinstance(inputs, FaceDataset) else None
    arr: np.ndarray | None = None
    is_dataset = ds is not None
    if ds is None:
        arr = np.asarray(inputs)
        if arr.ndim == 3:
            arr = arr[None]
        uint8_images = arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8
        float_pixels = arr.ndim == 4 and arr.shape[1] == 3 and arr.dtype in (np.float32, np.float64)
        if not (uint8_images or float_pixels):
            raise DataError(
                "images must be (N, H, W, 3) uint8 RGB or (N, 3, H, W) float pixels in [0, 255] "
                f"(e.g. adversarials), got shape {arr.shape} dtype {arr.dtype}"
            )
    prep = input_preparation(model, ds, detector=detector, fallback=fallback) if ds is not None else {"kind": "array"}
    n = len(ds) if ds is not None else len(arr)  # type: ignore[arg-type]
    fp = model.fingerprint()
    if key is not None and arr is not None:
        # the key names a folder: anything but a plain name is hashed (no '..', no separators)
        ok_name = re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", key) is not None
        ikey = key if ok_name else hashlib.sha256(key.encode()).hexdigest()[:24]
    else:
        ikey = input_key(ds if ds is not None else arr, prep)  # type: ignore[arg-type]
    if cache is False:
        root = None
    else:
        base = cache_dir("features") if cache is True else Path(cache)
        root = base / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model.info.name)}-{fp}" / ikey
        root.mkdir(parents=True, exist_ok=True)
    source: dict[str, Any] = ds.describe() if ds is not None else {"array": True, "shape": list(arr.shape)}  # type: ignore[union-attr]
    meta_path = root / "meta.json" if root is not None else None
    if meta_path is not None:
        meta = None
        if meta_path.is_file():
            try:
                meta = read_json(meta_path)
            except (OSError, ValueError):
                meta = None
        if meta and meta.get("version") == _CACHE_VERSION and meta.get("n") == n and int(meta.get("chunk_size", 0)) > 0:
            chunk_size = int(meta["chunk_size"])
        else:
            write_json(
                meta_path,
                {
                    "version": _CACHE_VERSION,
                    "model": model.info.name,
                    "fingerprint": fp,
                    "n": n,
                    "chunk_size": chunk_size,
                    "preparation": prep,
                    "source": source,
                },
            )
    n_chunks = max(1, -(-n // chunk_size)) if n else 0
    found: list[dict[str, np.ndarray]] = []  # per chunk: tap -> features
    infos: list[dict[str, Any] | None] = []  # per chunk: the preparation record (datasets)
    queued: list[tuple[int, list[str]]] = []  # per task sent to the executor: (chunk, taps to compute)
    computed = 0
    dims = {t.name: t.channels for t in model.feature_info}
    bar = progress(total=n_chunks, desc=desc or f"features ({model.info.name})", unit="chunk") if n_chunks > 1 else None

    def tasks() -> Iterator[_FeatureTask]:
        """Each chunk's cached features, and a task for what is missing (inputs prepared here)."""
        for c in range(n_chunks):
            lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
            have: dict[str, np.ndarray] = {}
            if root is not None:
                for t in names:
                    a = _load_npy(_tap_file(root, t, c), hi - lo)
                    if a is not None and (t not in dims or a.shape[1] == dims[t]):
                        have[t] = a
            info = None
            if root is not None and is_dataset:
                try:
                    info = load_npz(root / f"inputs.{c:05d}.npz")
                except (OSError, ValueError):
                    info = None
            missing = [t for t in names if t not in have]
            pixels = None
            if missing or (is_dataset and info is None):
                if ds is not None:
                    prepared = prepare_inputs(ds, model, np.arange(lo, hi), detector=detector, fallback=fallback,
                                              workers=workers)
                    pixels = prepared.pixels
                    info = {"ok": prepared.ok, "methods": np.array(prepared.methods, dtype=str)}
                    for msg in prepared.errors.values():
                        log.warning("%s", msg)
                    if root is not None:
                        save_npz(root / f"inputs.{c:05d}.npz", **info)
                else:
                    pixels = arr[lo:hi]  # type: ignore[index]
            found.append(have)
            infos.append(info)
            if missing:
                queued.append((c, missing))
                yield _FeatureTask(pixels, missing)
            elif bar is not None:
                bar.update(1)

    was_training = model.training
    model.eval()
    try:
        for i, new in (executor or LocalExecutor()).imap(_FeatureWorker.factory(model, batch_size, device), tasks()):
            c = queued[i][0]
            for t, a in new.items():
                if root is not None:
                    _save_npy(_tap_file(root, t, c), a)
                found[c][t] = a
            computed += 1
            if bar is not None:
                bar.update(1)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    parts = {t: [f[t] for f in found] for t in names}
    if is_dataset:
        ok_parts = [np.asarray(info["ok"], dtype=bool) for info in infos]  # type: ignore[index]
        methods = [str(m) for info in infos for m in info["methods"]]  # type: ignore[index]
    else:
        ok_parts = [np.ones(len(f[names[0]]), dtype=bool) for f in found]
        methods = []
    taps_out = {t: (np.concatenate(parts[t]) if parts[t] else np.zeros((0, dims.get(t, 0)), np.float32)) for t in names}
    ok = np.concatenate(ok_parts) if ok_parts else np.zeros(0, dtype=bool)
    return FeatureSet(
        taps_out, model.info.name, fp, ikey, ok, methods if is_dataset else None, computed, n_chunks, root, source
    )
