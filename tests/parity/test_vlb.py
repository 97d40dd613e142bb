"""The variational bound against closed forms, Monte Carlo and direct integration.

* **It bounds the exact NLL.** On Gaussian data ``N(mu, s^2 I)`` with the exact denoiser, the
  model's posterior mean is linear in ``x_t``, so the reverse chain is linear-Gaussian and the
  model's own marginal ``p_theta(x0) = N(m, v I)`` follows from a scalar recursion (written out
  here, independent of the library). For each image the bound is at least ``-log p_theta(x0)``
  (the gap is ``KL(q(x_{1:K} | x0) || p_theta(x_{1:K} | x0)) >= 0``); ``vlb`` estimates it with
  one draw per term, so the mean paired gap over the images must exceed ``-4`` standard errors,
  for every variance choice and step sub-sequence. The measured gaps (nats, 4000 images, DDPM
  linear schedule) are: ``beta``: 0.52 (K = 10), 0.14 (100), -0.007 ± 0.02 (1000);
  ``posterior``: 307 (10), 18 (100), 0.86 (1000), falling with ``K`` as the test asserts.
* **Each KL term is a Monte-Carlo average of its log-ratio**: for fixed ``x0`` and ``x_t``,
  ``KL(q || p) = E_q[log q(x_s) - log p(x_s)]``, estimated from 200 000 draws within 5 SE.
* **The discretized decoder is the Gaussian integrated over the pixel bins**: the CDF difference
  in ``mpmath`` at 400 digits (no cancellation left), to 1e-9 relative (float64 ``log_ndtr`` differences lose at most a few digits),
  in the tails too (bin masses down to 1e-300).
"""

import math

import mpmath
import numpy as np
import pytest
import scipy.stats
import torch

import scoresde as S
from scoresde.exact import Gaussian
from scoresde.vlb import discretized_gaussian_log_likelihood, vlb

MU, STD = torch.tensor([0.3, -0.5], dtype=torch.float64), 0.2
SDE = S.DiscreteVPSDE.linear()


def model_nll(x0, ts, variance):
    """``-log p_theta(x0)`` of the linear-Gaussian reverse chain of the exact denoiser."""
    a, sg = SDE.alpha(ts), SDE.sigma(ts)

    def gain(k):  # d E[x0 | x_t] / d x_t
        return a[k] * STD**2 / (a[k] ** 2 * STD**2 + sg[k] ** 2)

    m, v = torch.zeros_like(MU), torch.tensor(SDE.prior_std**2, dtype=torch.float64)
    for k in range(ts.numel() - 1, 0, -1):
        a_ts = a[k] / a[k - 1]
        var_ts = sg[k] ** 2 - a_ts**2 * sg[k - 1] ** 2
        var_post = var_ts * sg[k - 1] ** 2 / sg[k] ** 2
        c_x0 = a[k - 1] * var_ts / sg[k] ** 2
        A = a_ts * sg[k - 1] ** 2 / sg[k] ** 2 + c_x0 * gain(k)
        m = A * m + c_x0 * MU * (1 - gain(k) * a[k])
        v = A**2 * v + (var_ts if variance == "beta" else var_post)
    m, v = gain(0) * m + MU * (1 - gain(0) * a[0]), gain(0) ** 2 * v + sg[0] ** 2
    return 0.5 * (torch.log(2 * math.pi * v) + (x0 - m) ** 2 / v).sum(1)


@pytest.fixture(scope="module")
def data():
    x0 = Gaussian(MU, STD).sample(1000, generator=torch.Generator().manual_seed(0))
    return Gaussian(MU, STD).denoiser(SDE, "x0"), x0


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_the_bound_exceeds_the_exact_nll_and_tightens_with_more_steps(data, variance):
    den, x0 = data
    gaps = {}
    for k in (10, 100, 1000):
        res = vlb(den, x0, n_steps=k, variance=variance, decoder="gaussian", batch_size=100_000,
                  generator=torch.Generator().manual_seed(k), progress=False)  # fmt: skip
        assert res.ts.numel() == k and res.nfe == math.ceil(k * x0.shape[0] / 100_000)
        gap = res.per_image * 2 * math.log(2) - model_nll(x0, res.ts, variance)
        se = float(gap.std()) / math.sqrt(gap.numel())
        assert float(gap.mean()) > -4 * se, f"K={k}: bound below the NLL by {-gap.mean():.3g}"
        gaps[k] = float(gap.mean())
    assert gaps[1000] < gaps[100] < gaps[10], gaps


def test_the_terms_add_up_to_the_bound(data):
    den, x0 = data
    res = vlb(den, x0[:50], n_steps=20, decoder="gaussian", progress=False)
    assert res.prior + float(res.terms.sum()) + res.decoder == pytest.approx(res.bpd, rel=1e-12)
    assert res.terms.shape == (19,) and bool((res.terms >= 0).all())


