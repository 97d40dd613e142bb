"""``sa_solver`` reproduces diffusers' ``SASolverScheduler`` on the same DDPM-linear schedule, the
same timesteps, the same exact model and the same noise draws.

Both sides draw their noise from one seeded CPU generator, one standard normal per step in the
same order (diffusers' ``step(..., generator=)`` and our ``GaussianNoise(generator)`` both call
``torch.randn`` with it), so the two runs see identical noise. The model is the closed-form
``eps`` of ``gmm_2d`` (``tests/parity/diffusers_loop.py``). diffusers' ``tau_func`` takes the
integer train step ``k``; ours takes continuous time ``t = (k + 1) / N``, so the same function is
passed through that map.

Tolerances. With diffusers' schedule tables upcast to float64 both sides do float64 arithmetic in
a different order, and ours integrates the Lagrange weights by quadrature where diffusers expands
them in monomials of ``lambda_``: the monomial form loses ``~(|lambda_| / h)^{p-1} <= 1e4`` times
the float64 rounding of ``1e-16`` per coefficient, so ``<= 1e-12`` over 20 steps; we assert
``1e-10`` (measured ``<= 5e-15``). With diffusers' own float32 ``sigmas`` (relative rounding
``6e-8``), the coefficients built from ``lambda_`` differences over steps ``h >= 0.1`` carry
relative errors ``<= 6e-8 * 3 / h ~ 2e-6``: bound ``1e-5`` (measured ``1.4e-7``).
"""

from __future__ import annotations

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d

diffusers = pytest.importorskip("diffusers", reason="parity with diffusers needs diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")

from tests.parity.diffusers_loop import schedule_of, upcast  # noqa: E402


def train_step_tau(t: float) -> float:
    """diffusers' default ``tau_func`` (1 on train steps 200-800) in continuous time."""
    return 1.0 if 200 <= round(t * 1000 - 1) <= 800 else 0.0


def diffusers_default_tau(k):
    return 1 if 200 <= k <= 800 else 0


def run_both(config: dict, options: dict, m: int, *, float64: bool = True):
    scheduler = diffusers.SASolverScheduler(**config)
    sde = schedule_of(scheduler)
    den = gmm_2d().denoiser(sde, "eps")
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scheduler.set_timesteps(m)
    if float64:
        upcast(scheduler)
    gen = torch.Generator().manual_seed(5)
    x_ref = x_T.clone()
    for k in scheduler.timesteps:
        eps = den.eps(x_ref, sde.index_to_t(float(k)))
        x_ref = scheduler.step(eps, k, x_ref, generator=gen).prev_sample
    ts = S.DiscreteSpacing("linspace", final="t_min").grid(sde, m)
    res = S.sample(S.get_sampler("sa_solver", **options), den, x_T=x_T.clone(), grid=S.Explicit(ts),
                   generator=torch.Generator().manual_seed(5), progress=False)  # fmt: skip
    assert res.nfe == len(scheduler.timesteps) == m
    return ((res.x - x_ref).norm() / x_ref.norm()).item()


@pytest.mark.parametrize("corrector_order", [1, 2, 3, 4])
@pytest.mark.parametrize("predictor_order", [1, 2, 3, 4])
def test_sa_solver_reproduces_diffusers_at_every_order_pair(predictor_order, corrector_order):
    """Default ``tau`` (1 on train steps 200-800), 10 steps: the warm-up, the order-2 extra
    term and ``lower_order_final`` are all exercised."""
    orders = dict(predictor_order=predictor_order, corrector_order=corrector_order)
    rel = run_both({**orders, "tau_func": diffusers_default_tau}, {**orders, "tau": train_step_tau},
                   10)  # fmt: skip
    assert rel <= 1e-10, f"relative difference {rel:.3e}"


@pytest.mark.parametrize("lower_order_final", [True, False])
@pytest.mark.parametrize("tau", [0.0, 0.7, 1.5])
def test_sa_solver_reproduces_diffusers_with_constant_tau_over_20_steps(tau, lower_order_final):
    """Constant noise amounts, including the ODE (``tau = 0``), with and without
    ``lower_order_final``."""
    orders = dict(predictor_order=3, corrector_order=4, lower_order_final=lower_order_final)
    rel = run_both({**orders, "tau_func": lambda k: tau}, {**orders, "tau": tau}, 20)
    assert rel <= 1e-10, f"relative difference {rel:.3e}"


def test_sa_solver_matches_diffusers_float32_tables_within_their_rounding():
    rel = run_both({"tau_func": diffusers_default_tau}, {"tau": train_step_tau}, 10,
                   float64=False)  # fmt: skip
    assert rel <= 1e-5, f"relative difference {rel:.3e}"
