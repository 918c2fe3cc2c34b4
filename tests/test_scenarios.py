"""FR scenarios (Section 5.3): distances to the assigned template, maximum pixel perturbation,
impersonation / evasion, deep-features success, the paper's numbers, and the figures --
all against values worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from frad.errors import ConfigError, DataError
from frad.evaluation import paper
from frad.evaluation.figures import (
    example_amplification,
    plot_distance_attacks,
    plot_distance_groups,
    plot_examples,
    plot_mpp,
    plot_verification,
    write_scenario_figures,
)
from frad.evaluation.scenarios import (
    MPPHistogram,
    attack_family,
    attack_label,
    delta_label,
    df_success_table,
    distance_summary,
    distance_table,
    distances_to_assigned,
    max_pixel_perturbation,
    mpp_summary,
    mpp_table,
    nearest_template,
    select_partners,
    success_rates,
    verification_rates,
    verification_scenario,
    verification_summary,
    verification_table,
)


# ---------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------
def test_labels():
    assert attack_family("bim") == "BIM"
    assert attack_family("mifgsm") == "MI-FGSM"
    assert attack_family("cw_l2") == "CW"
    assert attack_family("something") == "something"
    assert attack_label("deep_features", 5.0) == "DF δ = 5"
    assert attack_label("deep_features", 7.5) == "DF δ = 7.5"
    assert attack_label("cw_l2", float("nan")) == "CW"
    assert delta_label(10.0) == "δ = 10"


# ---------------------------------------------------------------------------------------
# identification: distances
# ---------------------------------------------------------------------------------------
def test_distances_to_assigned_euclidean_and_cosine():
    # templates listed in an unsorted class order: class 20 first
    templates = np.array([[3.0, 4.0], [0.0, 0.0]])
    classes = np.array([20, 10])
    emb = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    d = distances_to_assigned(emb, [20, 10, 20], templates, classes)
    np.testing.assert_allclose(d, [5.0, 0.0, 4.0])

    t2 = np.array([[0.0, 2.0], [2.0, 2.0]])
    dc = distances_to_assigned([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]], ["a", "b", "a"], t2, ["a", "b"], "cosine")
    np.testing.assert_allclose(dc, [1.0, 0.0, 0.0], atol=1e-7)


def test_distances_to_assigned_rejects_unknown_class_and_shapes():
    with pytest.raises(DataError, match="without a template"):
        distances_to_assigned(np.zeros((2, 2)), [1, 3], np.zeros((2, 2)), [1, 2])
    with pytest.raises(DataError, match="assigned classes"):
        distances_to_assigned(np.zeros((2, 2)), [1], np.zeros((2, 2)), [1, 2])
    with pytest.raises(DataError, match="dimensions"):
        distances_to_assigned(np.zeros((2, 3)), [1, 2], np.zeros((2, 2)), [1, 2])
    with pytest.raises(ConfigError):
        distances_to_assigned(np.zeros((1, 2)), [1], np.zeros((1, 2)), [1], metric="manhattan")


def test_nearest_template():
    t = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    got = nearest_template([[1.0, 1.0], [9.0, 2.0], [2.0, 7.0]], t, [5, 6, 7])
    np.testing.assert_array_equal(got, [5, 6, 7])


def test_distance_summary_hand_values():
    s = distance_summary(
        [1.0, 2.0, 3.0, 4.0, 2.5],
        ["BIM", "BIM", "DF δ = 5", "DF δ = 5", "DF δ = 10"],
        ["targeted", "untargeted", "targeted", "targeted", "targeted"],
        ["classifier", "classifier", "deep_features", "deep_features", "deep_features"],
        natural=[0.5, 1.5],
        bins=4,
        value_range=(0.0, 4.0),
    )
    assert s["bin_edges"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert list(s["groups"]) == ["classifier-targeted", "classifier-untargeted", "deep_features-targeted"]
    g = s["groups"]["deep_features-targeted"]
    assert g["label"] == "DF - T"
    assert g["n"] == 3
    assert g["mean"] == pytest.approx(9.5 / 3)
    assert g["median"] == pytest.approx(3.0)
    assert g["q1"] == pytest.approx(2.75)
    assert g["counts"] == [0, 0, 1, 2]  # 2.5 in [2,3); 3 and 4 in [3,4] (last bin closed)
    assert s["groups"]["classifier-untargeted"]["counts"] == [0, 0, 1, 0]
    # attacks: families first, deltas in numeric order
    assert list(s["attacks"]["targeted"]) == ["BIM", "DF δ = 5", "DF δ = 10"]
    assert s["attacks"]["targeted"]["DF δ = 5"]["kind"] == "deep_features"
    assert s["attacks"]["untargeted"]["BIM"]["mean"] == 2.0
    assert s["natural"]["counts"] == [1, 1, 0, 0]
    assert s["natural"]["mean"] == 1.0

    # booleans for settings; values outside value_range land in the end bins
    s2 = distance_summary([5.0, -1.0], ["CW", "CW"], [True, True], ["classifier"] * 2, bins=2, value_range=(0, 2))
    assert s2["groups"]["classifier-targeted"]["counts"] == [1, 1]
    t = distance_table(s)
    assert t["columns"][:3] == ["Setting", "Attack", "n"]
    assert t["rows"][-1][:3] == ["natural", "own template", 2]


def test_distance_summary_checks_inputs():
    with pytest.raises(DataError, match="kinds"):
        distance_summary([1.0], ["x"], ["targeted"], ["pixel"])
    with pytest.raises(DataError, match="settings"):
        distance_summary([1.0], ["x"], ["sideways"], ["classifier"])
    with pytest.raises(DataError, match="NaN"):
        distance_summary([float("nan")], ["x"], ["targeted"], ["classifier"])


# ---------------------------------------------------------------------------------------
# maximum pixel perturbation
# ---------------------------------------------------------------------------------------
def _mpp_pair():
    src = np.full((1, 3, 2, 2), 100.0, np.float32)
    adv = src.copy()
    adv[0, :, 0, 0] += [2.0, -3.0, 1.0]  # -> 3
    adv[0, 2, 1, 0] += 5.0  # -> 5
    adv[0, 0, 1, 1] -= 7.0  # -> 7
    return adv, src


def test_max_pixel_perturbation_both_layouts():
    adv, src = _mpp_pair()
    expect = [[[3.0, 0.0], [5.0, 7.0]]]
    np.testing.assert_array_equal(max_pixel_perturbation(adv, src), expect)
    np.testing.assert_array_equal(
        max_pixel_perturbation(adv.transpose(0, 2, 3, 1), src.transpose(0, 2, 3, 1)), expect
    )
    with pytest.raises(DataError, match="differ in shape"):
        max_pixel_perturbation(adv, src[:, :, :1])
    with pytest.raises(DataError, match="3 channels"):
        max_pixel_perturbation(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 4)))


def test_mpp_histogram_hand_values_and_chunking():
    adv, src = _mpp_pair()
    h = MPPHistogram(7.0, setting="targeted", label="DF δ = 7").update(adv, src)
    s = h.summary()
    assert s["bin_edges"][0] == -0.5 and s["bin_edges"][-1] == 7.5
    assert s["counts"] == [1, 0, 0, 1, 0, 1, 0, 1]  # 0, 3, 5, 7
    assert s["pixels"] == 4 and s["images"] == 1
    assert s["share_within_pct"] == 50.0  # strictly below 5: 0 and 3
    assert s["share_within_inclusive_pct"] == 75.0
    assert s["mean"] == 3.75 and s["max"] == 7.0 and s["above_delta"] == 0

    # two chunks (one masked out) == the union of the kept ones
    adv2 = np.concatenate([adv, adv + 50]), np.concatenate([src, src])
    one = mpp_summary([(adv, src), (adv, src)], 7.0)
    two = mpp_summary([(adv2[0], adv2[1], [True, False]), (adv, src)], 7.0)
    assert one["counts"] == two["counts"] == [2, 0, 0, 2, 0, 2, 0, 2]
    assert two["images"] == 2

    # float round-off at the bound counts as at the bound, not below it
    near = src.copy()
    near[0, 0, 0, 0] += np.float32(4.9999995)
    assert mpp_summary([(near, src)], 5.0)["share_within_pct"] == 75.0
    with pytest.raises(ConfigError):
        MPPHistogram(0.0)


def test_mpp_table_with_paper():
    adv, src = _mpp_pair()
    s5 = mpp_summary([(np.minimum(adv, src + 5), src)], 5.0, setting="targeted")
    s7 = mpp_summary([(adv, src)], 7.0, setting="targeted")
    t = mpp_table({"b": s7, "a": s5})
    assert [r[0] for r in t["rows"]] == ["δ = 5", "δ = 7"]
    assert t["rows"][1][1] == 50.0 and t["rows"][1][2] is None
    assert t["paper"]["rows"][0][1] == 88.3
    with pytest.raises(DataError, match="setting"):
        mpp_table({"x": mpp_summary([(adv, src)], 7.0)})


# ---------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------
def test_select_partners_rules_and_determinism():
    pool_labels = [1, 1, 2, 2, 2, 3]
    pool_ids = ["a", "b", "c", "d", "e", "f"]
    got = select_partners([2, 1, 3, 4], ["x", "a", "f", "y"], pool_labels, pool_ids)
    assert got[0] in (2, 3, 4)
    assert got[1] == 1  # 'a' is the source itself: only 'b' remains
    assert got[2] == -1  # the only image of 3 is the source
    assert got[3] == -1  # no image of 4
    # the pick depends on (seed, source, identity), not on the order of the rows
    rev = select_partners([4, 3, 1, 2], ["y", "f", "a", "x"], pool_labels, pool_ids)
    np.testing.assert_array_equal(rev, got[::-1])
    # and the seed matters
    big_labels = np.repeat(np.arange(5), 20)
    ids = np.arange(100).astype(str)
    srcs = [f"s{i}" for i in range(50)]
    wanted = np.arange(50) % 5
    a = select_partners(wanted, srcs, big_labels, ids, random_state=0)
    b = select_partners(wanted, srcs, big_labels, ids, random_state=1)
    assert (big_labels[a] == wanted).all() and (big_labels[b] == wanted).all()
    assert (a != b).any()
    np.testing.assert_array_equal(a, select_partners(wanted, srcs, big_labels, ids, random_state=0))


def test_verification_rates_hand_values():
    o = [0.1, 0.5, 0.448, 0.9]
    a = [0.6, 0.2, 0.3, 0.447]
    imp = verification_rates(o, a, 0.448, "impersonation", bins=4)
    assert imp["original_pct"] == 75.0  # 0.5, 0.448 (at the threshold = accepted), 0.9
    assert imp["adversarial_pct"] == 25.0
    # bins 0.5 wide (4 over [-1, 1]) shifted so the threshold is an edge: no bin mixes the
    # accepted (>= 0.448) with the rejected pairs, so the bars read off the percentages
    assert imp["bin_edges"] == pytest.approx([-1.052, -0.552, -0.052, 0.448, 0.948, 1.448])
    assert 0.448 in imp["bin_edges"]
    assert imp["original_counts"] == [0, 0, 1, 3, 0]
    assert imp["adversarial_counts"] == [0, 0, 3, 1, 0]
    ev = verification_rates(o, a, 0.448, "evasion")
    assert ev["original_pct"] == 25.0 and ev["adversarial_pct"] == 75.0 and ev["n"] == 4
    empty = verification_rates([], [], 0.4, "evasion")
    assert empty["n"] == 0 and empty["original_pct"] is None
    with pytest.raises(ConfigError, match="scenario"):
        verification_rates(o, a, 0.4, "dodging")


def _verification_world():
    # rows: 0 works (label 0 -> assigned 1); 1 failed; 2 assigned its own identity; 3 assigned 2 (no pool image)
    src = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    adv = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
    kw = dict(
        source_embeddings=src, adversarial_embeddings=adv, source_labels=[0, 0, 0, 0], assigned=[1, 1, 0, 2],
        source_ids=["s1", "s2", "s3", "s4"], success=[True, False, True, True],
        pool_embeddings=np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), pool_labels=[0, 0, 1],
        pool_ids=["s1", "n2", "n3"],
    )
    return kw


def test_verification_scenario_from_embeddings():
    kw = _verification_world()
    imp = verification_scenario("impersonation", threshold=0.5, **kw)
    # row 0 -> partner n3 (0,1): original cos 0 (rejected), adversarial cos 1 (accepted)
    # row 3 -> identity 2 has no pool image: dropped
    assert imp["n_successful"] == 2 and imp["n_without_partner"] == 1 and imp["n"] == 1
    assert imp["original_pct"] == 0.0 and imp["adversarial_pct"] == 100.0
    assert imp["original_mean"] == pytest.approx(0.0) and imp["adversarial_mean"] == pytest.approx(1.0)

    ev = verification_scenario("evasion", threshold=0.7, **kw)
    # partners of identity 0, never the source 's1' itself: row 0 -> n2 (0.8, 0.6); row 3 (s4) -> s1 or n2
    assert ev["n"] == 2 and ev["n_without_partner"] == 0
    # row 0: original cos 0.8 (kept), adversarial cos 0.6 (< 0.7: rejected)
    # row 3: adversarial (0.6, 0.8) vs s1 -> 0.6 (rejected) or vs n2 -> 0.96 (kept)
    p3 = select_partners([0], ["s4"], [0, 0, 1], ["s1", "n2", "n3"])[0]
    expect_adv = 100.0 if p3 == 0 else 50.0
    assert ev["original_pct"] == 0.0
    assert ev["adversarial_pct"] == expect_adv


def test_verification_summary_and_table():
    kw = _verification_world()
    imp_t = verification_scenario("impersonation", threshold=0.5, **kw)
    imp_u = verification_scenario("impersonation", threshold=0.5, **{**kw, "success": [False] * 4})
    summ = verification_summary("impersonation", 0.5, {"δ = 5": {"targeted": imp_t, "untargeted": imp_u},
                                                       "CW": {"targeted": imp_t}})
    t = verification_table(summ)
    assert t["columns"] == ["Attack", "Targeted Original", "Targeted Adversarial", "Untargeted Original",
                            "Untargeted Adversarial", "Pairs T", "Pairs UT"]
    assert t["rows"][0] == ["δ = 5", 0.0, 100.0, None, None, 1, 0]
    assert t["rows"][1] == ["CW", 0.0, 100.0, None, None, 1, None]
    assert t["paper"]["rows"][3] == ["CW", 50.5, 34.9, 8.0, 9.3]
    assert t["title"].startswith("Table 3")
    assert len(verification_table(summ, with_counts=False)["columns"]) == 5
    with pytest.raises(DataError, match="holds"):
        verification_summary("evasion", 0.5, {"CW": {"targeted": imp_t}})


# ---------------------------------------------------------------------------------------
# deep-features success
# ---------------------------------------------------------------------------------------
def test_success_rates_and_table():
    r = success_rates([True, True, False, True, False, True], [5, 5, 5, 10, 10, 5],
                      ["targeted"] * 5 + ["untargeted"])
    assert r["targeted"]["δ = 5"] == {"delta": 5.0, "n": 3, "successful": 2, "rate_pct": pytest.approx(200 / 3)}
    assert r["targeted"]["δ = 10"]["rate_pct"] == 50.0
    assert r["untargeted"]["δ = 5"]["rate_pct"] == 100.0
    t = df_success_table(r)
    assert [row[0] for row in t["rows"]] == ["δ = 5", "δ = 10"]
    assert t["rows"][1] == ["δ = 10", 50.0, None, 2, None]
    assert t["paper"]["rows"][0] == ["δ = 5", 95.6, 96.8]


# ---------------------------------------------------------------------------------------
# the paper's numbers
# ---------------------------------------------------------------------------------------
def test_paper_values():
    assert paper.paper_cell("table1", "LSTM + M + cos", "CW") == 0.904
    assert paper.paper_cell("table2", "MLP + C + cos", "Macro-AUC") == 0.645
    assert paper.paper_cell("table3", "δ = 7", "Targeted Adversarial") == 93.9
    assert paper.paper_cell("table4", "δ = 10", "Untargeted Adversarial") == 12.5
    assert paper.paper_cell("table5", "MLP + cos", "δ = 7") == 0.908
    assert paper.paper_cell("table6", "LSTM + L2", "δ = 10") == 0.700
    assert paper.paper_cell("table1", "nope", "CW") is None
    assert paper.VERIFICATION_EER_THRESHOLD == 0.448 and paper.VERIFICATION_AUC == 0.9903
    assert paper.DF_SUCCESS_PCT["targeted"] == {5.0: 95.6, 7.0: 96.2, 10.0: 96.3}
    assert paper.MPP_WITHIN_5_PCT == {5.0: 88.3, 7.0: 85.6, 10.0: 84.7}
    t5 = paper.paper_table("table5")
    assert len(t5["rows"]) == 12 and t5["rows"][0] == ["MLP + L2", 0.976, 5]
    for tid in ("table1", "table2"):
        assert len(paper.paper_table(tid)["rows"]) == 8
    # copies: editing one does not change the next
    t5["rows"].clear()
    assert len(paper.paper_table("table5")["rows"]) == 12
    assert "SE-ResNet-50" in paper.paper_table("table3")["note"]
    assert paper.paper_table("attack_success") is None


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def _summaries():
    dist = distance_summary(
        [1.0, 2.0, 3.0, 4.0], ["BIM", "BIM", "DF δ = 5", "DF δ = 5"],
        ["targeted", "untargeted", "targeted", "untargeted"],
        ["classifier", "classifier", "deep_features", "deep_features"], natural=[0.5], bins=5,
    )
    adv, src = _mpp_pair()
    mpp = {"t5": mpp_summary([(np.minimum(adv, src + 5), src)], 5.0, setting="targeted", label="δ = 5"),
           "t7": mpp_summary([(adv, src)], 7.0, setting="targeted", label="δ = 7")}
    kw = _verification_world()
    imp = verification_summary("impersonation", 0.5, {
        "δ = 5": {"targeted": verification_scenario("impersonation", threshold=0.5, **kw)}})
    ev = verification_summary("evasion", 0.5, {
        "δ = 5": {"untargeted": verification_scenario("evasion", threshold=0.5, **kw)}})
    # plain JSON (no NumPy types, no NaN): figures must redraw from results.json alone
    return json.loads(json.dumps([dist, mpp, imp, ev], allow_nan=False))


def test_figures_draw_what_the_summaries_hold(tmp_path):
    dist, mpp, imp, ev = _summaries()
    f6 = plot_distance_groups(dist)
    assert isinstance(f6, Figure)
    assert len(f6.axes[0].patches) == 4 + 1  # four groups and the natural baseline
    f7 = plot_distance_attacks(dist, "targeted")
    assert len(f7.axes[0].patches) == 2 + 1
    f9 = plot_mpp(mpp)
    assert len(f9.axes[0].patches) == 6 + 8  # one bar per bin per delta
    f10 = plot_verification(imp)
    assert len(f10.axes) == 1 and len(f10.axes[0].patches) == 2  # Org and Adv
    assert f10.axes[0].lines[0].get_xdata()[0] == 0.5  # the threshold line
    with pytest.raises(DataError):
        plot_distance_attacks({"attacks": {}}, "targeted")

    paths = write_scenario_figures(tmp_path, distances=dist, mpp=mpp, impersonation=imp, evasion=ev, dpi=30)
    assert list(paths) == ["figure6", "figure7", "figure8", "figure9", "figure10", "figure11"]
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_example_grid_and_amplification():
    rng = np.random.default_rng(0)
    src = rng.uniform(50, 200, (3, 3, 8, 8)).astype(np.float32)
    adv = src.copy()
    adv[:, 0, 0, 0] += 10.0
    assert example_amplification(src, adv) == 12.0  # floor(127.5 / 10)
    assert example_amplification(src, src) == 1.0
    fig = plot_examples(src, adv, max_samples=2, labels=["a", "b"])
    assert len(fig.axes) == 6
    assert fig.axes[2].get_title() == "Perturbation ×12"
    fig2 = plot_examples(src.transpose(0, 2, 3, 1), adv.transpose(0, 2, 3, 1), amplification=3.5)
    assert len(fig2.axes) == 9 and fig2.axes[2].get_title() == "Perturbation ×3.5"
    with pytest.raises(DataError):
        plot_examples(src, adv[:, :, :4])
