"""Detection evaluation: per-family metrics against scikit-learn and hand values, the whole
experiment on synthetic features (a known difference, and none), orderings, resume, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from frad.detection.detectors import TrajectoryDetector
from frad.errors import ConfigError, DataError
from frad.evaluation.detection import (
    PAPER_CONFIGURATIONS,
    DetectorConfig,
    check_orderings,
    detection_test_sources,
    evaluate_scores,
    run_detection_experiment,
)
from frad.utils.metrics import bootstrap_ci, rank_auc
from frad.evaluation.plots import (
    plot_detection_figures,
    plot_roc_configurations,
    plot_roc_families,
    plot_roc_generalisation,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------
# a synthetic feature world: C classes with per-layer means; an adversarial looks like its
# source class in early layers and like its target class in late layers (weight a_l grows
# with depth, scaled by the attack's strength).  strength 0 = adversarials drawn like naturals.
# ---------------------------------------------------------------------------------------
CH = (6, 6, 10, 10, 12)
VARIANTS = [
    ("BIM-eps0.03", "BIM", 1.0),
    ("BIM-eps0.1", "BIM", 1.0),
    ("MI-FGSM-eps0.03", "MI-FGSM", 1.0),
    ("CW", "CW", 0.5),
]


def _sample(rng, mu, cls, tgt=None, strength=0.0, noise=0.35):
    out = {}
    for layer, m_all in enumerate(mu):
        m = m_all[cls]
        if tgt is not None:
            a = strength * layer / (len(mu) - 1)
            m = (1 - a) * m + a * m_all[tgt]
        out[f"block{layer + 1}"] = np.maximum(m + noise * rng.normal(size=m.shape), 0).astype(np.float32)
    return out


def synthetic_world(seed=0, n_classes=5, n_nat=100, n_src=50, separable=True, settings=("targeted", "untargeted")):
    rng = np.random.default_rng(seed)
    mu = [np.abs(rng.normal(size=(n_classes, c))) * 2 for c in CH]
    ref_lab = np.repeat(np.arange(n_classes), 20)
    nat_lab = rng.integers(0, n_classes, n_nat)
    src_lab = rng.integers(0, n_classes, n_src)
    w = dict(
        reference_features=_sample(rng, mu, ref_lab),
        reference_labels=ref_lab,
        natural_features=_sample(rng, mu, nat_lab),
        natural_meta={"source_id": np.array([f"img{i}" for i in range(n_nat)])},
    )
    parts, meta = [], {k: [] for k in ("attack", "family", "setting", "source_id", "success")}
    for setting in settings:
        for name, fam, strength in VARIANTS:
            tgt = (src_lab + rng.integers(1, n_classes, n_src)) % n_classes
            parts.append(_sample(rng, mu, src_lab, tgt, strength if separable else 0.0))
            meta["attack"] += [name] * n_src
            meta["family"] += [fam] * n_src
            meta["setting"] += [setting] * n_src
            meta["source_id"] += [f"img{n_nat + i}" for i in range(n_src)]
            meta["success"] += list(rng.random(n_src) < 0.85)
    w["adversarial_features"] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    w["adversarial_meta"] = {k: np.array(v) for k, v in meta.items()}
    dparts, dmeta = [], {k: [] for k in ("attack", "setting", "source_id")}
    for setting in settings:
        for delta in (5, 10):
            tgt = (src_lab + rng.integers(1, n_classes, n_src)) % n_classes
            dparts.append(_sample(rng, mu, src_lab, tgt, 0.9 if separable else 0.0))
            dmeta["attack"] += [f"DF-delta{delta}"] * n_src
            dmeta["setting"] += [setting] * n_src
            dmeta["source_id"] += [f"img{n_nat + i}" for i in range(n_src)]
    w["deep_features"] = {k: np.concatenate([p[k] for p in dparts]) for k in dparts[0]}
    w["deep_meta"] = {k: np.array(v) for k, v in dmeta.items()}
    return w


FAST = {"max_epochs": 12, "batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def world():
    return synthetic_world()


@pytest.fixture(scope="module")
def full_run(world):
    """All eight configurations x both settings, with deep-features adversarials."""
    return run_detection_experiment(**world, detector_params=FAST, n_bootstrap=60, random_state=0)


# ---------------------------------------------------------------------------------------
# evaluate_scores
# ---------------------------------------------------------------------------------------
def test_evaluate_scores_hand_computed():
    nat = [0.1, 0.4, 0.35, 0.8]
    adv = [0.9, 0.4, 0.3]
    fam = ["BIM", "BIM", "CW"]
    ev = evaluate_scores(nat, adv, fam, n_bootstrap=0)
    # BIM: 0.9 beats all 4; 0.4 beats 0.1 and 0.35 and ties 0.4 -> (4 + 2.5) / 8
    assert ev["families"]["BIM"]["auc"] == pytest.approx(6.5 / 8)
    assert ev["families"]["CW"]["auc"] == pytest.approx(1 / 4)  # 0.3 beats only 0.1
    assert ev["macro_auc"] == pytest.approx((6.5 / 8 + 0.25) / 2)
    assert ev["pooled"]["auc"] == pytest.approx((4 + 2.5 + 1) / 12)
    assert list(ev["families"]) == ["BIM", "CW"]  # the paper's family order
    assert ev["families"]["BIM"]["auc_ci"] is None and ev["macro_auc_ci"] is None


def test_evaluate_scores_against_sklearn_and_bootstrap_reference():
    rng = np.random.default_rng(0)
    nat = rng.normal(size=300)
    fam = np.repeat(["CW", "BIM", "MI-FGSM", "other"], [80, 120, 100, 40])
    adv = rng.normal(size=fam.size) + np.select([fam == "CW", fam == "BIM"], [0.3, 1.5], 1.0)
    ev = evaluate_scores(nat, adv, fam, n_bootstrap=1000, random_state=1)
    assert list(ev["families"]) == ["BIM", "MI-FGSM", "CW", "other"]
    for f, m in ev["families"].items():
        a = roc_auc_score(np.r_[np.zeros(300), np.ones((fam == f).sum())], np.r_[nat, adv[fam == f]])
        assert m["auc"] == pytest.approx(a)
        assert m["n_natural"] == 300 and m["n_adversarial"] == (fam == f).sum()
        lo, hi = m["auc_ci"]
        assert lo < a < hi
        if f == "CW":  # same scheme as frad.utils.metrics.bootstrap_ci (slow), another random stream
            ref_lo, ref_hi = bootstrap_ci(np.r_[np.zeros(300), np.ones((fam == f).sum())], np.r_[nat, adv[fam == f]],
                                          n_resamples=500, random_state=2)
            assert abs(lo - ref_lo) < 0.03 and abs(hi - ref_hi) < 0.03
        # accuracy at the EER threshold, by hand
        labels = np.r_[np.zeros(300), np.ones((fam == f).sum())]
        scores = np.r_[nat, adv[fam == f]]
        assert m["accuracy_at_eer"] == pytest.approx(np.mean((scores >= m["eer_threshold"]) == labels))
        assert abs((1 - m["accuracy_at_eer"]) - m["eer"]) < 0.05
    assert ev["macro_auc"] == pytest.approx(np.mean([m["auc"] for m in ev["families"].values()]))
    lo, hi = ev["macro_auc_ci"]
    assert lo < ev["macro_auc"] < hi
    assert hi - lo < max(m["auc_ci"][1] - m["auc_ci"][0] for m in ev["families"].values())
    # thinned curves keep the area
    for f, c in ev["curves"].items():
        area = np.trapezoid(c["tpr"], c["fpr"])
        want = ev["pooled"]["auc"] if f == "pooled" else ev["families"][f]["auc"]
        assert area == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n0, n1 = rng.integers(1, 300, 2)
    neg = np.round(rng.normal(size=n0), 1)  # rounding makes many ties
    pos = np.round(rng.normal(size=n1) + rng.uniform(-1, 2), 1)
    want = roc_auc_score(np.r_[np.zeros(n0), np.ones(n1)], np.r_[neg, pos])
    assert rank_auc(neg, pos) == pytest.approx(want, abs=1e-12)
    assert rank_auc([1.0], [1.0]) == 0.5 and rank_auc([0.0, 1.0], [2.0]) == 1.0
    with pytest.raises(ValueError):
        rank_auc([], [1.0])


def test_evaluate_scores_errors():
    with pytest.raises(DataError, match="rows"):
        evaluate_scores([0.1, 0.2], [0.3, 0.4], ["BIM"])
    with pytest.raises(DataError, match="need"):
        evaluate_scores([], [0.3], ["BIM"])


# ---------------------------------------------------------------------------------------
# the whole experiment
# ---------------------------------------------------------------------------------------
def test_tables_have_the_papers_shape(full_run):
    r = full_run.results
    assert r["settings"] == ["targeted", "untargeted"]
    for s, paper in (("targeted", "Table 1"), ("untargeted", "Table 2")):
        t = r["tables"][s]
        assert t["title"].startswith(paper)
        assert t["columns"] == ["Configuration", "BIM", "MI-FGSM", "CW", "Macro-AUC"]
        assert [row["Configuration"] for row in t["rows"]] == [c.label for c in PAPER_CONFIGURATIONS]
        assert t["rows"][0]["Configuration"] == "LSTM + M + L2" and t["rows"][-1]["Configuration"] == "MLP + C + cos"
        for row in t["rows"]:
            assert row["Macro-AUC"] == pytest.approx(np.mean([row[f] for f in ("BIM", "MI-FGSM", "CW")]))
            lo, hi = row["ci"]["Macro-AUC"]
            assert lo <= row["Macro-AUC"] <= hi
    for s in r["settings"]:
        rows = r["eer_tables"][s]["rows"]
        assert len(rows) == 8
        for row in rows:
            pooled = r["detectors"][s][row["key"]]["pooled"]
            assert 0 <= row["EER"] <= 1 and 0 <= row["Accuracy at EER"] <= 1
            assert row["EER threshold (probability)"] == pytest.approx(1 / (1 + np.exp(-pooled["eer_threshold"])))
    json.dumps(r, allow_nan=False)  # JSON-able as it stands
    assert len(full_run.detectors) == 16 and set(full_run.representatives) == {"medoid", "centroid"}


def test_a_known_difference_is_detected(full_run):
    r = full_run.results
    best = r["orderings"]["best_targeted_macro_auc"]
    assert best["value"] >= 0.9 and best["meets_target"]
    macro = [ev["macro_auc"] for by in r["detectors"].values() for ev in by.values()]
    assert np.median(macro) > 0.75
    gen = r["generalisation"]["targeted"]
    assert gen["title"].startswith("Table 5") and gen["columns"] == ["Configuration", "DF-delta5", "DF-delta10"]
    assert max(row["DF-delta5"] for row in gen["rows"]) > 0.85


def test_only_successful_adversarials_and_test_sources_count(world, full_run):
    r = full_run.results
    meta = world["adversarial_meta"]
    test_ids = detection_test_sources(world["natural_meta"]["source_id"], meta["source_id"], test_size=0.3,
                                      random_state=0)
    for s in ("targeted", "untargeted"):
        m = meta["setting"] == s
        ok_test = m & meta["success"] & np.isin(meta["source_id"], test_ids)
        d = r["data"]["adversarial"][s]
        assert d["successful"] == (m & meta["success"]).sum()
        assert d["test"] == ok_test.sum() and d["train"] + d["test"] == d["successful"]
        for f, n in d["test_by_family"].items():
            assert n == (ok_test & (meta["family"] == f)).sum()
            ev = r["detectors"][s]["lstm-medoid-euclidean"]["families"][f]
            assert ev["n_adversarial"] == n
            assert ev["n_natural"] == np.isin(world["natural_meta"]["source_id"], test_ids).sum()
        # the detector trained on the other side of the split (plus its validation share)
        tr = r["detectors"][s]["mlp-medoid-euclidean"]["training"]
        assert tr["train_size"] + tr["val_size"] == d["train"] + r["data"]["natural"]["train"]
    df = world["deep_meta"]
    in_test = np.isin(df["source_id"], test_ids)
    assert r["data"]["deep_features"]["used_test_sources"] == in_test.sum()
    assert r["data"]["deep_features"]["dropped_seen_sources"] == (~in_test).sum()
    n_df = r["generalisation"]["untargeted"]["detail"]["mlp-centroid-cosine"]["families"]["DF-delta5"]["n_adversarial"]
    assert n_df == (in_test & (df["setting"] == "untargeted") & (df["attack"] == "DF-delta5")).sum()


def test_no_difference_gives_chance_auc():
    w = synthetic_world(seed=3, n_nat=300, n_src=80, separable=False, settings=("targeted",))
    run = run_detection_experiment(
        **w, configurations=["mlp-medoid-euclidean", "lstm-centroid-cosine"], detector_params=FAST, n_bootstrap=200
    )
    for ev in run.results["detectors"]["targeted"].values():
        assert 0.35 < ev["macro_auc"] < 0.65
        lo, hi = ev["macro_auc_ci"]
        assert lo < 0.5 < hi or abs(ev["macro_auc"] - 0.5) < 0.1
    assert not run.results["orderings"]["best_targeted_macro_auc"]["meets_target"]


def test_explicit_test_sources_match_the_default_split(world):
    kw = dict(configurations=["mlp-centroid-euclidean"], settings=["targeted"], detector_params={"max_epochs": 2},
              n_bootstrap=0, random_state=5)
    a = run_detection_experiment(**world, **kw).results
    ids = detection_test_sources(world["natural_meta"]["source_id"], world["adversarial_meta"]["source_id"],
                                 test_size=0.3, random_state=5)
    b = run_detection_experiment(**world, test_source_ids=ids, **kw).results
    assert a["tables"] == b["tables"] and a["data"] == b["data"]


def test_checkpoints_resume_without_training_again(world, tmp_path, monkeypatch):
    kw = dict(configurations=["mlp-medoid-cosine", "lstm-medoid-cosine"], settings=["untargeted"],
              detector_params={"max_epochs": 3}, n_bootstrap=20, checkpoint_dir=tmp_path / "ckpt")
    first = run_detection_experiment(**world, **kw).results
    assert (tmp_path / "ckpt" / "untargeted" / "lstm-medoid-cosine.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a checkpointed detector was trained again")

    monkeypatch.setattr(TrajectoryDetector, "fit", no_training)
    second = run_detection_experiment(**world, **kw).results
    assert second["tables"] == first["tables"]
    # changed parameters are not served from the checkpoint
    with pytest.raises(AssertionError, match="trained again"):
        run_detection_experiment(**world, **{**kw, "detector_params": {"max_epochs": 4}})


def test_run_saves_everything(full_run, tmp_path):
    path = full_run.save(tmp_path / "run")
    assert json.loads(path.read_text())["tables"] == json.loads(json.dumps(full_run.results["tables"]))
    assert (tmp_path / "run" / "representatives" / "medoid.npz").is_file()
    assert (tmp_path / "run" / "detectors" / "targeted" / "lstm-medoid-euclidean.pt").is_file()


def test_input_errors_fail_before_work(world):
    with pytest.raises(ConfigError, match="unknown parameter"):
        run_detection_experiment(**world, detector_params={"epochs": 3})
    with pytest.raises(ConfigError, match="lstm-medoid-euclidian|metric"):
        run_detection_experiment(**world, configurations=["lstm-medoid-euclidian"])
    with pytest.raises(ConfigError, match="arch_params"):
        run_detection_experiment(**world, arch_params={"gru": {}})
    bad = dict(world)
    bad["adversarial_meta"] = {k: v for k, v in world["adversarial_meta"].items() if k != "family"}
    with pytest.raises(DataError, match="family"):
        run_detection_experiment(**bad)
    with pytest.raises(DataError, match="setting 'targeted'"):
        meta = dict(world["adversarial_meta"])
        meta["success"] = meta["success"] & (meta["setting"] != "targeted")
        run_detection_experiment(**{**world, "adversarial_meta": meta}, detector_params={"max_epochs": 1})
    with pytest.raises(DataError, match="deep_meta"):
        run_detection_experiment(**{**world, "deep_features": None}, detector_params={"max_epochs": 1})


# ---------------------------------------------------------------------------------------
# orderings, on hand-made results
# ---------------------------------------------------------------------------------------
def _fake_results(values: dict[str, dict[str, dict[str, float]]]) -> dict:
    dets = {}
    for s, by_cfg in values.items():
        dets[s] = {}
        for key, fams in by_cfg.items():
            dets[s][key] = {
                "families": {f: {"auc": a} for f, a in fams.items()},
                "macro_auc": float(np.mean(list(fams.values()))),
            }
    return {"detectors": dets}


def test_orderings_hold_when_built_in():
    vals = {
        "targeted": {
            "lstm-medoid-euclidean": {"BIM": 0.98, "MI-FGSM": 0.99, "CW": 0.87},
            "mlp-medoid-euclidean": {"BIM": 0.96, "MI-FGSM": 0.98, "CW": 0.79},
        },
        "untargeted": {
            "lstm-medoid-euclidean": {"BIM": 0.88, "MI-FGSM": 0.89, "CW": 0.61},
            "mlp-medoid-euclidean": {"BIM": 0.88, "MI-FGSM": 0.88, "CW": 0.56},
        },
    }
    o = check_orderings(_fake_results(vals))
    assert o["cw_hardest"]["holds"] and o["cw_hardest"]["count"] == 4
    assert o["untargeted_harder"]["holds"] and o["untargeted_harder"]["count"] == 2
    assert o["lstm_ahead_of_mlp"]["holds"] and o["lstm_ahead_of_mlp"]["total"] == 2
    assert o["best_targeted_macro_auc"]["configuration"] == "lstm-medoid-euclidean"
    assert o["best_targeted_macro_auc"]["meets_target"]


def test_orderings_report_failures_and_counts():
    vals = {
        "targeted": {
            "lstm-centroid-cosine": {"BIM": 0.70, "MI-FGSM": 0.72, "CW": 0.75},  # CW not hardest here
            "mlp-centroid-cosine": {"BIM": 0.80, "MI-FGSM": 0.85, "CW": 0.60},  # MLP ahead of LSTM
        },
        "untargeted": {
            "lstm-centroid-cosine": {"BIM": 0.80, "MI-FGSM": 0.80, "CW": 0.70},  # above its targeted
            "mlp-centroid-cosine": {"BIM": 0.60, "MI-FGSM": 0.60, "CW": 0.50},
        },
    }
    o = check_orderings(_fake_results(vals))
    assert not o["cw_hardest"]["holds"] and o["cw_hardest"]["count"] == 3 and o["cw_hardest"]["total"] == 4
    assert not o["untargeted_harder"]["holds"] and o["untargeted_harder"]["count"] == 1
    assert not o["lstm_ahead_of_mlp"]["holds"] and o["lstm_ahead_of_mlp"]["count"] == 1
    assert not o["best_targeted_macro_auc"]["meets_target"]
    assert "1 of 2" in o["untargeted_harder"]["detail"]


def test_orderings_without_the_data_to_judge():
    o = check_orderings(_fake_results({"targeted": {"mlp-medoid-euclidean": {"BIM": 0.9}}}))
    assert o["cw_hardest"]["holds"] is None and o["untargeted_harder"]["holds"] is None
    assert o["lstm_ahead_of_mlp"]["holds"] is None


def test_configuration_names():
    c = DetectorConfig.parse("lstm-medoid-cosine")
    assert c.label == "LSTM + M + cos" and c.key == "lstm-medoid-cosine"
    assert DetectorConfig("mlp", "centroid", "euclidean").label == "MLP + C + L2"
    assert len(PAPER_CONFIGURATIONS) == 8 and len({c.key for c in PAPER_CONFIGURATIONS}) == 8
    with pytest.raises(ConfigError):
        DetectorConfig.parse("svm-medoid-cosine")


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def test_figures_from_results_and_from_json(full_run, tmp_path):
    results = json.loads(json.dumps(full_run.results))  # as the report reads them back
    fig2 = plot_roc_configurations(results)
    assert len(fig2.axes) == 2
    assert all(len(ax.get_lines()) == 8 + 1 for ax in fig2.axes)  # 8 configurations + chance line
    fig3 = plot_roc_families(results)
    assert [len(ax.get_lines()) for ax in fig3.axes] == [3 + 1, 3 + 1]
    fig12 = plot_roc_generalisation(results)
    assert len(fig12.axes) == 2  # one panel per deep-features attack
    # default: per setting the better representative for each (arch, metric) -> 4 x 2 settings
    assert all(len(ax.get_lines()) == 8 + 1 for ax in fig12.axes)
    paths = plot_detection_figures(results, tmp_path / "figs")
    assert set(paths) == {"figure2", "figure3", "figure12"}
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="generalisation"):
        plot_roc_generalisation({**results, "curves": {"classifier": results["curves"]["classifier"],
                                                       "generalisation": {}}})