def test_a_kl_term_matches_a_monte_carlo_estimate_of_its_log_ratio():
    # one step s -> t of the DDPM schedule with a deliberately wrong x0 prediction
    t, s = SDE.index_to_t(torch.tensor(400.0)), SDE.index_to_t(torch.tensor(399.0))
    ts = torch.stack([s, t])
    x0, x0_hat = torch.tensor([[0.4, -0.2]]), torch.tensor([[0.1, 0.3]])
    den = S.Denoiser(lambda x, tt: x0_hat.expand_as(x), SDE, "x0")
    for variance in ("beta", "posterior"):
        g = torch.Generator().manual_seed(3)
        kl = vlb(den, x0, ts=ts, variance=variance, decoder="gaussian", generator=g,
                 progress=False).terms[0] * 2 * math.log(2)  # fmt: skip
        # the same x_t draw as vlb's second term: the generator's second randn of shape (1, 2)
        g = torch.Generator().manual_seed(3)
        z = torch.randn(2, 1, 2, generator=g, dtype=torch.float64)[1]
        x_t = SDE.alpha(t) * x0 + SDE.sigma(t) * z
        a_ts = SDE.alpha(t) / SDE.alpha(s)
        var_ts = SDE.sigma(t) ** 2 - a_ts**2 * SDE.sigma(s) ** 2
        var_q = var_ts * SDE.sigma(s) ** 2 / SDE.sigma(t) ** 2
        var_p = var_ts if variance == "beta" else var_q

        c_x = a_ts * SDE.sigma(s) ** 2 / SDE.sigma(t) ** 2
        c_x0 = SDE.alpha(s) * var_ts / SDE.sigma(t) ** 2
        q = scipy.stats.norm((c_x * x_t + c_x0 * x0).numpy(), math.sqrt(var_q))
        p = scipy.stats.norm((c_x * x_t + c_x0 * x0_hat).numpy(), math.sqrt(var_p))
        xs = q.rvs(size=(200_000, 1, 2), random_state=np.random.default_rng(0))
        ratio = (q.logpdf(xs) - p.logpdf(xs)).sum(axis=(1, 2))
        se = ratio.std() / math.sqrt(ratio.size)
        assert abs(float(kl) - ratio.mean()) < 5 * se, (variance, float(kl), ratio.mean(), se)


@pytest.mark.parametrize("v, same_as", [(1.0, "beta"), (-1.0, "posterior")])
def test_a_learned_variance_at_its_ends_is_the_fixed_choice(data, v, same_as):
    """The learned-range output ``v`` interpolates ``log beta`` (``v = 1``) and ``log beta~``
    (``v = -1``): at the ends the bound is the fixed variance's, draw for draw."""
    den, x0 = data

    def net(x, t):
        return torch.cat([den.raw(x, t), torch.full_like(x, v)], dim=1)

    learned = S.Denoiser(net, SDE, "x0", learned_variance=True)
    kw = {"n_steps": 20, "decoder": "gaussian", "progress": False}
    a = vlb(learned, x0[:20], variance="learned", generator=torch.Generator().manual_seed(5), **kw)
    b = vlb(den, x0[:20], variance=same_as, generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(a.per_image, b.per_image, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mean, std", [(0.0, 0.05), (0.93, 0.01), (-0.6, 0.3), (0.99, 1e-3)])
def test_the_discretized_decoder_integrates_the_gaussian_over_each_bin(mean, std):
    pixels = torch.tensor([0, 1, 64, 127, 128, 200, 254, 255], dtype=torch.float64) / 127.5 - 1
    mean_, std_ = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(pixels, mean_, std_)
    mpmath.mp.dps = 400  # bin masses reach 1e-300: the CDF difference at 400 digits is exact
    for x, lp in zip(pixels.tolist(), got.tolist(), strict=True):
        lo = -mpmath.inf if x <= -1 + 1e-9 else mpmath.mpf(x) - mpmath.mpf(1) / 255
        hi = mpmath.inf if x >= 1 - 1e-9 else mpmath.mpf(x) + mpmath.mpf(1) / 255
        mass = mpmath.ncdf(hi, mean, std) - mpmath.ncdf(lo, mean, std)
        assert lp == pytest.approx(float(mpmath.log(mass)), rel=1e-9, abs=1e-12), (x, lp)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"variance": "fixed"}, r"variance must be one of \['beta', 'posterior', 'learned'\]"),
        ({"decoder": "logistic"}, r"decoder must be one of \['discretized', 'gaussian'\]"),
        ({"variance": "learned"}, "variance='learned' needs a denoiser whose network predicts"),
        (
            {"ts": torch.tensor([0.5, 0.2]), "decoder": "gaussian"},
            "ts must hold at least 2 strictly increasing times",
        ),
        ({"n_steps": 2000, "decoder": "gaussian"}, r"n_steps must be <= the schedule's N=1000"),
        ({}, "decoder='discretized' needs 8-bit data"),
    ],
)
def test_bad_arguments_are_named(data, kw, match):
    den, x0 = data
    with pytest.raises(ValueError, match=match):
        vlb(den, x0[:4], progress=False, **kw)
