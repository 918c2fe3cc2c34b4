"""Score image files with a run's FR system and detector (``frad detect``), and write a run's
adversarials as image files (``frad export-adversarials``).

``detect_images(run_dir, paths, detector=None) -> DetectReport``: each image is read,
aligned as the run's face model expects (dlib's 5-point chips for dlib's network; an image
that already has the model's input size is taken as an aligned chip, which is what
:func:`export_adversarials` writes), identified against the run's templates, and scored by
the run's detector (:func:`frad.detection.load_run_detector`; default: the best by validation
macro-AUC).  The verdict is ``score >= threshold_``, the operating threshold chosen on
validation naturals.  A file that is not an image, or in which no face is found, is named
and skipped; it does not stop the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, FradError
from ..kinds import KINDS, AttackKind
from ..utils.io import load_npz

__all__ = ["detect_images", "DetectReport", "export_adversarials", "image_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files given, and the image files (by suffix, sorted) inside folders given; missing paths raise."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


@dataclass
class DetectReport:
    """Per-image results (``rows``) and what scored them."""

    rows: list[dict[str, Any]]
    detector: str
    threshold: float
    threshold_rule: str | None
    face_model: str | None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "face_model": self.face_model, "images": self.rows, "skipped": self.skipped}

    def text(self) -> str:
        lines = [f"detector {self.detector} (face model {self.face_model}); adversarial if probability >= "
                 f"{self.threshold:.4g} ({self.threshold_rule})"]
        for r in self.rows:
            if not r["face"]:
                lines.append(f"{r['file']}: skipped ({r['reason']})")
                continue
            lines.append(f"{r['file']}: face {r['alignment']}; identity {r['identity']} ({r['metric']} "
                         f"{r['similarity']:.4f}); adversarial probability {r['score']:.4f} -> "
                         f"{'ADVERSARIAL' if r['adversarial'] else 'natural'}")
        return "\n".join(lines)


def _prepare(paths: list[Path], face_model: Any, detector: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows (file, face found, how) and the model inputs (M x H x W x 3 uint8) of the faces found."""
    from ..data.alignment import AlignmentSettings, FaceAligner, alignment_for
    from ..data.images import load_rgb

    h, w = face_model.info.input_size
    geom = alignment_for(face_model.info.alignment, (h, w))
    aligner = None
    if geom is not None:
        aligner = FaceAligner(AlignmentSettings(size=int(geom["size"]), padding=float(geom["padding"]),  # type: ignore[arg-type]
                                                detector=detector, fallback="none"))  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    chips: list[np.ndarray] = []
    for p in paths:
        row: dict[str, Any] = {"file": str(p)}
        try:
            img = load_rgb(p)
        except FradError as exc:
            rows.append({**row, "face": False, "reason": str(exc)})
            continue
        if img.shape[:2] == (h, w):
            chip, how = img, "aligned chip (the model's input size)"
        elif aligner is None:
            from ..data.features import _resize, input_preparation

            chip, how = _resize(img, input_preparation(face_model)), "resized"
        else:
            chip, method, _ = aligner.align(img)
            if chip is None:
                rows.append({**row, "face": False, "reason": "no face found"})
                continue
            how = f"aligned ({method})"
        rows.append({**row, "face": True, "alignment": how})
        chips.append(np.asarray(chip, np.uint8))
    return rows, (np.stack(chips) if chips else np.zeros((0, h, w, 3), np.uint8))


def detect_images(
    run_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    detector: str | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 32,
) -> DetectReport:
    """Align, identify and score every image of ``paths``; see the module doc."""
    from ..data.split import read_split
    from ..detection.deployment import load_run_detector
    from ..models.base import to_pixels
    from ..recognition.similarity import pairwise_similarity
    from .run import open_run_config

    run_dir = Path(run_dir)
    cfg = open_run_config(run_dir)
    files = image_files(paths)
    if not files:
        raise DataError("no image files given (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")")
    det = load_run_detector(run_dir, detector)
    model = det.face_model_
    if device is not None:
        model.to(device)
    rows, chips = _prepare(files, model, cfg.data.detector)
    tpl = run_dir / "recognition" / "templates.npz"
    if not tpl.is_file():
        raise DataError(f"{tpl}: the run has no FR templates (its recognition stage did not finish)")
    t = load_npz(tpl)
    names = read_split(run_dir).classes
    metric = cfg.recognition.metric or model.info.metric
    if len(chips):
        pixels = to_pixels(chips)
        scores = det.score_samples(pixels, batch_size=batch_size)
        with torch.no_grad():
            emb = torch.cat([model(pixels[s : s + batch_size].to(model.device if hasattr(model, "device") else "cpu"))
                             for s in range(0, len(pixels), batch_size)]).float().cpu().numpy()
        sim = np.asarray(pairwise_similarity(emb, t["templates"], metric))
        best = sim.argmax(axis=1)
    k = 0
    skipped = []
    for r in rows:
        if not r["face"]:
            skipped.append({"file": r["file"], "reason": r["reason"]})
            continue
        cls = int(t["classes"][best[k]])
        value = float(sim[k, best[k]])
        r.update(identity=names[cls] if 0 <= cls < len(names) else str(cls),
                 metric="cosine similarity" if metric == "cosine" else "distance",
                 similarity=value if metric == "cosine" else -value,
                 score=float(scores[k]), adversarial=bool(scores[k] >= det.threshold_))
        k += 1
    return DetectReport(rows, getattr(det, "name_", detector or ""), float(det.threshold_), det.threshold_rule_,
                        det.face_model_name, skipped)


def export_adversarials(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    attack: str | None = None,
    limit: int = 20,
    only_successful_uint8: bool = True,
) -> list[Path]:
    """Write a run's adversarials as 8-bit PNG files (rounded pixels, as any saved image carries them).

    ``attack``: one attack name of the run (default: every classifier attack); ``limit``
    files per attack; with ``only_successful_uint8`` only those that still fool the FR
    system after rounding.  Files are named ``<attack>--<source id>.png``.
    """
    from PIL import Image

    from ..attacks import load_results

    run_dir, out = Path(run_dir), Path(out_dir)
    written: list[Path] = []
    found = False
    for kind in KINDS:
        folder = run_dir / "attacks" / kind
        if not folder.is_dir():
            continue
        res = load_results(folder)
        for name in res.attack_names:
            if attack is not None and name != attack:
                continue
            if attack is None and kind is not AttackKind.CLASSIFIER:
                continue
            found = True
            idx = res.rows(name)
            ok = res.table["success_quantised"][idx] == 1 if only_successful_uint8 else np.ones(len(idx), bool)
            adv = np.asarray(res.adversarials(name, mmap=False))
            srcs = res.table["source_id"][idx]
            for j in np.flatnonzero(ok)[: int(limit)]:
                img = np.clip(np.round(adv[j]), 0, 255).astype(np.uint8).transpose(1, 2, 0)
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(srcs[j]))
                path = out / f"{name}--{safe}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
                written.append(path)
    if not found:
        names = []
        for kind in KINDS:
            if (run_dir / "attacks" / kind).is_dir():
                names += load_results(run_dir / "attacks" / kind).attack_names
        raise DataError(f"{run_dir}: no attack {attack!r}; attacks: {', '.join(names) or 'none (attacks not run)'}")
    return written
