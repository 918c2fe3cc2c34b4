"""Transfer between networks: carrying perturbations between chip frames, and the scores."""

from __future__ import annotations

import numpy as np

from frad.evaluation.transfer import carry_perturbation, transfer_scores, transfer_table


def _eye(n: int, shift: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    M = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
    return np.repeat(M[None], n, axis=0)


def test_identity_frames_carry_the_adversarial_unchanged() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    adv = np.clip(clean.transpose(0, 3, 1, 2) + rng.normal(0, 5, (3, 3, 20, 20)), 0, 255).astype(np.float32)
    out = carry_perturbation(adv, clean, clean, _eye(3), _eye(3))
    np.testing.assert_allclose(out, adv, atol=1e-4)
    # no perturbation: the target's clean chip comes back
    other = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    same = carry_perturbation(clean.transpose(0, 3, 1, 2).astype(np.float32), clean, other, _eye(3), _eye(3, (1.5, -2.0), 0.7))
    np.testing.assert_allclose(same, other.transpose(0, 3, 1, 2), atol=1e-4)


def test_a_shifted_target_frame_sees_the_perturbation_shifted() -> None:
    clean_s = np.full((1, 20, 20, 3), 100, np.uint8)
    clean_t = np.full((1, 20, 20, 3), 50, np.uint8)
    adv = clean_s.transpose(0, 3, 1, 2).astype(np.float32).copy()
    adv[0, :, 5, 7] += 40  # one pixel at x=7, y=5 of the source chip
    out = carry_perturbation(adv, clean_s, clean_t, _eye(1), _eye(1, (3.0, 2.0)))
    d = out[0, 0] - 50
    assert d[7, 10] == 40 and np.count_nonzero(d) == 1  # x + 3, y + 2


def test_a_point_lands_where_the_two_transforms_say() -> None:
    """Source chip point P -> photograph -> target chip: M_t @ M_s^-1 P (bilinear spread around it)."""
    Ms = np.array([[[1.3, 0.2, -10.0], [-0.2, 1.3, 4.0]]])
    Mt = np.array([[[0.8, -0.1, 3.0], [0.1, 0.8, -1.0]]])
    clean_s = np.zeros((1, 40, 40, 3), np.uint8)
    clean_t = np.zeros((1, 30, 30, 3), np.uint8)
    adv = np.zeros((1, 3, 40, 40), np.float32)
    yy, xx = np.mgrid[0:40, 0:40]
    P = np.array([21.0, 17.0])
    adv[0, :] = 200 * np.exp(-((xx - P[0]) ** 2 + (yy - P[1]) ** 2) / (2 * 2.5**2))
    out = carry_perturbation(adv, clean_s, clean_t, Ms, Mt)[0, 0]
    q = np.linalg.solve(Ms[0, :, :2], P - Ms[0, :, 2])
    want = Mt[0, :, :2] @ q + Mt[0, :, 2]
    ty, tx = np.mgrid[0:30, 0:30]
    got = np.array([(out * tx).sum() / out.sum(), (out * ty).sum() / out.sum()])
    assert np.abs(got - want).max() < 0.3


def test_scores_by_hand() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    pool = rng.normal(size=(6, 8)).astype(np.float32)
    r = transfer_scores(
        predicted=np.array([1, 0, 2, 2]), clean_predicted=np.array([0, 1, 1, 1]),
        targeted=np.array([True, True, False, False]), true_label=np.array([0, 0, 1, 1]),
        target=np.array([1, 2, -1, -1]), source_success=np.array([True, False, True, True]),
        assigned=np.array([1, 2, 2, 0]), source_embeddings=emb, adversarial_embeddings=emb + 0.1,
        source_ids=np.array(["a", "b", "c", "d"]), pool_embeddings=pool, pool_labels=np.array([0, 0, 1, 1, 2, 2]),
        pool_ids=np.array(["p0", "p1", "p2", "p3", "p4", "p5"]), threshold=0.5, metric="cosine",
    )
    # targeted rows: hit if predicted == target -> row 0 yes, row 1 no; untargeted: predicted != true -> both
    assert r["success"] == 0.75 and r["clean_accuracy"] == 0.75 and r["source_success"] == 0.75
    assert r["success_given_source"] == 1.0  # rows 0, 2, 3 succeeded on the source and on the target
    assert r["impersonation"]["n_successful"] == 3
    t = transfer_table({"rows": [{"source": "a", "target": "b", "attack": "bim", "setting": "targeted", **r}],
                        "thresholds": {"b": {"metric": "cosine", "threshold": 0.5}}})
    assert t["rows"][0][:5] == ["a", "b", "bim", "targeted", 4] and len(t["columns"]) == len(t["rows"][0])
