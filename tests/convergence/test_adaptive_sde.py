"""``adaptive_sde``: accuracy set by its tolerance, not by a step count.

* Strong error against NFE: on ``gmm_2d`` (128 paths, one ``BrownianNoise`` path, as in
  ``test_sde_strong_order.py``) the mean distance at ``t_min`` to Euler–Maruyama on 2^14 steps of
  the same path (whose own error, ``<= 8e-4``, is below a fifth of the smallest error fitted)
  falls like ``NFE^-p`` with ``p`` within 0.3 of the declared strong order 1 as ``rel_tol`` goes
  from 0.1 to 0.01 (``abs_tol = rel_tol / 6.4``, the paper's ratio), on VP, VE and DDPM-linear.
* Exact Gaussian data, VP and VE: 20 000 samples at the default tolerances have the exact mean and
  standard deviation at ``t_min`` within 5 standard errors of the sample itself plus the bias the
  tolerance allows (``b = 2 rel_tol |m|`` and ``2 rel_tol s``: the per-step error is held below
  ``rel_tol`` relative; measured biases are below 0.3 SE).
* Bookkeeping: ``nfe == 2 accepted + rejected`` (the drift at the current point is kept across a
  rejection).
"""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import DATA, exact_moments
from tests.helpers import empirical_order, format_table, gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}
TOLS = [0.1, 0.05, 0.02, 0.01]


def adaptive(rel_tol, **options):
    return S.get_sampler("adaptive_sde", rel_tol=rel_tol, abs_tol=rel_tol / 6.4, **options)


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_adaptive_sde_strong_error_falls_like_nfe_to_the_minus_1(sde_key):
    sde = SDES[sde_key]
    den = gmm_2d().denoiser(sde)
    x_T = sde.prior_sample(
        (128, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    noise = S.BrownianNoise(seed=7)
    ref = S.sample("euler_maruyama", den, x_T=x_T, n_steps=2**14, noise=noise, progress=False).x
    nfe, errors = [], []
    for tol in TOLS:
        res = S.sample(adaptive(tol), den, x_T=x_T, n_steps=1, noise=noise, progress=False)
        assert res.nfe == 2 * res.stats["accepted_steps"] + res.stats["rejected_steps"]
        nfe.append(res.nfe)
        errors.append((res.x - ref).norm(dim=1).mean().item())
    table = format_table(nfe, errors)
    assert all(b < a for a, b in zip(errors[:-1], errors[1:], strict=True)), table
    p = empirical_order(nfe, errors)
    assert abs(p - 1) <= 0.3, f"{sde_key}: error ~ NFE^-{p:.3f}\n{table}"


@pytest.mark.parametrize("sde_key", ["ve", "vp"])
def test_adaptive_sde_samples_have_the_exact_mean_and_std(sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler("adaptive_sde")
    N = 20_000
    m, v = exact_moments(sde, sde.t_min)
    gen = torch.Generator().manual_seed(3)
    x_T = DATA.sample_marginal(sde, sde.T, N, generator=gen)
    res = S.sample(sampler, DATA.denoiser(sde), x_T=x_T, n_steps=1, generator=gen, progress=False)
    x = res.x.flatten()
    mean, std = float(x.mean()), float(x.std())
    m4 = float(((x - x.mean()) ** 4).mean())
    se_mean, se_std = std / N**0.5, ((m4 - std**4) / N) ** 0.5 / (2 * std)
    b = 2 * sampler.rel_tol
    msg = f"{sde_key}: sample ({mean:.5f}, {std:.5f}), exact ({m:.5f}, {v**0.5:.5f}), {res.nfe} NFE"
    assert abs(mean - m) <= 5 * se_mean + b * abs(m), msg
    assert abs(std - v**0.5) <= 5 * se_std + b * v**0.5, msg
