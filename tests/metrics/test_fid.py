"""FID: the Fréchet distance against closed forms and an independent formula, preprocessing,
statistics caching, and the real Inception network on a few images.

Tolerances:
- Commuting covariances give ``tr (S1 S2)^{1/2} = sum sqrt(a_i b_i)`` in closed form; ``sqrtm``
  (Schur) is backward stable, so agreement is at float64 rounding times the condition (rtol 1e-9).
- With fewer samples than dimensions (the FID regime: 1000 images, 2048 features) the covariance
  is singular: the ``d - n + 1`` zero eigenvalues of ``S^2`` come out of the Schur form as
  ``O(eps lambda_max^2)`` and their square roots as ``O(sqrt(eps) lambda_max)``, so
  ``FID(A, A)`` is bounded by ``2 (d - n + 1) sqrt(eps) lambda_max`` (eps = 2.2e-16).
- The implementation takes ``tr (S1 S2)^{1/2} = sum sqrt(eig(S1^{1/2} S2 S1^{1/2}))`` (symmetric
  solvers only). pytorch-fid's route, ``scipy.linalg.sqrtm`` of ``S1 S2`` (Schur), is the
  independent reference: on full-rank covariances both are backward stable and agree to 1e-6
  relative (the product's condition number stays below ~1e4 here, so 1e-6 leaves a wide margin
  over float64 rounding); on singular ones both carry the ``sqrt(eps)``-level bound above.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.metrics import (
    PREPROCESSING,
    FeatureStats,
    InceptionFeatures,
    cached_stats,
    extract_features,
    fid,
    frechet_distance,
    preprocess,
)
from tests.metrics.fid_helpers import data_dir, read_idx_images, write_tiny_feature_net

EPS = np.finfo(np.float64).eps


def random_orthogonal(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_of_commuting_covariances_matches_closed_form():
    rng = np.random.default_rng(0)
    d = 20
    q = random_orthogonal(d, rng)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(exact, rel=1e-9)


def features(n, d, seed):
    """Non-negative, correlated features like pool3 outputs."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / math.sqrt(d))


@pytest.mark.parametrize("n, d", [(400, 32), (50, 128)], ids=["n>d", "n<d singular"])
def test_fid_of_a_set_with_itself_is_zero_to_round_off(n, d):
    stats = FeatureStats.of(features(n, d, 1))
    lam_max = np.linalg.eigvalsh(stats.sigma).max()
    bound = 2 * max(d - n + 1, 1) * math.sqrt(EPS) * lam_max
    assert abs(fid(stats, stats)) <= bound, f"FID(A, A) = {fid(stats, stats):.3g} > {bound:.3g}"


def sqrtm_frechet(s1, s2):
    """pytorch-fid's formula: the trace of ``scipy.linalg.sqrtm(S1 S2)``, real part."""
    covmean = scipy.linalg.sqrtm(s1.sigma @ s2.sigma).real
    diff = s1.mu - s2.mu
    return diff @ diff + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * np.trace(covmean)


def test_frechet_distance_matches_sqrtm_to_1e6_relative():
    n, d = 600, 256
    s1, s2 = FeatureStats.of(features(n, d, 2)), FeatureStats.of(features(n, d, 3) * 1.3)
    assert fid(s1, s2) == pytest.approx(sqrtm_frechet(s1, s2), rel=1e-6)


def test_frechet_distance_matches_sqrtm_on_singular_covariances():
    n, d = 60, 128
    s1, s2 = FeatureStats.of(features(n, d, 2)), FeatureStats.of(features(n, d, 3) * 1.3)
    lam = max(np.linalg.eigvalsh(s1.sigma).max(), np.linalg.eigvalsh(s2.sigma).max())
    assert abs(fid(s1, s2) - sqrtm_frechet(s1, s2)) <= 4 * (d - n + 1) * math.sqrt(EPS) * lam


