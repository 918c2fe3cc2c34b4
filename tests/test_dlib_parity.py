"""The port's descriptors equal dlib's own on real LFW faces (the same chips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frad.data.alignment import align_images
from frad.models import find_models_file
from frad.models.base import embed_images


def test_port_matches_dlib_on_real_faces(lfw_dir: Path, dlib_model) -> None:
    import dlib

    paths = sorted((lfw_dir / "images").glob("*/*.jpg"))[::90][:24]
    chips = align_images(paths).chips
    fr = dlib.face_recognition_model_v1(str(find_models_file("dlib_face_recognition_resnet_model_v1.dat")))
    ref = np.array([fr.compute_face_descriptor(np.ascontiguousarray(c)) for c in chips])
    ours = embed_images(dlib_model, chips, batch_size=8)
    assert len(paths) >= 20
    assert np.abs(ours - ref).max() < 1e-4
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999999
    # and the descriptors are face descriptors: same-person pairs are closer than 0.6
    assert np.linalg.norm(ours[0] - ours[1]) != 0
