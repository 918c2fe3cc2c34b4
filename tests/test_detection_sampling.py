"""Balanced sampler (chi-square on draw frequencies) and source-grouped splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from frad.detection import balanced_sampler, group_weights, split_by_source
from frad.errors import ConfigError, DataError

SIZES = {"natural": 400, "BIM-0.03": 120, "MI-FGSM": 60, "CW": 15}


def _groups() -> np.ndarray:
    return np.concatenate([np.full(n, g) for g, n in SIZES.items()])


def test_weights_are_n_over_group_count():
    g = _groups()
    w = group_weights(g)
    n = g.size
    for name, count in SIZES.items():
        np.testing.assert_allclose(w[g == name], n / count)
        assert w[g == name].sum() == pytest.approx(n)  # equal total per group


def _draw_counts(sampler, g: np.ndarray) -> np.ndarray:
    idx = np.fromiter(iter(sampler), dtype=np.int64)
    return np.array([(g[idx] == name).sum() for name in SIZES])


def test_group_draw_frequencies_are_equal_within_noise():
    g = _groups()
    draws = 40_000
    sampler = balanced_sampler(g, num_samples=draws, generator=torch.Generator().manual_seed(0))
    counts = _draw_counts(sampler, g)
    assert counts.sum() == draws
    # chi-square against equal frequencies: a p-value this small would be a 1-in-1000 fluke
    assert chisquare(counts).pvalue > 1e-3
    # and every group within 5 binomial standard deviations of draws / groups
    p = 1 / len(SIZES)
    assert np.all(np.abs(counts - draws * p) < 5 * np.sqrt(draws * p * (1 - p)))


def test_the_chi_square_check_detects_an_unbalanced_sampler():
    # control: uniform sampling over rows (no group weights) must fail the same test
    g = _groups()
    plain = torch.utils.data.RandomSampler(np.arange(g.size), replacement=True, num_samples=40_000,
                                           generator=torch.Generator().manual_seed(0))
    assert chisquare(_draw_counts(plain, g)).pvalue < 1e-10


def test_sampler_is_reproducible_with_a_seeded_generator():
    g = _groups()
    a = list(balanced_sampler(g, generator=torch.Generator().manual_seed(3)))
    b = list(balanced_sampler(g, generator=torch.Generator().manual_seed(3)))
    assert a == b and len(a) == g.size


def _split_data(rng):
    nat = np.array([f"n{i}" for i in range(50)])
    src = np.repeat([f"s{i}" for i in range(40)], 5)  # 5 adversarials per source
    ids = np.concatenate([nat, src])
    y = np.r_[np.zeros(50, int), np.ones(200, int)]
    perm = rng.permutation(ids.size)
    return ids[perm], y[perm]


def test_split_by_source_never_shares_a_source_and_is_stratified():
    ids, y = _split_data(np.random.default_rng(0))
    tr, te = split_by_source(ids, y, test_size=0.3, random_state=1)
    assert np.intersect1d(ids[tr], ids[te]).size == 0
    assert np.union1d(tr, te).size == ids.size
    assert (y[te] == 0).sum() == 15  # ceil(0.3 * 50) natural ids
    assert np.unique(ids[te][y[te] == 1]).size == 12  # ceil(0.3 * 40) source ids, all their rows
    assert (y[te] == 1).sum() == 60


def test_split_depends_on_the_id_set_and_seed_only():
    ids, y = _split_data(np.random.default_rng(0))
    tr, te = split_by_source(ids, y, test_size=0.3, random_state=1)
    ids2, y2 = _split_data(np.random.default_rng(5))  # same rows, another order
    tr2, te2 = split_by_source(ids2, y2, test_size=0.3, random_state=1)
    assert set(ids[te]) == set(ids2[te2])
    _, te3 = split_by_source(ids, y, test_size=0.3, random_state=2)
    assert set(ids[te3]) != set(ids[te])


def test_split_errors():
    with pytest.raises(ConfigError, match="test_size"):
        split_by_source(np.arange(10), test_size=1.5)
    with pytest.raises(DataError, match="natural"):
        split_by_source(np.array([1, 2, 3, 4]), np.array([0, 1, 1, 1]), test_size=0.5)
    with pytest.raises(DataError, match="rows"):
        split_by_source(np.arange(4), np.zeros(3))
