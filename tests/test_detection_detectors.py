"""MLP and LSTM trajectory detectors: contract, learning, determinism, persistence, LSTM readout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from frad.detection import LSTMDetector, MLPDetector, NotFittedError, create_detector, load_detector
from frad.detection.detectors import _LSTMNet
from frad.errors import ConfigError, DataError, WeightsError

L, K = 5, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def trajectories(n_nat: int, n_adv: int, seed: int, separable: bool = True):
    """Distances to K classes over L layers.  Natural: small distance to its own class at
    every layer.  Adversarial: small to its source class early and to a target class late
    (the known difference); with ``separable=False`` adversarials are drawn like naturals."""
    rng = np.random.default_rng(seed)
    n = n_nat + n_adv
    X = 3.0 + 0.5 * rng.normal(size=(n, L, K))
    cls = rng.integers(0, K, n)
    tgt = (cls + rng.integers(1, K, n)) % K
    rows = np.arange(n)
    for layer in range(L):
        X[rows, layer, cls] -= 2.0
    if separable:
        late = np.arange(L) >= L // 2
        for layer in np.flatnonzero(late):
            adv = rows[n_nat:]
            X[adv, layer, cls[adv]] += 2.0
            X[adv, layer, tgt[adv]] -= 2.0
    y = np.r_[np.zeros(n_nat, int), np.ones(n_adv, int)]
    groups = np.r_[np.full(n_nat, "natural"), rng.choice(["BIM", "CW"], n_adv)]
    sources = np.r_[np.arange(n_nat), n_nat + np.arange(n_adv) // 2]  # two adversarials per source
    return X.astype(np.float32), y, groups, sources


FAST = dict(max_epochs=30, batch_size=32, lr=3e-3)
DETECTORS = [
    pytest.param(lambda **kw: MLPDetector(**{**FAST, **kw}), id="mlp"),
    pytest.param(lambda **kw: LSTMDetector(hidden_size=16, **{**FAST, **kw}), id="lstm"),
    pytest.param(lambda **kw: LSTMDetector(hidden_size=16, bidirectional=True, **{**FAST, **kw}), id="bilstm"),
]


@pytest.fixture(scope="module")
def data():
    return trajectories(300, 300, seed=0), trajectories(200, 200, seed=1)


@pytest.mark.parametrize("make", DETECTORS)
def test_contract_and_learning(make, data):
    (X, y, g, s), (Xt, yt, _, _) = data
    det = make(random_state=0)
    with pytest.raises(NotFittedError):
        det.score_samples(Xt)
    assert det.fit(X, y, groups=g, source_ids=s) is det
    scores = det.score_samples(Xt)
    assert scores.shape == (Xt.shape[0],) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert roc_auc_score(yt, scores) > 0.95  # the known difference is learnt (higher = adversarial)
    np.testing.assert_array_equal(det.predict(Xt), (scores >= 0.5).astype(int))
    np.testing.assert_array_equal(det.predict(Xt, threshold=0.9), (scores >= 0.9).astype(int))
    np.testing.assert_array_equal(det.decision_function(Xt) > 0, scores > 0.5)
    # the kept checkpoint is the best validation epoch
    vals = [h["val_macro_auc"] for h in det.history_]
    assert det.best_val_auc_ == pytest.approx(max(vals))
    assert det.history_[det.best_epoch_ - 1]["val_macro_auc"] == det.best_val_auc_
    assert det.train_size_ + det.val_size_ == X.shape[0]
    with pytest.raises(DataError, match="fitted on"):
        det.score_samples(Xt[:, :, :-1])


def test_no_signal_gives_chance_auc():
    X, y, g, s = trajectories(200, 200, seed=2, separable=False)
    Xt, yt, _, _ = trajectories(300, 300, seed=3, separable=False)
    det = MLPDetector(**FAST, random_state=0).fit(X, y, groups=g, source_ids=s)
    assert 0.4 < roc_auc_score(yt, det.score_samples(Xt)) < 0.6


@pytest.mark.parametrize("make", DETECTORS)
def test_deterministic_under_random_state(make, data):
    (X, y, g, s), (Xt, _, _, _) = data
    kw = dict(max_epochs=3)
    torch.manual_seed(123)
    a = make(random_state=7, **kw).fit(X, y, groups=g, source_ids=s).score_samples(Xt)
    torch.manual_seed(456)  # the global RNG must not matter
    b = make(random_state=7, **kw).fit(X, y, groups=g, source_ids=s).score_samples(Xt)
    c = make(random_state=8, **kw).fit(X, y, groups=g, source_ids=s).score_samples(Xt)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_leaves_the_global_rng_alone(data):
    (X, y, g, s), _ = data
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    MLPDetector(max_epochs=1, random_state=1).fit(X, y, groups=g, source_ids=s)
    np.testing.assert_array_equal(torch.rand(3), before)


@pytest.mark.parametrize("make", DETECTORS)
def test_save_load_gives_identical_scores(make, data, tmp_path):
    (X, y, g, s), (Xt, _, _, _) = data
    det = make(random_state=0, max_epochs=2).fit(X, y, groups=g, source_ids=s)
    pt, js = det.save(tmp_path / "det", metadata={"note": "x"})
    assert pt.suffix == ".pt" and js.suffix == ".json"
    meta = json.loads(js.read_text())
    assert meta["class"] == type(det).__name__ and meta["params"]["hidden_size"] == det.hidden_size
    back = load_detector(tmp_path / "det")
    assert type(back) is type(det) and back.get_params() == det.get_params()
    np.testing.assert_array_equal(back.score_samples(Xt), det.score_samples(Xt))
    assert back.metadata_ == {"note": "x"} and back.best_epoch_ == det.best_epoch_
    same = type(det).load(tmp_path / "det")
    np.testing.assert_array_equal(same.score_samples(Xt), det.score_samples(Xt))


def test_load_refuses_changed_or_foreign_files(data, tmp_path):
    (X, y, g, s), _ = data
    MLPDetector(max_epochs=1, random_state=0).fit(X, y, groups=g, source_ids=s).save(tmp_path / "mlp")
    with pytest.raises(WeightsError, match="MLPDetector"):
        LSTMDetector.load(tmp_path / "mlp")
    raw = bytearray((tmp_path / "mlp.pt").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "mlp.pt").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="checksum"):
        load_detector(tmp_path / "mlp")
    with pytest.raises(WeightsError, match="not found"):
        load_detector(tmp_path / "missing")


def test_bidirectional_readout_reads_the_whole_sequence_both_ways():
    torch.manual_seed(0)
    net = _LSTMNet(L, K, hidden_size=7, bidirectional=True, num_layers=1).eval()
    x = torch.randn(4, L, K)
    got = net.readout(x)
    # reference: two one-directional LSTMs with the same weights; the backward one reads layers L..1
    fwd = torch.nn.LSTM(K, 7, batch_first=True)
    bwd = torch.nn.LSTM(K, 7, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(fwd, name).copy_(getattr(net.lstm, name))
            getattr(bwd, name).copy_(getattr(net.lstm, name + "_reverse"))
        _, (hf, _) = fwd(x)
        _, (hb, _) = bwd(torch.flip(x, dims=[1]))
        out, _ = net.lstm(x)
    want = torch.cat([hf[0], hb[0]], dim=1)
    torch.testing.assert_close(got, want)
    # the authors' pitfall: the output at the last step holds a backward state that saw one layer
    assert not torch.allclose(out[:, -1, 7:], hb[0])
    # and the readout does depend on the first layer through both directions
    x2 = x.clone()
    x2[:, 0] += 1.0
    d = (net.readout(x2) - got).abs()
    assert d[:, :7].max() > 1e-4 and d[:, 7:].max() > 1e-4


def test_unidirectional_readout_is_the_final_state():
    torch.manual_seed(0)
    net = _LSTMNet(L, K, hidden_size=5, bidirectional=False, num_layers=2).eval()
    x = torch.randn(3, L, K)
    out, _ = net.lstm(x)
    torch.testing.assert_close(net.readout(x), out[:, -1, :])


def test_lr_is_divided_on_plateau_and_early_stopping(data):
    X, y, g, s = trajectories(150, 150, seed=4, separable=False)
    det = MLPDetector(max_epochs=40, lr_patience=1, patience=6, random_state=0).fit(X, y, groups=g, source_ids=s)
    lrs = sorted({h["lr"] for h in det.history_}, reverse=True)
    assert lrs[0] == pytest.approx(1e-3) and len(lrs) > 1
    for a, b in zip(lrs, lrs[1:]):
        assert b == pytest.approx(a * 0.1)
    assert det.n_epochs_ <= det.best_epoch_ + 6 and det.n_epochs_ < 40


def test_without_validation_the_last_epoch_is_kept(data):
    (X, y, g, s), _ = data
    det = MLPDetector(max_epochs=3, validation_size=0, random_state=0).fit(X, y, groups=g, source_ids=s)
    assert det.val_size_ == 0 and det.train_size_ == X.shape[0]
    assert det.best_epoch_ == det.n_epochs_ == 3 and len(det.epoch_seconds_) == 3
    assert det.training_summary()["best_val_macro_auc"] is None


def test_cosine_schedule_and_last_checkpoint(data):
    (X, y, g, s), _ = data
    det = MLPDetector(max_epochs=8, lr=1e-3, lr_schedule="cosine", checkpoint="last", random_state=0)
    det.fit(X, y, groups=g, source_ids=s)
    # the rate each epoch ran with: lr * (1 + cos(pi * e / T)) / 2, e = 0 .. T-1
    want = [1e-3 * (1 + np.cos(np.pi * e / 8)) / 2 for e in range(8)]
    assert [h["lr"] for h in det.history_] == pytest.approx(want)
    assert det.best_epoch_ == det.n_epochs_ == 8  # the final weights, whatever validation says
    # the kept weights are the last epoch's: where the best validation epoch is another, they differ
    shorter = MLPDetector(max_epochs=8, lr=1e-3, lr_schedule="cosine", checkpoint="best", random_state=0)
    shorter.fit(X, y, groups=g, source_ids=s)
    if shorter.best_epoch_ != 8:
        assert not np.allclose(det.decision_function(X), shorter.decision_function(X))


def test_stable_training_is_smooth_in_its_inputs():
    """Small changes of the inputs move a stably trained detector's scores by a comparably
    small amount (no epoch is chosen from the validation curve, no rate cut on a plateau).
    The LFW-scale evidence, where the defaults move AUCs by up to 0.10, is
    benchmarks/bench_detector_stability.py."""
    X, y, g, s = trajectories(200, 200, seed=5, separable=False)
    X[y == 1, -1] -= 0.3  # a weak signal, as for the hardest attacks
    rng = np.random.default_rng(0)
    X2 = (X * (1 + 1e-4 * rng.standard_normal(X.shape))).astype(np.float32)
    kw = dict(max_epochs=20, lr=3e-3, batch_size=32, lr_schedule="cosine", checkpoint="last", random_state=0)
    a = LSTMDetector(hidden_size=16, **kw).fit(X, y, groups=g, source_ids=s).decision_function(X)
    b = LSTMDetector(hidden_size=16, **kw).fit(X2, y, groups=g, source_ids=s).decision_function(X)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()  # measured: 7e-5


@pytest.mark.parametrize("standardize", ["layer", "feature", None])
def test_standardisation_options(standardize, data):
    (X, y, g, s), (Xt, yt, _, _) = data
    det = MLPDetector(**FAST, standardize=standardize, random_state=0).fit(X, y, groups=g, source_ids=s)
    shift = det.net_.standardize.shift.numpy()
    if standardize is None:
        assert not shift.any()
    elif standardize == "layer":
        assert np.allclose(shift, shift[:, :1])  # one value per layer
    else:
        assert not np.allclose(shift, shift[:, :1])
    assert roc_auc_score(yt, det.score_samples(Xt)) > 0.9


def test_sklearn_conventions():
    det = LSTMDetector(bidirectional=True, lr=5e-4)
    assert det.get_params()["bidirectional"] is True
    c = clone(det).set_params(hidden_size=8)
    assert c.hidden_size == 8 and det.hidden_size == 100 and not hasattr(c, "net_")
    assert isinstance(create_detector("MLP", dropout=0.3), MLPDetector)
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_detector("lstm", dropout=0.3)
    with pytest.raises(ConfigError, match="arch"):
        create_detector("gru")


@pytest.mark.parametrize(
    "params, field",
    [({"lr": 0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"validation_size": 1.0}, "validation_size"),
     ({"standardize": "global"}, "standardize"), ({"patience": 0}, "patience"), ({"dropout": 1.0}, "dropout"),
     ({"lr_schedule": "step"}, "lr_schedule"), ({"checkpoint": "best-loss"}, "checkpoint")],
)
def test_bad_parameters_name_the_field(params, field, data):
    (X, y, g, s), _ = data
    with pytest.raises(ConfigError, match=f"MLPDetector: {field}"):
        MLPDetector(**params).fit(X, y, groups=g, source_ids=s)


def test_bad_inputs(data):
    (X, y, g, s), _ = data
    det = MLPDetector(max_epochs=1)
    with pytest.raises(DataError, match="layers, classes"):
        det.fit(X[:, 0], y)
    with pytest.raises(DataError, match="both"):
        det.fit(X, np.ones_like(y))
    with pytest.raises(DataError, match="0 \\(natural\\) and 1"):
        det.fit(X, y * 2)
    with pytest.raises(DataError, match="groups"):
        det.fit(X, y, groups=g[:-1])
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        det.fit(bad, y)


def test_training_draws_batches_through_the_balanced_sampler(monkeypatch, data):
    import frad.detection.detectors as mod

    seen: list[np.ndarray] = []
    real = mod.balanced_sampler

    def spy(groups, *args, **kwargs):
        seen.append(np.asarray(groups).copy())
        return real(groups, *args, **kwargs)

    monkeypatch.setattr(mod, "balanced_sampler", spy)
    (X, y, g, s), _ = data
    det = MLPDetector(max_epochs=1, random_state=0).fit(X, y, groups=g, source_ids=s)
    assert len(seen) == 1 and seen[0].size == det.train_size_
    assert set(seen[0]) == {"natural", "BIM", "CW"}
