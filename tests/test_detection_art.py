"""The maintained peer (ART's BinaryActivationDetector through frad's adapter) against ART
called directly, its place in the benchmark (or the stated reason it is missing), and the
operating point's exact intervals against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from frad.detection.art_peer import art_available
from frad.detection.base import pixel_features
from frad.evaluation.operating_point import clopper_pearson, operating_point, threshold_fpr_interval

from tiny_models import TinyFace

TAPS = ["block1", "block2", "embedding"]
needs_art = pytest.mark.skipif(not art_available(), reason="adversarial-robustness-toolbox is not installed "
                                                           "(optional extra: pip install 'frad[art]')")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one torch thread (many threads collapse when other jobs share the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pixels(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(4, 3, 12, 12, generator=g) * 255
    nat = (base.repeat_interleave(15, 0) + torch.randn(60, 3, 12, 12, generator=g) * 8).clamp(0, 255)
    adv = (nat + torch.randn(60, 3, 12, 12, generator=g) * 25).clamp(0, 255)
    return nat, adv


class _Pooled(nn.Module):
    """Written here, independently of frad's adapter: the face model with its pooled block2 as an ART layer."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.act = nn.Identity()

    def forward(self, x):
        emb, f = self.model.forward_intermediates(x, ["block2"], pool=True)
        self.act(f["block2"])
        return emb


@needs_art
def test_adapter_gives_arts_own_scores():
    from art.defences.detector.evasion import BinaryActivationDetector
    from art.estimators.classification import PyTorchClassifier

    from frad.detection import ARTActivationDetector

    model = TinyFace(seed=1)
    nat, adv = _pixels()
    tr = np.r_[np.arange(0, 40), np.arange(60, 100)]
    te = np.r_[np.arange(40, 60), np.arange(100, 120)]
    px = torch.cat([nat, adv])
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    epochs, batch, lr, seed, hidden = 15, 16, 1e-3, 3, 32

    # ART directly, on pixels, through the face model
    face = PyTorchClassifier(model=_Pooled(model), loss=nn.MSELoss(), input_shape=(3, 12, 12), nb_classes=6,
                             clip_values=(0.0, 255.0), device_type="cpu")
    acts = face.get_activations(px[tr].numpy(), "act", batch_size=128)
    sd = acts.std(axis=0)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    det = PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=(16,), nb_classes=2,
                            optimizer=torch.optim.Adam(net.parameters(), lr=lr),
                            preprocessing=(acts.mean(axis=0), np.where(sd > 1e-6, sd, 1.0)), device_type="cpu")
    art_det = BinaryActivationDetector(face, det, "act")
    torch.manual_seed(seed)
    art_det.fit(px[tr].numpy(), np.eye(2)[y[tr]], batch_size=batch, nb_epochs=epochs)
    report, verdict = art_det.detect(px[te].numpy())
    logits = report["predictions"]
    want = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)

    # frad's adapter, trained from pooled features (the feature cache's path)
    feats = pixel_features(model, px, TAPS)
    ours = ARTActivationDetector(layer="block2", hidden=hidden, epochs=epochs, batch_size=batch, lr=lr,
                                 random_state=seed).fit_features({t: v[tr] for t, v in feats.items()}, y[tr])
    got = ours.score_features({t: v[te] for t, v in feats.items()})
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got > 0.5, verdict)  # ART's own verdict is the argmax of the same logits
    assert 0.0 < got.min() < got.max() < 1.0  # a trained network, not a constant
    # the raw path runs ART over the face model itself
    ours.bind(model)
    np.testing.assert_allclose(ours.score_samples(px[te]), want, atol=1e-5)


@needs_art
def test_saved_peer_scores_identically_and_refuses_another_model(tmp_path):
    from frad.detection import ARTActivationDetector, load_detector_folder
    from frad.errors import WeightsError

    model = TinyFace(seed=1)
    nat, adv = _pixels(1)
    px = torch.cat([nat, adv])
    y = np.r_[np.zeros(60, int), np.ones(60, int)]
    feats = pixel_features(model, px, TAPS)
    det = ARTActivationDetector(layer=None, epochs=5).fit_features(feats, y).bind(model)
    assert det.layer_ == "block2"  # layer=None: the last block before the embedding
    det.save(tmp_path / "d")
    back = load_detector_folder(tmp_path / "d", face_model=model)
    assert isinstance(back, ARTActivationDetector)
    np.testing.assert_array_equal(back.score_features(feats), det.score_features(feats))
    np.testing.assert_allclose(back.score_samples(px), det.score_features(feats), atol=1e-6)
    with pytest.raises(WeightsError, match="trained on face model"):
        load_detector_folder(tmp_path / "d", face_model=TinyFace(seed=2))


