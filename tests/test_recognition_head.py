"""The classifier head: trained on embeddings, deterministic, folded standardisation, a targetable model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frad.errors import ConfigError, DataError
from frad.models.classifier import FaceClassifier
from frad.recognition.head_training import HeadTrainer, NotFittedError, load_head


def _blobs(
    n_per: int = 40, k: int = 5, d: int = 16, seed: int = 0, scale: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes at dlib-like scale (~0.1 per dimension)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, scale, (k, d))
    y = np.repeat(np.arange(k), n_per)
    X = centres[y] + rng.normal(0, scale * 0.35, (y.size, d))
    return X.astype(np.float32), y


def test_learns_separable_classes_and_keeps_the_best_epoch() -> None:
    X, y = _blobs()
    rng = np.random.default_rng(5)
    idx = rng.permutation(len(y))
    tr, va = idx[:150], idx[150:]
    h = HeadTrainer(max_epochs=300, random_state=0).fit(X[tr], y[tr], X[va], y[va])
    assert h.n_classes_ == 5 and h.head_.training is False
    assert h.score(X[va], y[va]) >= 0.95
    best = max(r["val_accuracy"] for r in h.history_)
    assert h.val_accuracy_ == best == h.history_[h.best_epoch_ - 1]["val_accuracy"]
    assert h.predict(X[va]).shape == (50,) and h.decision_function(X[va]).shape == (50, 5)
    assert h.topk_accuracy(X[va], y[va], k=5) == 1.0


def test_folded_standardisation_equals_the_trained_function() -> None:
    """The kept head reads raw embeddings: logits = W_std((x - mu) / sd) + b, folded."""
    X, y = _blobs(k=3, n_per=20)
    h = HeadTrainer(max_epochs=5, early_stopping=None, random_state=1).fit(X, y)
    lin = h.head_[1]
    mu, sd = X.mean(0), X.std(0)
    # recover the standardised-space weights and check the fold by hand
    w_std = lin.weight.detach().numpy() * sd
    b_std = lin.bias.detach().numpy() + (lin.weight.detach().numpy() @ mu)
    manual = ((X - mu) / sd) @ w_std.T + b_std
    np.testing.assert_allclose(h.decision_function(X), manual, rtol=1e-4, atol=1e-4)


def test_deterministic_and_leaves_the_global_rng_alone() -> None:
    X, y = _blobs(k=3, n_per=20)
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    threads = torch.get_num_threads()
    a = HeadTrainer(max_epochs=20, random_state=7).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = HeadTrainer(max_epochs=20, random_state=7).fit(X, y)
    c = HeadTrainer(max_epochs=20, random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert not np.array_equal(a.decision_function(X), c.decision_function(X))
    assert torch.get_num_threads() == threads  # the trainer's one-thread setting is undone


def test_lr_is_halved_on_plateau() -> None:
    X, y = _blobs(k=3, n_per=20)
    rng = np.random.default_rng(0)
    y_noise = rng.integers(0, 3, y.size)  # labels that cannot be learned: the val loss stalls
    h = HeadTrainer(lr=0.5, lr_patience=2, max_halvings=3, early_stopping=None, max_epochs=500, random_state=0)
    h.fit(X, y_noise, X[::2], rng.integers(0, 3, X[::2].shape[0]))
    lrs = [r["lr"] for r in h.history_]
    assert lrs[0] == 0.5 and set(lrs) <= {0.5, 0.25, 0.125}
    assert len(h.history_) < 500  # stopped after the third halving


def test_classifier_on_the_network(dlib_model, tmp_path: Path) -> None:
    """to_classifier: logits of pixels = head(embedding of pixels); save/load round trip."""
    X, y = _blobs(k=3, n_per=10, d=128)
    h = HeadTrainer(max_epochs=3, random_state=0).fit(X, y)
    clf = h.to_classifier(dlib_model, class_names=["a", "b", "c"])
    assert isinstance(clf, FaceClassifier) and clf.num_classes == 3 and not clf.training
    px = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        emb = dlib_model(px).numpy()
        logits = clf(px).numpy()
    np.testing.assert_allclose(logits, h.decision_function(emb), rtol=1e-4, atol=1e-4)
    h.save(tmp_path / "head", class_names=["a", "b", "c"])
    back, meta = load_head(tmp_path / "head")
    np.testing.assert_allclose(back.decision_function(emb), h.decision_function(emb), rtol=1e-6)
    assert meta["class_names"] == ["a", "b", "c"] and back.best_epoch_ == h.best_epoch_


def test_errors_are_clear() -> None:
    X, y = _blobs(k=2, n_per=5)
    with pytest.raises(NotFittedError, match="not fitted"):
        HeadTrainer().predict(X)
    with pytest.raises(ConfigError, match="HeadTrainer.dropout"):
        HeadTrainer(dropout=1.0).fit(X, y)
    with pytest.raises(ConfigError, match="HeadTrainer.batch_size"):
        HeadTrainer(batch_size=0).fit(X, y)
    with pytest.raises(DataError, match="10 feature rows but 3 labels"):
        HeadTrainer().fit(X, y[:3])
    with pytest.raises(DataError, match="integer class indices"):
        HeadTrainer().fit(X, y.astype(float))
    h = HeadTrainer(max_epochs=1).fit(X, y)
    with pytest.raises(DataError, match=r"\(N, 16\)"):
        h.predict(X[:, :4])
