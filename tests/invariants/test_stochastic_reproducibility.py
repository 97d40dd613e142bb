"""Reproducible randomness: one seed fixes a stochastic sample, including its auxiliary draws.

* Every stochastic sampler gives bit-identical samples for the same ``BrownianNoise`` seed, on a
  fresh source or on the same source reused (``bind`` restarts the auxiliary stream, so Langevin
  noise repeats too), and different samples for a different seed.
* ``BrownianNoise.extra`` draws are standard normal and independent of the path: over
  ``N = 2e5`` values, sample mean, variance and correlation with the path's increments are within
  5 standard errors of 0, 1 and 0 (``1/sqrt(N)``, ``sqrt(2/N)``, ``1/sqrt(N)``).
"""

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from tests.helpers import gmm_2d

STOCHASTIC = [k for k, c in sorted(SAMPLERS.items()) if c.stochastic]
OPTIONS = {"annealed_langevin": dict(n_steps_each=3)}


@pytest.mark.parametrize("key", STOCHASTIC)
def test_same_seed_gives_the_same_samples(key):
    sde = S.VPSDE()
    den = gmm_2d().denoiser(sde)
    sampler = S.get_sampler(key, **OPTIONS.get(key, {}))
    x_T = sde.prior_sample((8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def draw(noise):
        return S.sample(sampler, den, x_T=x_T, n_steps=6, noise=noise, progress=False).x

    reused = S.BrownianNoise(seed=11)
    first, again = draw(reused), draw(reused)
    fresh = draw(S.BrownianNoise(seed=11))
    other = draw(S.BrownianNoise(seed=12))
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(fresh, first, rtol=0, atol=0)
    assert not torch.equal(other, first)


def test_brownian_auxiliary_draws_are_standard_normal_and_independent_of_the_path():
    n = 200_000
    like = torch.zeros(n, dtype=torch.float64)
    ts = S.UniformTime().grid(S.VPSDE(), 4)
    noise = S.BrownianNoise(seed=5)
    noise.bind(ts, like)
    grid = ts.tolist()
    path = torch.cat([noise(grid[i], grid[i + 1], like) for i in range(4)])
    extra = torch.cat([noise.extra(like) for _ in range(4)])
    k = 5.0
    m = extra.numel()
    assert abs(float(extra.mean())) < k / m**0.5
    assert abs(float(extra.var()) - 1.0) < k * (2.0 / m) ** 0.5
    corr = float(
        ((path - path.mean()) * (extra - extra.mean())).mean() / (path.std() * extra.std())
    )
    assert abs(corr) < k / m**0.5
