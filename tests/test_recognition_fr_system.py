"""The FR system end to end on a few real LFW faces: split, features, head, templates, threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frad.data.features import extract_features
from frad.data.split import make_split
from frad.recognition.head_training import HeadTrainer
from frad.recognition.identification import TemplateIdentifier
from frad.recognition.verification import Verifier


@pytest.fixture(scope="module")
def small_lfw(lfw_dir: Path):
    """6 identities x 10 images of LFW (deep-funneled), the first ones alphabetically."""
    from frad.data.lfw import lfw_people

    people = lfw_people(lfw_dir, min_images=10)
    rows = [i for c in range(6) for i in np.flatnonzero(people.labels == c)[:10]]
    return people.subset(rows).with_min_images(10)


def test_fr_system_on_real_faces(small_lfw, dlib_model, tmp_path: Path) -> None:
    split = make_split(small_lfw, n_natural=2, n_source=2, seed=0)
    assert split.counts() == {"natural": 12, "source": 12, "train": 24, "val": 6, "test": 6}
    feats = extract_features(dlib_model, small_lfw, taps=["embedding"], cache=tmp_path)
    assert feats.ok.all()
    E = feats.embedding

    def xy(*roles: str) -> tuple[np.ndarray, np.ndarray]:
        return E[split.indices(*roles)], split.labels(*roles)

    (Xtr, ytr), (Xva, yva), (Xte, yte), (Xn, yn) = xy("train"), xy("val"), xy("test"), xy("natural")
    # templates from the head-training images only; natural images are the probes
    ident = TemplateIdentifier(metric="cosine").fit(Xtr, ytr)
    assert ident.counts_.tolist() == [4] * 6
    assert ident.score(Xn, yn) >= 11 / 12
    # verification threshold from train + val pairs only
    v = Verifier(random_state=0).fit(np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva]))
    assert v.n_genuine_ == 6 * (5 * 4 // 2) and v.auc_ >= 0.97
    # the natural images verify against their own template and not against the others
    accept = v.similarity_matrix(Xn, ident.templates_) >= v.threshold_
    assert accept[np.arange(12), yn].mean() >= 10 / 12
    off = accept.copy()
    off[np.arange(12), yn] = False
    assert off.mean() <= 0.1
    # the head on the frozen network
    head = HeadTrainer(random_state=0, max_epochs=400).fit(Xtr, ytr, Xva, yva, n_classes=6)
    assert head.score(Xte, yte) >= 5 / 6