def test_non_psd_covariance_is_rejected_with_its_eigenvalue_named():
    with pytest.raises(ValueError, match=r"sigma1 is not a covariance: it has eigenvalue -1 < 0"):
        frechet_distance(np.zeros(3), -np.eye(3), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("name", ["mu1", "sigma2"])
def test_non_finite_moments_are_refused(name):
    args = {"mu1": np.zeros(3), "sigma1": np.eye(3), "mu2": np.zeros(3), "sigma2": np.eye(3)}
    args[name] = args[name] * np.nan
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        frechet_distance(**args)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_preprocess_follows_the_pytorch_fid_convention():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (2, 1, 28, 28), generator=g, dtype=torch.uint8)
    x = preprocess(grey)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    torch.testing.assert_close(x[:, 0], x[:, 2], rtol=0, atol=0)  # grey repeated to 3 channels
    ref = (
        torch.nn.functional.interpolate(
            grey.float().repeat(1, 3, 1, 1) / 255,
            size=(299, 299),
            mode="bilinear",
            align_corners=False,
        )
        * 2
        - 1
    )
    torch.testing.assert_close(x, ref, rtol=0, atol=0)
    torch.testing.assert_close(preprocess(grey.float() / 255), x, rtol=0, atol=0)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.rand(2, 2, 8, 8), "shape"),
        (torch.rand(8, 8), "shape"),
        (torch.rand(2, 1, 8, 8) * 2 - 1, r"\[0, 1\]"),
        (torch.ones(2, 1, 8, 8, dtype=torch.int32), "dtype"),
        (torch.full((2, 1, 8, 8), float("nan")), "finite"),
    ],
)
def test_preprocess_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        preprocess(images)


def test_missing_network_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        InceptionFeatures(tmp_path / "nope.pt")


def test_features_do_not_depend_on_batch_size(tmp_path):
    """Rows are computed independently, so re-batching may change only the summation order inside
    the convolution: float32 round-off (rtol 1e-5)."""
    ext = InceptionFeatures(write_tiny_feature_net(tmp_path / "tiny.pt"))
    images = torch.rand(11, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        extract_features(images, ext, batch_size=3),
        extract_features(images, ext, batch_size=11),
        rtol=1e-5,
        atol=1e-6,
    )


def test_stats_round_trip_and_cache_is_keyed(tmp_path):
    stats = FeatureStats.of(features(30, 5, 4))
    key = {"net": "abc", "data": "x[0:30]", "n": 30, "preprocessing": PREPROCESSING}
    calls = []

    def compute():
        calls.append(1)
        return stats

    path = tmp_path / "stats.npz"
    first = cached_stats(path, key, compute)
    second = cached_stats(path, dict(key), compute)
    assert len(calls) == 1, "the second call must read the cache"
    for got in (first, second):
        np.testing.assert_array_equal(got.mu, stats.mu)
        np.testing.assert_array_equal(got.sigma, stats.sigma)
        assert got.n == 30
    with pytest.raises(ValueError, match=r"differs in \['n'\]"):
        cached_stats(path, {**key, "n": 31}, compute)
    with pytest.raises(ValueError, match="n >= 2"):
        FeatureStats.of(np.zeros((1, 5)))


INCEPTION = None if data_dir() is None else data_dir() / "fid-inception" / "default_1.pt"
MNIST = None if data_dir() is None else data_dir() / "mnist"


@pytest.mark.skipif(
    INCEPTION is None or not INCEPTION.is_file(), reason="FID Inception file not found"
)
def test_inception_features_of_mnist_digits_are_pool3_vectors():
    """On 4 digits: (4, 2048) finite non-negative features (pool3 follows a ReLU) with the mean of
    about 0.27 that the file's documentation reports, and grey input equal to its RGB repeat."""
    ext = InceptionFeatures(INCEPTION)
    digits = read_idx_images(MNIST / "train-images-idx3-ubyte", 4)
    f = ext(digits)
    assert f.shape == (4, 2048) and bool(torch.isfinite(f).all()) and float(f.min()) >= 0.0
    assert 0.2 < float(f.mean()) < 0.35
    torch.testing.assert_close(ext(digits.repeat(1, 3, 1, 1)), f, rtol=0, atol=0)
