"""Yang & Lerch distribution comparison: overlapped area and KL divergence."""

import numpy as np
import pytest

from evaluation import compare as C


def test_oa_of_identical_and_disjoint_distributions():
    x = np.random.default_rng(0).normal(0, 1, 500)
    assert C.overlap_area(x, x) == pytest.approx(1.0, abs=1e-3)
    assert C.kl_divergence(x, x) == pytest.approx(0.0, abs=1e-6)
    assert C.overlap_area(x, x + 100) < 1e-3
    assert C.kl_divergence(x, x + 100) > 5
    y = np.random.default_rng(1).normal(0, 1, 500)  # same distribution, other sample
    assert C.overlap_area(x, y) > 0.9
    assert 0.2 < C.overlap_area(x, y + 1.5) < 0.7


def test_degenerate_sets():
    assert C.overlap_area([1.0] * 5, [1.0] * 7) == 1.0
    assert C.overlap_area([1.0] * 5, [2.0] * 7) < 1e-3
    assert np.isnan(C.overlap_area([], [1.0, 2.0]))


def test_distances():
    a = np.array([0.0, 1.0, 3.0])
    assert sorted(C.intra_set_distances(a).tolist()) == [1.0, 2.0, 3.0]
    assert sorted(C.inter_set_distances([0.0], a).tolist()) == [0.0, 1.0, 3.0]
    v = np.array([[0, 0], [3, 4], [np.nan, 1]])  # NaN rows are dropped
    assert C.intra_set_distances(v).tolist() == [5.0]


def test_compare_sets_real_vs_itself_and_vs_shifted():
    rng = np.random.default_rng(0)
    real = rng.normal(5, 1, 200)
    same = C.compare_sets(real, rng.normal(5, 1, 200))
    far = C.compare_sets(real, rng.normal(15, 1, 200))
    assert same["oa"] > 0.85 and same["value_oa"] > 0.85
    assert far["oa"] < 0.05 and far["kl"] > same["kl"]
    vec = C.compare_sets(rng.random((50, 12)), rng.random((40, 12)))
    assert vec["oa"] > 0.8 and "value_oa" not in vec
