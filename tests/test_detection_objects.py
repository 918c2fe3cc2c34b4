"""Detectors as saved objects: features path == pixel path, save/load, refusals, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frad.detection import (
    DeepKNNDetector,
    FusionDetector,
    LIDDetector,
    MahalanobisDetector,
    TrajectoryFaceDetector,
    load_detector_folder,
    threshold_at_fpr,
)
from frad.detection.base import pixel_features
from frad.errors import NotFittedError, WeightsError

from tiny_models import TinyFace

TAPS = ["block1", "block2", "embedding"]


def _data(seed: int = 0):
    """Pixels of 4 'identities' (natural) and perturbed copies (adversarial) for TinyFace."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(4, 3, 12, 12, generator=g) * 255
    nat = (base.repeat_interleave(20, 0) + torch.randn(80, 3, 12, 12, generator=g) * 8).clamp(0, 255)
    labels = np.repeat(np.arange(4), 20)
    adv = (nat[:40] + torch.randn(40, 3, 12, 12, generator=g) * 40).clamp(0, 255)
    return nat, labels, adv


@pytest.fixture(scope="module")
def setup():
    model = TinyFace(seed=1)
    nat, labels, adv = _data()
    fn = pixel_features(model, nat, TAPS)
    fa = pixel_features(model, adv, TAPS)
    ref = {t: fn[t][::2] for t in TAPS}  # reference: every other natural
    ref_lab = labels[::2]
    train = {t: np.concatenate([fn[t][1::2], fa[t]]) for t in TAPS}
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    lab = np.r_[labels[1::2], np.zeros(40, int)]
    src = np.r_[np.arange(1, 80, 2), np.arange(0, 40)].astype(str)
    return model, nat, adv, ref, ref_lab, train, y, lab, src


def _make(kind: str):
    if kind == "trajectory":
        return TrajectoryFaceDetector("mlp", "centroid", "euclidean", max_epochs=3, validation_size=0.2, random_state=0)
    return {"mahalanobis": MahalanobisDetector(taps=TAPS), "mahalanobis-u": MahalanobisDetector(taps=TAPS, supervised=False),
            "lid": LIDDetector(taps=TAPS, k=5, batch_size=20), "knn": DeepKNNDetector(taps=TAPS, k=5),
            "fusion": FusionDetector(taps=TAPS, k=5, batch_size=20, epochs=20)}[kind]


KINDS = ["trajectory", "mahalanobis", "mahalanobis-u", "lid", "knn", "fusion"]


@pytest.mark.parametrize("kind", KINDS)
def test_saved_detector_scores_identically_and_refuses_foreign_model(setup, kind, tmp_path):
    model, nat, adv, ref, ref_lab, train, y, lab, src = setup
    det = _make(kind)
    with pytest.raises(NotFittedError):
        det.score_features(train)
    if kind == "trajectory":
        det.fit_reference({t: ref[t] for t in ("block1", "block2")}, ref_lab)
    else:
        det.fit_reference(ref, ref_lab)
    det.fit_features(train, y, labels=lab, source_ids=src, groups=np.where(y == 1, "a", "natural"))
    det.bind(model)
    assert det.face_model_name == "tiny_face"
    s_pix = det.score_samples(adv[:7])
    s_feat = det.score_features(pixel_features(model, adv[:7], det.taps_))
    np.testing.assert_allclose(s_pix, s_feat, rtol=1e-6, atol=1e-9)
    det.set_threshold(det.score_features({t: v[y == 0] for t, v in train.items()}), fpr=0.1)
    assert isinstance(det.threshold_, float)
    pred = det.predict(adv[:7])
    assert pred.dtype == bool and pred.shape == (7,)

    folder = det.save(tmp_path / "det")
    back = load_detector_folder(folder, face_model=model)
    np.testing.assert_array_equal(back.score_samples(adv[:7]), s_pix)
    assert back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.predict(adv[:7]), pred)
    assert type(back).load(folder).face_model_fingerprint == model.fingerprint()

    # another face model (other weights) is refused with a clear error
    with pytest.raises(WeightsError, match="trained on face model"):
        load_detector_folder(folder, face_model=TinyFace(seed=2))
    # a tampered file is refused
    victim = next(p for p in sorted(folder.iterdir()) if p.name != "detector.json")
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(WeightsError, match="checksum"):
        load_detector_folder(folder, face_model=model)


def test_loaded_detector_without_model_says_so(setup, tmp_path):
    model, nat, adv, ref, ref_lab, train, y, lab, src = setup
    det = MahalanobisDetector(taps=TAPS).fit_reference(ref, ref_lab).fit_features(train, y).bind(model)
    back = load_detector_folder(det.save(tmp_path / "m"))
    with pytest.raises(NotFittedError, match="no face model attached"):
        back.score_samples(adv[:2])
    np.testing.assert_array_equal(back.score_features(train), det.score_features(train))


def test_manifest_is_json_and_no_pickle(setup, tmp_path):
    model, nat, adv, ref, ref_lab, train, y, lab, src = setup
    det = LIDDetector(taps=TAPS, k=5, batch_size=20).fit_features(train, y).bind(model)
    folder = det.save(tmp_path / "lid")
    meta = json.loads((folder / "detector.json").read_text())
    assert meta["kind"] == "lid" and meta["face_model"]["name"] == "tiny_face"
    assert set(meta["files"]) == {"arrays.npz"}
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_threshold_at_fpr_bounds_false_positives():
    rng = np.random.default_rng(0)
    s = rng.normal(size=1000)
    t = threshold_at_fpr(s, 0.05)
    assert np.mean(s >= t) == 0.05  # exactly 50 of 1000 flagged: not looser than needed
    srt = np.sort(s)
    assert srt[-51] < t < srt[-50] and t == (srt[-51] + srt[-50]) / 2  # half-way, never on a natural score
    assert np.mean(np.r_[0.0, 0.0, 0.0] >= threshold_at_fpr([0.0, 0.0, 0.0], 0.5)) == 0.0  # ties never exceed
    assert np.mean(np.r_[1.0, 1.0, 0.5] >= threshold_at_fpr([1.0, 1.0, 0.5], 0.5)) == 0.0
