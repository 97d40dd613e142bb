"""ODE backends and the adaptive DPM-Solver against the reference PF-ODE solution.

Reference: ``scoresde.exact.reference_solution`` (scipy DOP853, rtol = atol = 1e-10) on the 2-D
mixture ``gmm_2d``, float64.

Tolerance of the adaptive backends (torchdiffeq dopri5, scipy RK45 and DOP853, which all solve
``dy/dlambda = x0 - y`` in ``y = x/alpha``): error-per-step control keeps the local error of every
accepted step below ``atol + rtol |y|`` (weighted RMS <= 1; Hairer, Nørsett & Wanner, Sec. II.4).
The global error is the sum of those local errors carried to the end by the flow. The scaled flow
preserves relative perturbations exactly for Gaussian data (a perturbation obeys the same linear
ODE as ``y - mean``), and for the mixture it contracts ``y`` from the prior's scale to the data's,
so a local error carried to the end is bounded by ``atol + rtol max|y_end|``, and the global error
by ``N_accepted (atol + rtol max|y_end|)``, with ``x = alpha y`` at ``t_min``. Measured errors lie
10-90x below this bound at the tolerances used here.

The adaptive DPM-Solver controls ``max(atol, rtol |x|)`` per step; with an embedded pair of orders
``(p - 1, p)`` and local extrapolation its global error scales like the tolerance (the accepted
local error is ``O(tol^{(p+1)/p})`` over ``O(tol^{-1/p})`` steps), so each tenfold tightening must
cut the error by at least ``10^0.5`` (half the predicted exponent, leaving room for the integer
step counts).
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.samplers.backends import TORCHDIFFEQ_FIXED
from tests.helpers import format_table, gmm_2d, reference_solution

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


@pytest.fixture(scope="module")
def problems():
    data = gmm_2d()
    out = {}
    for key, sde in SDES.items():
        x_T = sde.prior_sample(
            (16, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        out[key] = (sde, data.denoiser(sde, "eps"), x_T, reference_solution(data, sde, x_T).x)
    return out


@pytest.mark.parametrize("tol", [1e-5, 1e-7])
@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize(
    "key, method", [("torchdiffeq", "dopri5"), ("scipy", "RK45"), ("scipy", "DOP853")]
)
def test_adaptive_backend_agrees_with_the_reference_within_its_tolerance(
    problems, key, method, sde_key, tol
):
    sde, den, x_T, ref = problems[sde_key]
    sampler = S.get_sampler(key, method=method, rtol=tol, atol=tol)
    res = S.sample(sampler, den, x_T=x_T, n_steps=1, progress=False)
    accepted = res.stats["accepted_steps"]
    y_end = res.x / sde.alpha(sde.t_min)
    bound = float(sde.alpha(sde.t_min)) * accepted * (tol + tol * y_end.abs().max().item())
    err = (res.x - ref).abs().max().item()
    assert 0 < err <= bound, (
        f"{key}/{method}: max error {err:.3e} > bound {bound:.3e} ({accepted} steps)"
    )
    assert res.nfe >= accepted  # every accepted step evaluated the model at least once


def test_backend_trajectory_is_the_solution_at_the_grid_times(problems):
    """Dense output at interior grid times, mapped back by ``x = alpha y``."""
    sde, den, x_T, _ = problems["vp"]
    data = gmm_2d()
    ts = S.UniformLambda().grid(sde, 4)
    for key, method in [("torchdiffeq", "dopri5"), ("scipy", "DOP853")]:
        sampler = S.get_sampler(key, method=method, rtol=1e-9, atol=1e-9)
        res = S.sample(
            sampler, den, x_T=x_T, grid=S.Explicit(ts), save_trajectory=True, progress=False
        )
        assert res.trajectory.shape == (5, *x_T.shape)
        torch.testing.assert_close(res.trajectory[0], x_T, rtol=0, atol=0)
        for k in (1, 2):
            mid = reference_solution(data, sde, x_T, t_end=float(ts[k])).x
            # the dense-output interpolant is accurate to the tolerance; 1e-9 * 100 steps
            torch.testing.assert_close(res.trajectory[k], mid, rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", sorted(TORCHDIFFEQ_FIXED))
def test_torchdiffeq_fixed_methods_step_on_the_grid_and_count_their_nfe(problems, method):
    sde, den, x_T, _ = problems["vp"]
    n = 7
    sampler = S.get_sampler("torchdiffeq_fixed", method=method)
    res = S.sample(sampler, den, x_T=x_T, n_steps=n, progress=False)
    assert res.nfe == sampler.nfe(n) == TORCHDIFFEQ_FIXED[method][1] * n


def test_torchdiffeq_euler_is_euler_on_the_lambda_grid(problems):
    """One Euler step of ``dy/dlambda = x0 - y`` per interval of the sampling grid, no more: the
    fixed grid is the sampling grid, not torchdiffeq's output times (torchdiffeq issue #137)."""
    sde, den, x_T, _ = problems["ve"]
    ts = S.Karras().grid(sde, 9)
    lam = sde.lambda_(ts)
    y = x_T / sde.alpha(ts[0])
    for i in range(9):
        y = y + (lam[i + 1] - lam[i]) * (den.predict(sde.alpha(ts[i]) * y, ts[i]).x0 - y)
    sampler = S.get_sampler("torchdiffeq_fixed", method="euler")
    res = S.sample(sampler, den, x_T=x_T, grid=S.Explicit(ts), progress=False)
    torch.testing.assert_close(res.x, sde.alpha(ts[-1]) * y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order, tols", [(3, [1e-3, 1e-4, 1e-5]), (2, [1e-2, 1e-3, 1e-4])])
def test_adaptive_dpm_solver_error_falls_with_its_tolerance(problems, order, tols):
    sde, den, x_T, ref = problems["vp"]
    errors, rows = [], []
    for tol in tols:
        sampler = S.get_sampler("dpm_solver_adaptive", order=order, rtol=tol, atol=tol)
        res = S.sample(sampler, den, x_T=x_T, n_steps=1, progress=False)
        acc, rej = res.stats["accepted_steps"], res.stats["rejected_steps"]
        # a rejected attempt reuses the model output at its start point
        assert res.nfe == order * acc + (order - 1) * rej
        err = (res.x - ref).abs().max().item()
        bound = acc * max(tol, tol * res.x.abs().max().item())
        assert err <= bound, f"error {err:.3e} above N_accepted * tolerance = {bound:.3e}"
        errors.append(err)
        rows.append(res.nfe)
    table = format_table(rows, errors)
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert fine <= coarse / math.sqrt(10), (
            f"DPM-Solver-{order - 1}{order} (NFE, error):\n{table}"
        )
