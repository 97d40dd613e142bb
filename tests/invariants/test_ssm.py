"""Sliced score matching is the Fisher divergence up to a constant, and it trains a score model.

* **Fisher divergence up to a constant** (Song et al. 2019, Thm. 1): for any model ``s``,
  ``J_SSM(s) = 1/2 E||s - grad log p_t||^2 - 1/2 E||grad log p_t||^2``, so for two models the
  difference of their SSM objectives equals the difference of their Fisher divergences. Both
  models here have known scores: the exact score of the ring mixture (Fisher divergence 0) and
  the exact score of another mixture. The Fisher divergences are computed from the exact score of
  ``p_t``; the SSM objectives only see samples. Each is a mean over the same 20 000 draws, so the
  paired per-sample residual ``(J_a - J_b) - (F_a - F_b)`` has mean 0 and the test allows 5 of
  its standard errors. Checked with and without variance reduction, at t = 0.02, 0.1 and 0.3.
* **It trains**: a small MLP (width 32, 300 steps of batch 128) trained by SSM on the ring
  mixture learns the score. Its error ``E sigma^2 ||s - s*||^2 / 2`` (uniform ``t``) must fall
  below a quarter of the untrained network's and within 4x the error DSM reaches with the same
  steps (measured: untrained 0.73, SSM 0.082, DSM 0.040; the gap is SSM's variance, see
  ``docs/training.md``).
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.losses import dsm_loss, ssm_loss
from scoresde.models import ScoreMLP

SDE = S.VPSDE()
DATA = S.ring_mixture()
OTHER = S.ring_mixture(std=0.6, radius=1.2)


@pytest.mark.parametrize("variance_reduction", [True, False], ids=["vr", "plain"])
@pytest.mark.parametrize("t0", [0.02, 0.1, 0.3])
def test_ssm_differences_equal_fisher_divergence_differences(t0, variance_reduction, float64):
    n = 20_000
    g = torch.Generator().manual_seed(0)
    x0 = DATA.sample(n, generator=g)
    t = torch.full((n,), t0)
    noise = torch.randn(n, 2, generator=g)
    v = torch.randn(1, n, 2, generator=g)
    a, b = DATA.denoiser(SDE, "eps"), OTHER.denoiser(SDE, "eps")
    kw = {"t": t, "noise": noise, "projections": v, "variance_reduction": variance_reduction,
          "reduce": "none"}  # fmt: skip
    j_a, j_b = ssm_loss(a, x0, **kw), ssm_loss(b, x0, **kw)
    x_t = SDE.alpha(t)[:, None] * x0 + SDE.sigma(t)[:, None] * noise
    true = DATA.score(x_t, t, SDE)
    weight = SDE.sigma(t) ** 2 / 2  # the "sigma2" weighting per dimension (d = 2)
    f_a = weight * 0.5 * (a.score(x_t, t) - true).pow(2).sum(1)
    f_b = weight * 0.5 * (b.score(x_t, t) - true).pow(2).sum(1)
    resid = (j_a - j_b) - (f_a - f_b)
    se = float(resid.std()) / math.sqrt(n)
    assert abs(float(resid.mean())) < 5 * se, (
        f"SSM difference {float((j_a - j_b).mean()):.5f} vs Fisher {float((f_a - f_b).mean()):.5f}"
        f" (SE {se:.2g})"
    )
    assert float((f_a - f_b).mean()) < -5 * se  # the two models are told apart


def score_error(den, n=4000):
    g = torch.Generator().manual_seed(123)
    t = SDE.t_min + (SDE.T - SDE.t_min) * torch.rand(n, generator=g, dtype=torch.float64)
    x0 = DATA.sample(n, generator=g)
    x_t = SDE.alpha(t)[:, None] * x0 + SDE.sigma(t)[:, None] * torch.randn(n, 2, generator=g)
    with torch.no_grad():
        s = den.score(x_t.float(), t).double()
    return float(
        (SDE.sigma(t)[:, None] ** 2 * (s - DATA.score(x_t, t, SDE)) ** 2).sum(1).mean() / 2
    )


def trained(loss, steps=300):
    torch.manual_seed(0)
    den = S.Denoiser(ScoreMLP(2, width=32, depth=2), SDE, "eps", time_input="log_sigma")
    untrained = score_error(den)
    opt = torch.optim.Adam(den.net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        value = loss(den, DATA.sample(128, generator=g).float(), generator=g)
        opt.zero_grad()
        value.backward()
        opt.step()
    return untrained, score_error(den)


def test_an_mlp_trained_by_ssm_learns_the_score():
    untrained, ssm = trained(ssm_loss)
    _, dsm = trained(dsm_loss)
    assert ssm < 0.25 * untrained, f"SSM error {ssm:.4f}, untrained {untrained:.4f}"
    assert ssm < 4 * dsm, f"SSM error {ssm:.4f} vs DSM {dsm:.4f}"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"n_projections": 0}, "n_projections must be an int >= 1"),
        ({"variance_reduction": 1}, "variance_reduction must be a bool"),
        ({"weighting": "snr"}, r"weighting must be one of \['sigma2', 'likelihood'\]"),
        ({"projections": torch.zeros(2, 4, 2)}, r"projections must have shape \(1, 4, 2\)"),
    ],
)
def test_bad_options_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        ssm_loss(DATA.denoiser(SDE, "eps"), torch.zeros(4, 2), **kw)
