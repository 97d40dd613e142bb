"""SA-Solver's strong and weak orders beyond the registry-wide suites (which check the default
options: strong order 1/2 from the default ``tau``'s switches inside steps).

* Strong order 1 with a constant noise amount, for the lowest and the highest orders: the method
  of ``test_sde_strong_order.py`` (shared Brownian path, 2^12-step reference, 128 paths, VP,
  band 0.3).
* Weak order on VP, VE and DDPM-linear: the exact discrete-time bias on Gaussian data
  (``test_sde_weak_order.py``'s probe method, band 0.25, its step counts per order) on grids
  uniform in ``lambda_``, where every step has the same ``h`` and the asymptotic rate shows from
  64 steps (on VP's uniform-in-t grid the last steps are long in ``lambda_`` until a few
  thousand steps). The corrector decides the order: ``corrector_order = 1`` (the implicit-Euler
  corrector) gives 1, higher ones 2, whatever the predictor (the interpolated ``x0`` is only
  Hölder-1/2 along the path, so the weak rate of the stochastic scheme stops at 2).
"""

import pytest
import torch

import scoresde as S
from tests.convergence.test_sde_weak_order import STEP_COUNTS, discrete_moments, exact_moments
from tests.helpers import empirical_order, format_table, gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


@pytest.mark.parametrize("orders", [(1, 1), (3, 4)])
def test_sa_solver_has_strong_order_1_with_a_constant_tau(orders):
    sde = S.VPSDE()
    den = gmm_2d().denoiser(sde)
    sampler = S.get_sampler("sa_solver", predictor_order=orders[0], corrector_order=orders[1],
                            tau=1.0)  # fmt: skip
    assert sampler.order == 1
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
    assert abs(p - 1) <= 0.3, f"strong order {p:.3f}\n{format_table(counts, errors)}"


OPTIONS = {
    "default": {},
    "tau=1": {"tau": 1.0},
    "p2c1": {"predictor_order": 2, "corrector_order": 1},
    "p3c4": {"predictor_order": 3, "corrector_order": 4},
}


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_sa_solver_has_its_declared_weak_order(name, sde_key):
    sde = SDES[sde_key]
    sampler = S.get_sampler("sa_solver", **OPTIONS[name])
    counts = STEP_COUNTS[sampler.weak_order]
    m, v = exact_moments(sde, sde.t_min)
    errors = []
    for n in counts:
        m_n, v_n = discrete_moments(sampler, n, sde, S.UniformLambda())
        errors.append(abs(m_n - m) + abs(v_n - v))
    table = format_table(counts, errors)
    assert all(1e-9 < e < 1 for e in errors), table
    p = empirical_order(counts, errors)
    assert abs(p - sampler.weak_order) <= 0.25, f"weak order {p:.3f}\n{table}"