@needs_art
def test_auto_layer_finds_the_tap_that_carries_the_signal():
    from frad.detection import ARTActivationDetector

    rng = np.random.default_rng(0)
    n = 120
    y = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    feats = {t: rng.normal(size=(n, 8)).astype(np.float32) for t in ("b1", "b2", "b3", "embedding")}
    feats["b2"][y == 1] += 1.5  # only b2 separates adversarials from naturals
    src = np.arange(n).astype(str)
    det = ARTActivationDetector(epochs=20, random_state=1).fit_features(feats, y, source_ids=src)
    assert set(det.layer_selection_) == set(feats)
    assert det.layer_ == "b2" == max(det.layer_selection_, key=det.layer_selection_.get)
    assert det.layer_selection_["b2"] > 0.85 and max(v for t, v in det.layer_selection_.items() if t != "b2") < 0.75
    assert det.taps_ == ["b2"]


def _bench_inputs():
    rng = np.random.default_rng(0)
    K, taps = 4, ["b1", "b2", "embedding"]
    centres = {t: rng.normal(size=(K, d)) * 3 for t, d in zip(taps, (6, 8, 5))}

    def feats(lab, noise, shift=0.0):
        return {t: (centres[t][lab] + rng.normal(size=(lab.size, centres[t].shape[1])) * noise + shift
                    ).astype(np.float32) for t in taps}

    ref_lab = np.repeat(np.arange(K), 20)
    nat_lab = np.repeat(np.arange(K), 15)
    nat_ids = np.array([f"n{i}" for i in range(nat_lab.size)])
    src_lab = np.repeat(np.arange(K), 12)
    src_ids = np.array([f"s{i}" for i in range(src_lab.size)])
    adv = feats(src_lab, 1.5, 1.0)
    meta = {"attack": np.array(["BIM-t"] * src_lab.size), "family": np.array(["BIM"] * src_lab.size),
            "setting": np.array(["targeted"] * src_lab.size), "source_id": src_ids,
            "success": np.ones(src_lab.size, bool), "success_quantised": np.ones(src_lab.size, int)}
    return dict(natural_features=feats(nat_lab, 0.5), natural_meta={"source_id": nat_ids, "label": nat_lab},
                adversarial_features=adv, adversarial_meta=meta, reference_features=feats(ref_lab, 0.5),
                reference_labels=ref_lab, test_source_ids=np.r_[nat_ids[::3], src_ids[::3]], blocks=["b1", "b2"],
                taps=taps, n_bootstrap=20), nat_ids


@needs_art
def test_benchmark_runs_the_peer_and_its_operating_point_counts(tmp_path):
    from frad.detection import load_detector_folder
    from frad.evaluation.benchmark import run_benchmark

    kw, nat_ids = _bench_inputs()
    res = run_benchmark(**kw, detectors=["mahalanobis", "art-binary-activation"], out_dir=tmp_path)
    assert res["skipped"] == [] and res["peers"]["adversarial-robustness-toolbox"]
    rec = res["results"]["targeted"]["art-binary-activation"]
    assert rec["float32"]["macro_auc"] > 0.7  # adversarials shifted by 1 in every feature: easy
    titles = [r[0] for r in res["tables"]["benchmark_targeted"]["rows"]]
    assert any(t.startswith("ART BinaryActivationDetector") for t in titles)
    # the operating point from the saved detector's own scores, counted by hand
    det = load_detector_folder(tmp_path / "detectors" / "targeted" / "art-binary-activation")
    te = np.isin(nat_ids, kw["test_source_ids"])
    s = det.score_features({t: v[te] for t, v in kw["natural_features"].items()})
    op = rec["float32"]["operating_point"]
    fp = int((s >= det.threshold_).sum())
    assert (op["false_positives"], op["n_natural"]) == (fp, te.sum())
    assert op["fpr_ci"] == pytest.approx(list(clopper_pearson(fp, int(te.sum()))))
    table = res["tables"]["benchmark_targeted_operating_point"]
    row = [r for r in table["rows"] if r[0].startswith("ART")][0]
    assert row[3] == f"{fp} / {te.sum()}"
    assert row[2]["value"] == pytest.approx(fp / te.sum())


