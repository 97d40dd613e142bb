"""Orders of the DPM-Solver options that the registry-wide order test does not reach.

- ``variant="reference"`` of ``dpm_solver_3m`` / ``dpm_solver_pp_3m`` is the third-order multistep
  update of Lu et al.'s code (also diffusers' and k-diffusion's): its second-difference term has
  half the Taylor weight, a local error ``O(h^3)``, so it converges at order 2 (its declared
  order), not 3. The default ``variant="taylor"`` is measured at order 3 in
  ``test_ode_order.py``. Same problem, error and band as there (gmm_2d, VP, logSNR-uniform grid,
  32 draws, least-squares slope within 0.25; step counts of order 2 keep errors in [1e-9, 1]).
- The per-step orders: warm-up ``min(order, i + 1)``; with ``lower_order_final=True`` on grids of
  fewer than 10 steps, ``min(order, n - i)`` (the reference implementation's rule); with the
  default ``"auto"``, order 1 on a step longer than 1.5x the previous one in ``lambda_`` and at
  most 2 on a step longer than 1 (the geometric rule), whatever the step count.
"""

import pytest
import torch

import scoresde as S
from tests.helpers import empirical_order, format_table, gmm_2d, reference_solution

COUNTS = [16, 32, 64, 128, 256]


@pytest.mark.parametrize("key", ["dpm_solver_3m", "dpm_solver_pp_3m"])
def test_reference_variant_of_third_order_multistep_converges_at_order_2(key):
    sde = S.VPSDE()
    data = gmm_2d()
    x_T = sde.prior_sample((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = reference_solution(data, sde, x_T).x
    sampler = S.get_sampler(key, variant="reference")
    assert sampler.order == 2
    errors = []
    for n in COUNTS:
        res = S.sample(
            sampler, data.denoiser(sde), x_T=x_T, n_steps=n, grid=S.UniformLambda(), progress=False
        )
        errors.append((res.x - ref).norm(dim=1).mean().item())
    p = empirical_order(COUNTS, errors)
    assert abs(p - 2) <= 0.25, (
        f"{key} (reference variant): measured order {p:.3f}\n{format_table(COUNTS, errors)}"
    )


COUNT = {"lower_order_final": True}


@pytest.mark.parametrize(
    "key, options, n, orders",
    [
        ("dpm_solver_3m", COUNT, 6, [1, 2, 3, 3, 2, 1]),
        ("dpm_solver_3m", {"lower_order_final": False}, 6, [1, 2, 3, 3, 3, 3]),
        ("dpm_solver_3m", COUNT, 10, [1, 2] + [3] * 8),
        ("dpm_solver_pp_2m", COUNT, 4, [1, 2, 2, 1]),
        ("dpm_solver_3s", {}, 5, [3, 3, 3, 2, 1]),
        ("dpm_solver_2s", {}, 12, [2] * 12),
    ],
)
def test_step_orders_follow_warm_up_and_lower_order_final(key, options, n, orders):
    sampler = S.get_sampler(key, **options)
    assert sampler.step_orders(n) == orders


@pytest.mark.parametrize(
    "key, h, orders",
    [
        # uniform steps: only the warm-up, at any count (the declared order is kept)
        ("dpm_solver_3m", [0.5] * 6, [1, 2, 3, 3, 3, 3]),
        ("dpm_solver_pp_2m", [2.0] * 4, [1, 2, 2, 2]),
        # a last step 4x the one before (time-uniform grids): first order there
        ("dpm_solver_pp_2m", [0.5, 0.5, 0.5, 2.0], [1, 2, 2, 1]),
        ("dpm_solver_pp_3m", [0.5, 0.5, 0.5, 0.7, 2.0], [1, 2, 3, 3, 1]),
        # steps longer than 1 in lambda_: at most second order
        ("dpm_solver_3m", [1.2] * 5, [1, 2, 2, 2, 2]),
        ("deis_3", [1.2, 1.2, 1.2, 0.9, 0.9], [1, 2, 2, 3, 3]),
        ("unipc", [0.5, 0.5, 1.0, 1.0], [1, 2, 1, 2]),
    ],
)
def test_auto_step_orders_follow_the_grid_geometry(key, h, orders):
    sampler = S.get_sampler(key)
    assert sampler.lower_order_final == "auto"
    assert sampler.step_orders(len(h), torch.tensor(h, dtype=torch.float64)) == orders
