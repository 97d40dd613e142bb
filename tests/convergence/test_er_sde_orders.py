"""ER-SDE-Solver's strong and weak orders for every ``solver_order`` (the registry-wide suites
check the default, 3), with the methods and bands of ``test_sde_strong_order.py`` (shared
Brownian path, 2^12-step reference, 128 paths, VP, band 0.3) and ``test_sde_weak_order.py``
(exact discrete-time bias on Gaussian data, band 0.25), here on VP, VE and DDPM-linear for the
weak order."""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import STEP_COUNTS, discrete_moments, exact_moments
from tests.helpers import empirical_order, format_table, gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


@pytest.mark.parametrize("solver_order", [1, 2])
def test_er_sde_has_strong_order_1_at_every_solver_order(solver_order):
    sde = S.VPSDE()
    den = gmm_2d().denoiser(sde)
    sampler = S.get_sampler("er_sde", solver_order=solver_order)
    x_T = sde.prior_sample(
        (128, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    noise = S.BrownianNoise(seed=7)

    def solve(n):
        return S.sample(sampler, den, x_T=x_T, n_steps=n, noise=noise, progress=False).x

    ref = solve(4096)
    counts = [16, 32, 64, 128, 256]
    errors = [(solve(n) - ref).norm(dim=1).mean().item() for n in counts]
    p = empirical_order(counts, errors)
    assert abs(p - sampler.order) <= 0.3, f"strong order {p:.3f}\n{format_table(counts, errors)}"


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("solver_order", [1, 2, 3])
def test_er_sde_has_its_declared_weak_order(solver_order, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler("er_sde", solver_order=solver_order)
    counts = STEP_COUNTS[sampler.weak_order]
    m, v = exact_moments(sde, sde.t_min)
    errors = []
    for n in counts:
        m_n, v_n = discrete_moments(sampler, n, sde)
        errors.append(abs(m_n - m) + abs(v_n - v))
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1 for e in errors), table
    p = empirical_order(counts, errors)
    assert abs(p - sampler.weak_order) <= 0.25, f"weak order {p:.3f}\n{table}"
