"""``er_sde``, ``restart`` and ``sa_solver`` on exact Gaussian data: 20 000 samples after 200
steps have the mean and standard deviation of the exact marginal at ``t_min``, on VP and VE.

Bounds from the sample itself: ``|mean - m| <= 5 SE_mean + b`` and ``|std - s| <= 5 SE_std + b``,
with ``SE_mean = std / sqrt(N)``, ``SE_std = sqrt((m4 - var^2) / N) / (2 std)`` (delta method) and
``b`` the sampler's exact discrete-time bias at 200 steps, computed by the probe method of
``test_sde_weak_order.py`` (below 2e-3 for both: small against 5 SE ~ 1.8e-2 for the mean, so
the test sees a sampler that gets the law wrong by more than a few per cent). At 5 SE a correct
sampler fails with probability < 1e-6 per comparison; seeds are fixed.
"""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import DATA, discrete_moments, exact_moments

SDES = {"vp": S.VPSDE(), "ve": S.VESDE()}


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("key", ["er_sde", "restart", "sa_solver"])
def test_samples_have_the_exact_mean_and_std(key, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler(key)
    n_steps, N = 200, 20_000
    m, v = exact_moments(sde, sde.t_min)
    m_n, v_n = discrete_moments(sampler, n_steps, sde)
    bias_mean, bias_std = abs(m_n - m), abs(v_n**0.5 - v**0.5)
    gen = torch.Generator().manual_seed(3)
    x_T = DATA.sample_marginal(sde, sde.T, N, generator=gen)
    x = S.sample(sampler, DATA.denoiser(sde), x_T=x_T, n_steps=n_steps, generator=gen,
                 progress=False).x.flatten()  # fmt: skip
    mean, std = float(x.mean()), float(x.std())
    m4 = float(((x - x.mean()) ** 4).mean())
    se_mean, se_std = std / N**0.5, ((m4 - std**4) / N) ** 0.5 / (2 * std)
    msg = f"{key} on {sde_key}: sample ({mean:.5f}, {std:.5f}), exact ({m:.5f}, {v**0.5:.5f})"
    assert abs(mean - m) <= 5 * se_mean + bias_mean, msg
    assert abs(std - v**0.5) <= 5 * se_std + bias_std, msg
    assert max(bias_mean, bias_std) < 2e-3, f"{key}: discrete bias {bias_mean}, {bias_std}"
