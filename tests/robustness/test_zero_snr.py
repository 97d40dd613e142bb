"""Zero terminal SNR and rectified flow: every registry sampler starts from pure noise.

Property, for every key of ``SAMPLERS``, on schedules with ``alpha(T) = 0`` (a DDPM schedule
rescaled to zero terminal SNR with a v-prediction model, rectified flow with a flow (velocity)
model and with an x0 model) and the exact Gaussian-mixture model: sampling from ``T`` itself
gives finite samples, the measured NFE is ``sampler.nfe(n)`` for samplers that step from
``alpha = 0`` themselves and ``1 + sampler.nfe(n - 1)`` for the others (one network call for the
``lambda -> -inf`` limit step), and the trajectory and callbacks still cover every grid time.
The limit step itself is checked against its formula ``alpha_1 x0 + sigma_1 eps`` (deterministic)
to float64 rounding.
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from tests.helpers import gmm_2d

PROBLEMS = {
    "zero_snr_v": (S.DiscreteVPSDE.scaled_linear(rescale_betas_zero_snr=True), "v"),
    "rf_flow": (S.RectifiedFlow(), "flow"),
    "rf_x0": (S.RectifiedFlow(), "x0"),
}
N_STEPS = 6


def grid_for(sde):
    return S.DiscreteSpacing("trailing") if isinstance(sde, S.DiscreteVPSDE) else S.UniformTime()


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("key", sorted(SAMPLERS))
def test_every_sampler_runs_finite_from_pure_noise(key, problem):
    sde, parameterization = PROBLEMS[problem]
    den = gmm_2d().denoiser(sde, parameterization)
    sampler = S.get_sampler(key)
    gen = torch.Generator().manual_seed(0)
    x_T = sde.prior_sample((8, 2), generator=gen, dtype=torch.float64)
    seen = []
    res = S.sample(sampler, den, x_T=x_T, grid=grid_for(sde), n_steps=N_STEPS, progress=False,
                   generator=torch.Generator().manual_seed(1), save_trajectory=True,
                   callback=lambda info: seen.append(info.i))  # fmt: skip
    assert torch.isfinite(res.x).all(), f"{key} on {problem}: non-finite samples"
    if sampler.nfe_per_step is not None:
        expected = (sampler.nfe(N_STEPS) if sampler.zero_snr_start
                    else 1 + sampler.nfe(N_STEPS - 1))  # fmt: skip
        assert res.nfe == expected
    assert ("zero_snr_start" in res.stats) is not sampler.zero_snr_start
    if res.trajectory is not None:
        assert res.trajectory.shape[0] == N_STEPS + 1 and torch.equal(res.trajectory[0], x_T)
    if type(sampler).run is S.Sampler.run:
        assert seen == list(range(N_STEPS))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_the_first_step_is_the_ddim_limit_with_the_models_x0(problem):
    """From alpha = 0, x_1 = alpha_1 x0(x_T) + sigma_1 x_T / sigma_T: the DDIM step, which every
    exponential integrator's first step tends to as lambda_T -> -inf."""
    sde, parameterization = PROBLEMS[problem]
    den = gmm_2d().denoiser(sde, parameterization)
    x_T = sde.prior_sample((8, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = grid_for(sde).grid(sde, N_STEPS)
    res = S.sample("dpm_solver_pp_2m", den, x_T=x_T, grid=S.Explicit(ts), save_trajectory=True,
                   progress=False)  # fmt: skip
    x0 = gmm_2d().x0(x_T, ts[0], sde)
    expected = sde.alpha(ts[1]) * x0 + sde.sigma(ts[1]) * x_T / sde.sigma(ts[0])
    torch.testing.assert_close(res.trajectory[1], expected, rtol=1e-12, atol=1e-12)
    assert float(sde.lambda_(ts[0])) == -math.inf


def test_a_one_step_run_from_pure_noise_is_the_limit_step():
    sde = S.RectifiedFlow()
    den = gmm_2d().denoiser(sde, "flow")
    x_T = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = S.sample("unipc", den, x_T=x_T, n_steps=1, progress=False, save_trajectory=True)
    x0 = gmm_2d().x0(x_T, 1.0, sde)
    torch.testing.assert_close(res.x, sde.t_min * x_T + (1 - sde.t_min) * x0, rtol=1e-12, atol=0)
    assert res.nfe == 1 and res.trajectory.shape[0] == 2


ADAPTIVE = sorted(k for k in SAMPLERS if S.get_sampler(k).nfe(1) is None)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("key", ADAPTIVE)
def test_adaptive_samplers_solve_the_first_interval_from_pure_noise(key, problem):
    """With ``n_steps`` omitted an adaptive sampler has one output interval, ``T -> t_min``. The
    limit step must not take all of it (that returns ``alpha x0(x_T) + sigma eps``, about the
    data mean, for 1 NFE): it ends where ``alpha/sigma = 1e-3`` and the sampler's own steps do
    the rest. Deterministic samplers are compared pathwise (median distance) with
    ``dpm_solver_pp_2m`` at 400 uniform-``t`` steps (its own error, against 800 steps: 2e-5 on
    rectified flow, 7e-4 on the discrete schedule) within 0.05, above the default tolerances'
    error (measured 4e-5 to 2e-3); the collapsed answer is ~1.3 off. ``adaptive_sde`` is compared in law: per-coordinate mean and std of 2000 samples
    against the exact marginal at ``t_min`` within 5 SE plus 0.03 for its discretisation bias
    at the default tolerances (measured: means within 0.8 SE, stds within 0.015)."""
    sde, parameterization = PROBLEMS[problem]
    data = gmm_2d()
    den = data.denoiser(sde, parameterization)
    sampler = S.get_sampler(key)
    n = 2000 if sampler.stochastic else 64
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    res = S.sample(sampler, den, x_T=x_T, progress=False, save_trajectory=True,
                   noise=S.BrownianNoise(seed=1),
                   callback=lambda info: seen.append((info.i, info.t, info.t_next)))  # fmt: skip
    assert res.nfe > 10 and res.trajectory.shape[0] == 2 and torch.equal(res.trajectory[0], x_T)
    assert seen == [(0, float(res.ts[0]), float(res.ts[1]))]  # the output interval, T -> t_min
    assert res.stats["zero_snr_start"] in ("ancestral", "ddim")
    if not sampler.stochastic:
        ref = S.sample("dpm_solver_pp_2m", den, x_T=x_T, grid=S.UniformTime(), n_steps=400,
                       progress=False).x  # fmt: skip
        assert (res.x - ref).norm(dim=1).median() < 0.05
        return
    exact = data.sample_marginal(sde, float(res.ts[-1]), 200_000,
                                 generator=torch.Generator().manual_seed(2))  # fmt: skip
    se = exact.std(0) / math.sqrt(n)
    assert ((res.x.mean(0) - exact.mean(0)).abs() < 5 * se + 0.03).all()
    assert ((res.x.std(0) - exact.std(0)).abs() < 5 * se / math.sqrt(2) + 0.03).all()
