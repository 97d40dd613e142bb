"""The bootstrap's spread estimates FID's sampling noise: on Gaussian features it matches the
spread of FID over independent sample sets of the same size to within a factor of 2 (each sd is
estimated from 40 values, so its own relative error is ~11 %)."""

import numpy as np

from benchmarks.fid_bootstrap import bootstrap_fid
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
