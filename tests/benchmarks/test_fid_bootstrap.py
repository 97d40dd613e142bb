"""The bootstrap's spread estimates FID's sampling noise: on Gaussian features it matches the
spread of FID over independent sample sets of the same size to within a factor of 2 (each sd is
estimated from 40 values, so its own relative error is ~11 %)."""

import numpy as np
import pytest

from benchmarks.fid_bootstrap import RowSpaceFID, bootstrap_fid, fid_sd
from scoresde.metrics import FeatureStats, fid


def test_bootstrap_spread_matches_the_spread_over_fresh_samples():
    rng = np.random.default_rng(0)
    d, n = 8, 400
    reference = FeatureStats.of(rng.normal(size=(20000, d)))
    shifted = lambda m: rng.normal(size=(m, d)) * 1.2 + 0.3  # noqa: E731
    fresh = np.array([fid(FeatureStats.of(shifted(n)), reference) for _ in range(40)])
    features = shifted(n)
    boot = bootstrap_fid(features, reference, reps=40, seed=1)
    assert 0.5 < boot.std(ddof=1) / fresh.std(ddof=1) < 2.0
    assert np.array_equal(bootstrap_fid(features, reference, reps=40, seed=1), boot)


def test_row_space_fid_equals_fid_on_all_rows_and_on_a_redraw():
    """The n x n Gram route is exact algebra: it matches the d x d eigenvalue route to
    round-off, with more features than rows (singular covariance, as at n = 1000, d = 2048) and
    with fewer, and on a redraw with repeated rows. With a singular covariance the d x d route
    takes square roots of round-off eigenvalues, (d - n) sqrt(eps lambda_max) ~ 1e-8 relative
    here: hence 1e-7."""
    rng = np.random.default_rng(0)
    for n, d in ((30, 50), (200, 20)):
        reference = FeatureStats.of(rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) / d)
        features = rng.normal(size=(n, d)) * 0.8 + 0.5
        assert RowSpaceFID(features, reference)() == pytest.approx(
            fid(FeatureStats.of(features), reference), rel=1e-7
        )
        idx = rng.integers(0, n, n)
        assert RowSpaceFID(features, reference)(idx) == pytest.approx(
            fid(FeatureStats.of(features[idx]), reference), rel=1e-7
        )


def test_fid_sd_is_the_spread_of_the_redraws_and_reproducible():
    rng = np.random.default_rng(2)
    reference = FeatureStats.of(rng.normal(size=(2000, 6)))
    features = rng.normal(size=(300, 6)) + 0.2
    sd = fid_sd(features, reference, reps=10, seed=3)
    assert sd == bootstrap_fid(features, reference, reps=10, seed=3).std(ddof=1) > 0
    assert fid_sd(features, reference, reps=10, seed=3) == sd