def test_benchmark_says_why_the_peer_is_missing(monkeypatch):
    import frad.evaluation.benchmark as B

    monkeypatch.setattr(B, "unavailable_peers",
                        lambda: {"art-binary-activation": "the Adversarial Robustness Toolbox is not installed"})
    kw, _ = _bench_inputs()
    res = B.run_benchmark(**kw, detectors=["mahalanobis", "art-binary-activation"])
    assert list(res["results"]["targeted"]) == ["mahalanobis"]
    assert res["skipped"][0]["name"] == "art-binary-activation"
    notes = " ".join(res["tables"]["benchmark_targeted"]["notes"])
    assert "Not run: ART BinaryActivationDetector" in notes and "not installed" in notes


# ---------------------------------------------------------------------------- operating point
@pytest.mark.parametrize("k,n", [(0, 36), (1, 36), (6, 36), (35, 36), (36, 36), (3, 100)])
def test_clopper_pearson_against_hand_and_scipy(k, n):
    from scipy.stats import binomtest

    lo, hi = clopper_pearson(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-10)
    # closed forms where the binomial tail has one term
    if k == 0:
        assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / n))
    if k == 1:
        assert lo == pytest.approx(1 - 0.975 ** (1 / n))  # P(X >= 1) = 1 - (1 - p)^n = 0.025
    if k == n - 1:
        assert hi == pytest.approx(0.975 ** (1 / n))  # P(X <= n - 1) = 1 - p^n = 0.025
    if k == n:
        assert hi == 1 and lo == pytest.approx(0.025 ** (1 / n))


def test_clopper_pearson_by_hand_for_the_demo_counts():
    # 1 of 36: lower 1 - 0.975^(1/36) = 0.000703; upper from the binomial sum P(X <= 1; p) = 0.025, solved by bisection
    lo, hi = clopper_pearson(1, 36)
    assert lo == pytest.approx(0.000703, abs=1e-6)
    a, b = 0.0, 1.0
    for _ in range(60):
        p = (a + b) / 2
        tail = (1 - p) ** 36 + 36 * p * (1 - p) ** 35
        a, b = (p, b) if tail > 0.025 else (a, p)
    assert hi == pytest.approx(a, abs=1e-9)
    assert hi == pytest.approx(0.1453, abs=1e-4)


def test_threshold_fpr_interval_by_hand_and_by_simulation():
    from frad.detection.base import threshold_at_fpr

    # n = 19, 5%: k = 0, the threshold sits just above the highest natural; the share above it is Beta(1, 19),
    # whose quantiles are 1 - (1 - q)^(1/19)
    lo, hi = threshold_fpr_interval(19, 0.05)
    assert (lo, hi) == pytest.approx((1 - 0.975 ** (1 / 19), 1 - 0.025 ** (1 / 19)))
    # simulation: uniform natural scores, frad's own threshold rule; the true FPR is 1 - threshold
    rng = np.random.default_rng(0)
    n = 60
    lo, hi = threshold_fpr_interval(n, 0.05)
    true_fpr = np.array([1 - threshold_at_fpr(rng.random(n), 0.05) for _ in range(4000)])
    inside = np.mean((true_fpr >= lo) & (true_fpr <= hi))
    assert 0.93 < inside < 0.97  # the threshold lies between two order statistics: close to, not exactly, 95%


def test_operating_point_counts():
    op = operating_point([0.1, 0.2, 0.9, 0.3], [0.95, 0.5, 0.8], 0.85)
    assert (op["false_positives"], op["n_natural"], op["true_positives"], op["n_adversarial"]) == (1, 4, 1, 3)
    assert op["fpr"] == 0.25 and op["tpr"] == pytest.approx(1 / 3)
    assert op["fpr_ci"] == pytest.approx(list(clopper_pearson(1, 4)))
