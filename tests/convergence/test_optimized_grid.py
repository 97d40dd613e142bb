"""An ``Optimized`` grid beats the logSNR-uniform grid it starts from, on draws it never saw.

Problem: the 2-D mixture ``gmm_2d`` under DDPM's linear schedule (what most users have), the exact
``eps`` model, UniPC (the default options) and DEIS-3 at 8 steps. The grid is fitted on 16 prior
draws (seed 0) and evaluated on 128 held-out draws (seed 1) against the scipy DOP853 reference
(rtol = atol = 1e-10, far below the errors ~1e-2 compared here).

Property: the held-out mean error on the fitted grid is below the error on ``UniformLambda``
with the same sampler and NFE. No margin is assumed beyond "strictly below"; the measured
improvement is a factor of 3 to 7 (reported in the failure message). The fit never makes the
fitting draws worse (it returns the start if no better point is found), and the grid survives
``Explicit.save`` / ``load`` exactly.
"""

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d, reference_solution

N_STEPS = 8


@pytest.fixture(scope="module")
def problem():
    data = gmm_2d()
    sde = S.DiscreteVPSDE.linear()
    x_T = sde.prior_sample(
        (128, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    return data, sde, x_T, reference_solution(data, sde, x_T).x


@pytest.mark.parametrize("key", ["unipc", "deis_3"])
def test_optimized_grid_beats_uniform_lambda_on_held_out_draws(key, problem, tmp_path):
    data, sde, x_T, ref = problem
    den = data.denoiser(sde, "eps")
    grid = S.Optimized(key, den, shape=(16, 2), seed=0, max_evals=300)
    fitted = grid.fit(sde, N_STEPS)
    assert grid.last_fit["loss"] <= grid.last_fit["loss_start"]

    def held_out_error(g):
        res = S.sample(key, den, x_T=x_T, grid=g, n_steps=N_STEPS, progress=False)
        return (res.x - ref).norm(dim=1).mean().item()

    uniform = held_out_error(S.UniformLambda())
    optimized = held_out_error(fitted)
    assert optimized < uniform, f"{key}: optimized {optimized:.3e} vs UniformLambda {uniform:.3e}"

    fitted.save(tmp_path / "grid.pt")
    reloaded = S.Explicit.load(tmp_path / "grid.pt")
    torch.testing.assert_close(reloaded.grid(sde), fitted.grid(sde), rtol=0, atol=0)
    # used as a grid, it fits once per (sde, n_steps) and returns that fit
    torch.testing.assert_close(grid.grid(sde, N_STEPS), grid.grid(sde, N_STEPS), rtol=0, atol=0)
