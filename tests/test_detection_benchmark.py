"""The detector benchmark on synthetic features: every detector on the same rows, tables,
saved folders, and AUCs that scikit-learn reproduces from the saved detectors' scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from frad.detection import load_detector_folder
from frad.evaluation.benchmark import benchmark_names, run_benchmark
from frad.errors import ConfigError

TAPS = ["b1", "b2", "embedding"]
BLOCKS = ["b1", "b2"]


def _feats(rng, centres, labels, noise, shift=0.0):
    return {t: (np.abs(centres[t][labels] + rng.normal(size=(labels.size, centres[t].shape[1])) * noise + shift)
                ).astype(np.float32) for t in TAPS}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    rng = np.random.default_rng(0)
    K = 4
    centres = {t: rng.normal(size=(K, d)) * 3 for t, d in zip(TAPS, (6, 8, 5))}
    ref_lab = np.repeat(np.arange(K), 25)
    ref = _feats(rng, centres, ref_lab, 0.5)
    nat_lab = np.repeat(np.arange(K), 15)
    nat = _feats(rng, centres, nat_lab, 0.5)
    nat_ids = np.array([f"n{i}" for i in range(nat_lab.size)])
    src_lab = np.repeat(np.arange(K), 10)
    src_ids = np.array([f"s{i}" for i in range(src_lab.size)])
    rows, meta = [], {k: [] for k in ("attack", "family", "setting", "source_id", "success", "success_quantised")}
    for setting, fam, noise in (("targeted", "BIM", 2.0), ("targeted", "CW", 1.2), ("untargeted", "BIM", 2.0),
                                ("untargeted", "CW", 1.2)):
        rows.append(_feats(rng, centres, src_lab, noise, 0.5))
        n = src_lab.size
        meta["attack"] += [f"{fam}-{setting[0]}"] * n
        meta["family"] += [fam] * n
        meta["setting"] += [setting] * n
        meta["source_id"] += list(src_ids)
        meta["success"] += [True] * n
        meta["success_quantised"] += list((rng.random(n) < 0.8).astype(int))
    adv = {t: np.concatenate([r[t] for r in rows]) for t in TAPS}
    u8 = {t: v + 0.01 for t, v in adv.items()}
    df = _feats(rng, centres, src_lab, 1.5, 0.3)
    df_meta = {"attack": np.array(["DF d5"] * src_lab.size), "setting": np.array(["targeted"] * src_lab.size),
               "source_id": src_ids, "success": np.ones(src_lab.size, bool),
               "success_quantised": np.ones(src_lab.size, int)}
    test_ids = np.r_[nat_ids[::3], src_ids[::3]]
    out = tmp_path_factory.mktemp("bench")
    names = ["mlp-centroid-euclidean", "mahalanobis", "mahalanobis-unsupervised", "lid", "deep-knn", "fusion"]
    res = run_benchmark(
        nat, {"source_id": nat_ids, "label": nat_lab}, adv, {k: np.asarray(v) for k, v in meta.items()}, ref, ref_lab,
        test_source_ids=test_ids, blocks=BLOCKS, taps=TAPS, adversarial_uint8=u8, deep_features=df, deep_meta=df_meta,
        deep_uint8=df, detectors=names, detector_params={"max_epochs": 5}, n_bootstrap=50, out_dir=out,
        face_model={"name": "fake", "fingerprint": "abc"}, threshold_naturals=_feats(rng, centres, nat_lab, 0.5),
    )
    return res, out, nat, nat_ids, adv, meta, test_ids, names


def test_every_detector_in_every_table(bench):
    res, out, *_ , names = bench
    for s in ("targeted", "untargeted"):
        assert list(res["results"][s]) == names
        for tid in (f"benchmark_{s}", f"benchmark_{s}_uint8"):
            t = res["tables"][tid]
            assert [r[0] for r in t["rows"]] == [res["detectors"][i]["title"] for i in range(len(names))]
            assert t["columns"][1:3] == ["BIM", "CW"]
    assert "benchmark_targeted_deep_features" in res["tables"]
    assert "benchmark_untargeted_deep_features" not in res["tables"]  # no untargeted DF rows given
    assert 0.5 < res["data"]["targeted"]["uint8_survival"]["BIM"] <= 1.0
    d = res["data"]["targeted"]
    assert d["threshold_naturals"] > d["validation_rows"]  # the extra naturals joined the validation naturals
    # an easy separation: the Mahalanobis detectors find it
    assert res["results"]["targeted"]["mahalanobis"]["float32"]["macro_auc"] > 0.9
    assert res["chosen"] in {f"{s}/{n}" for s in ("targeted", "untargeted") for n in names}


def test_saved_detectors_reproduce_the_table(bench):
    res, out, nat, nat_ids, adv, meta, test_ids, names = bench
    te_nat = np.isin(nat_ids, test_ids)
    m = (np.asarray(meta["setting"]) == "targeted") & np.isin(np.asarray(meta["source_id"]), test_ids)
    fam = np.asarray(meta["family"])[m]
    for name in names:
        det = load_detector_folder(out / "detectors" / "targeted" / name)
        assert det.face_model_name == "fake"
        sn = det.score_features({t: v[te_nat] for t, v in nat.items()})
        sa = det.score_features({t: v[m] for t, v in adv.items()})
        for f in ("BIM", "CW"):
            want = roc_auc_score(np.r_[np.zeros(sn.size), np.ones((fam == f).sum())], np.r_[sn, sa[fam == f]])
            assert res["results"]["targeted"][name]["float32"]["families"][f]["auc"] == pytest.approx(want)
        assert det.threshold_ == res["results"]["targeted"][name]["threshold"]


def test_unknown_benchmark_name_is_refused():
    with pytest.raises(ConfigError, match="unknown"):
        benchmark_names(["mahalanobis", "odin"])
