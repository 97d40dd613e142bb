"""The exact problems are exact.

- The closed-form score equals autograd's grad log p_t of the closed-form density (float64; both
  are rounding-level exact, so rtol 1e-9).
- The posterior mean (the ideal denoiser) satisfies Tweedie's formula
  E[x0 | x_t] = (x_t + sigma^2 score) / alpha.
- The scipy reference PF-ODE solution matches the closed-form flow of a single Gaussian to its
  tolerance: rtol = atol = 1e-10 per step, accumulated over a few hundred steps -> 1e-8 bound.
- Samples from the mixture have the mixture's mean (5 standard errors).
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde as S
from tests.helpers import gmm_2d

SDES = [S.VPSDE(), S.SubVPSDE(), S.VESDE(), S.DiscreteVPSDE.linear()]


@given(sde=st.sampled_from(SDES), t=st.floats(0.01, 1.0), seed=st.integers(0, 1000))
def test_closed_form_score_is_the_gradient_of_the_log_density(sde, t, seed):
    data = S.GaussianMixture(torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(seed)),
                             stds=[0.3, 0.5, 1.0], weights=[0.2, 0.3, 0.5])  # fmt: skip
    x = (2 * torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(seed + 1),
                         dtype=torch.float64)).requires_grad_(True)  # fmt: skip
    (grad,) = torch.autograd.grad(data.log_prob(x, t, sde).sum(), x)
    torch.testing.assert_close(data.score(x.detach(), t, sde), grad, rtol=1e-9, atol=1e-12)


@given(sde=st.sampled_from(SDES), t=st.floats(0.01, 1.0))
def test_posterior_mean_satisfies_tweedie(sde, t):
    data = gmm_2d()
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    tweedie = (x + sigma**2 * data.score(x, t, sde)) / alpha
    torch.testing.assert_close(data.x0(x, t, sde), tweedie, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES + [S.DiscreteVPSDE.cosine()], ids=repr)
def test_reference_solution_matches_the_closed_form_gaussian_flow(sde):
    g = S.Gaussian(torch.tensor([1.0, -2.0, 0.5]), std=0.7)
    x_T = sde.prior_sample((8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = S.reference_solution(g, sde, x_T)
    exact = g.flow(x_T, sde.T, sde.t_min, sde)
    torch.testing.assert_close(ref.x, exact, rtol=0, atol=1e-8)
    assert ref.nfe > 0


def test_mixture_samples_have_the_mixture_mean():
    data = gmm_2d()
    x = data.sample(40000, generator=torch.Generator().manual_seed(0))
    mean = (data.weights[:, None] * data.means).sum(0)
    se = x.std(0) / math.sqrt(x.shape[0])
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
