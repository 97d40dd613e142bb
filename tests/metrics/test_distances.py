"""Sliced Wasserstein and MMD against closed forms, exact 1-D parity, and their decay rate.

Tolerances:
- 1-D parity with ``scipy.stats.wasserstein_distance`` (exact W1 between empirical measures) and
  the duplication identity are algebraic: float64 rounding, rtol 1e-12.
- Closed forms are compared at ``5 x`` the standard error of the estimator, written out in each
  test from the Monte-Carlo variances (projection directions and samples).
- The decay rate ``n^{-1/2}`` of ``SW_1`` between two samples of one distribution is the rate of
  ``E W_1`` for 1-D laws with ``int sqrt(F (1 - F)) < inf`` (Bobkov & Ledoux 2019, Thm 3.5),
  which Gaussians satisfy; the fitted slope over 16 seeds has a standard error of about 0.03, so
  the band is 0.1.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from scoresde.metrics import mmd2, sliced_wasserstein, wasserstein_1d
from tests.helpers import empirical_order


def normal(n, d, seed, mean=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, d, generator=g, dtype=torch.float64)


def test_wasserstein_1d_matches_scipy_for_unequal_sizes():
    u, v = normal(37, 3, 0), normal(53, 3, 1, mean=0.5, std=2.0)
    ours = wasserstein_1d(u, v, p=1.0)
    ref = [scipy.stats.wasserstein_distance(u[:, j].numpy(), v[:, j].numpy()) for j in range(3)]
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_wasserstein_1d_sees_duplicated_samples_as_the_same_measure(p):
    """Repeating every point of a sample leaves its empirical measure unchanged, so the
    unequal-size path (n vs 2n) must equal the equal-size path."""
    u, v = normal(41, 2, 2), normal(41, 2, 3, mean=1.0)
    torch.testing.assert_close(
        wasserstein_1d(u, v.repeat(2, 1), p=p), wasserstein_1d(u, v, p=p), rtol=1e-12, atol=0
    )


def test_sliced_wasserstein_between_shifted_gaussians_matches_closed_form():
    r"""For N(0, I) and N(m, I) every projection is a unit-variance shift by theta.m, so
    SW_2^2 = E (theta.m)^2 = |m|^2 / d.

    Standard error of the estimate of SW_2^2: directions contribute
    Var[(theta.m)^2] / L = |m|^4 2(d-1) / (d^2 (d+2) L); the two sample means contribute
    2 m.(ybar - xbar) / d with variance 8 |m|^2 / (d^2 n). The empirical-quantile bias,
    E W_2^2 between two samples of one law, is O(log log n / n) < 1e-3 here and is added.
    """
    d, n, L = 4, 4000, 4000
    m = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    x, y = normal(n, d, 10), normal(n, d, 11) + m
    est = sliced_wasserstein(x, y, n_projections=L, generator=torch.Generator().manual_seed(0)) ** 2
    m2 = float(m @ m)
    exact = m2 / d
    se = math.sqrt(m2**2 * 2 * (d - 1) / (d**2 * (d + 2) * L) + 8 * m2 / (d**2 * n))
    assert abs(est - exact) <= 5 * se + 1e-3, f"SW_2^2={est:.4f}, exact={exact:.4f}, se={se:.4f}"


def test_sliced_wasserstein_between_samples_of_one_law_decays_like_n_to_minus_half():
    ns = [100, 400, 1600, 6400]
    means = []
    for n in ns:
        vals = [
            sliced_wasserstein(
                normal(n, 2, 2 * s),
                normal(n, 2, 2 * s + 1),
                p=1.0,
                n_projections=64,
                generator=torch.Generator().manual_seed(s),
            )
            for s in range(16)
        ]
        means.append(float(np.mean(vals)))
    slope = empirical_order(ns, means)
    table = dict(zip(ns, means, strict=True))
    assert abs(slope - 0.5) <= 0.1, f"decay exponent {slope:.3f}; SW_1 by n: {table}"


def test_sliced_wasserstein_is_zero_for_identical_samples_and_symmetric():
    x, y = normal(300, 5, 4), normal(200, 5, 5, std=1.5)
    assert sliced_wasserstein(x, x) == 0.0
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = sliced_wasserstein(x, y, generator=g1)
    b = sliced_wasserstein(y, x, generator=g2)
    assert a == pytest.approx(b, rel=1e-12)


def _mmd2_gaussians(d, s, m2, ell):
    # E k(X, Y) over X - Y ~ N(mu, 2 s^2 I) is
    # (ell^2 / (ell^2 + 2 s^2))^(d/2) exp(-|mu|^2 / (2 (ell^2 + 2 s^2)))
    c = (ell**2 / (ell**2 + 2 * s**2)) ** (d / 2)
    return 2 * c * (1 - math.exp(-m2 / (2 * (ell**2 + 2 * s**2))))


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_unbiased_mmd2_is_centred_on_the_closed_form(shift):
    """The U-statistic is unbiased, so the mean of 20 independent estimates must lie within
    5 standard errors (from their own spread) of the closed form (0 for equal laws)."""
    d, s, ell, n = 3, 1.0, 1.5, 400
    m = torch.full((d,), shift / math.sqrt(d), dtype=torch.float64)
    vals = np.array(
        [
            mmd2(normal(n, d, 100 + 2 * r), normal(n, d, 101 + 2 * r) + m, bandwidth=ell)
            for r in range(20)
        ]
    )
    exact = _mmd2_gaussians(d, s, float(m @ m), ell)
    se = vals.std(ddof=1) / math.sqrt(len(vals))
    assert abs(vals.mean() - exact) <= 5 * se, (
        f"mean {vals.mean():.5f} vs exact {exact:.5f} (se {se:.5f})"
    )


def test_biased_mmd2_is_non_negative_and_median_heuristic_runs():
    x, y = normal(50, 2, 20), normal(60, 2, 21)
    assert mmd2(x, y, unbiased=False) >= 0.0
    assert math.isfinite(mmd2(x, y))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 3)), "same event size"),
        (
            lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), n_projections=0),
            "n_projections",
        ),
        (lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), p=0.5), "p must be"),
        (lambda: sliced_wasserstein(torch.full((3, 2), float("nan")), torch.zeros(5, 2)), "finite"),
        (lambda: mmd2(torch.zeros(1, 2), torch.ones(4, 2)), "at least 2"),
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(4, 2)), "bandwidth 0"),
        (lambda: mmd2(torch.zeros(3, 2), torch.ones(4, 2), bandwidth=-1.0), "bandwidth"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
