"""Stochastic samplers against peer implementations, on the same model, grid and noise.

* ``ancestral`` vs diffusers' ``DDPMScheduler(variance_type="fixed_large")`` (Ho et al. 2020,
  Alg. 2 with ``sigma_t^2 = beta_t``) on DDPM's linear schedule;
* ``sde_dpm_solver_1`` and ``sde_dpm_solver_pp_2m`` vs diffusers' ``DPMSolverMultistepScheduler``
  with ``algorithm_type="sde-dpmsolver"`` (order 1) and ``"sde-dpmsolver++"`` (order 2, midpoint);
* ``pc`` (reverse diffusion + Langevin corrector) vs diffusers' ``ScoreSdeVeScheduler``
  (``step_pred`` then ``step_correct``, score_sde's VE PC sampler);
* ``edm_stochastic`` vs k-diffusion's ``sample_heun`` with churn (Karras et al. 2022, Alg. 2).

The model is the exact Gaussian-mixture denoiser, given to the peer in its own parameterization
(eps, score, or a sigma-conditioned ``D(x; sigma)``). The peer draws the noise from the same seeded
generator in the same order, or is handed the noise ours drew.

Tolerance: diffusers computes in float32 (its schedule tables and, for the multistep scheduler,
the update itself). Its rounding, u = 6e-8, is amplified where it forms ``x0 = (x - sigma eps) /
alpha`` at the first DDPM steps (``1 / alpha`` ~ 110 at train step 950) and by ``|x|`` up to ~150
on VE's first steps, so agreement is to ``1e-4 (1 + |x|)`` (rtol = atol = 1e-4; measured
2e-6 to 3.4e-5 in absolute value; a wrong coefficient shows as 1e-2 or more). k-diffusion runs in
float64 on the VE-equivalent ``(y, s)`` coordinates ours uses, so there the tolerance is float64
rounding, 1e-12 (the only difference is ``t_hat`` through ``inverse_lambda``, exact to ~1e-15;
measured 2.4e-15).
"""

import pytest
import torch

import scoresde as S
from scoresde.noise import GaussianNoise
from scoresde.samplers import LangevinCorrector
from tests.helpers import gmm_2d

F32_TOL = dict(rtol=1e-4, atol=1e-4)


class Recording(GaussianNoise):
    """Gaussian noise that keeps every draw, to hand to a peer implementation."""

    def __init__(self, generator):
        super().__init__(generator)
        self.draws = []

    def _draw(self, like):
        z = super()._draw(like)
        self.draws.append(z)
        return z


def ddpm_grid(timesteps, N):
    """Our times for diffusers' train indices ``k`` (``t = (k + 1) / N``)."""
    return S.Explicit([(int(k) + 1) / N for k in timesteps])


def test_ancestral_matches_diffusers_ddpm_fixed_large():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                    variance_type="fixed_large", clip_sample=False,
                                    timestep_spacing="leading")  # fmt: skip
    sched.set_timesteps(20)
    sde = S.DiscreteVPSDE.linear()
    den = gmm_2d().denoiser(sde, "eps")
    timesteps = sched.timesteps.tolist()  # 950, 900, ..., 0
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    # our grid stops at train index 0 (t_min): diffusers' last step (to x0, no noise) is left out
    ours = S.sample("ancestral", den, x_T=x_T, grid=ddpm_grid(timesteps, sde.N),
                    generator=torch.Generator().manual_seed(1), progress=False).x  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    x = x_T
    for k in timesteps[:-1]:
        eps = den.eps(x, (k + 1) / sde.N)
        x = sched.step(eps, k, x, generator=gen).prev_sample
    torch.testing.assert_close(ours, x, **F32_TOL)


@pytest.mark.parametrize(
    "key, algorithm, order", [("sde_dpm_solver_1", "sde-dpmsolver", 1),
                              ("sde_dpm_solver_pp_2m", "sde-dpmsolver++", 2)]
)  # fmt: skip
def test_sde_dpm_solver_matches_diffusers(key, algorithm, order):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", algorithm_type=algorithm,
        solver_order=order, solver_type="midpoint", final_sigmas_type="sigma_min",
        lower_order_final=False,
    )  # fmt: skip
    sched.set_timesteps(20)
    sde = S.DiscreteVPSDE.linear()
    den = gmm_2d().denoiser(sde, "eps")
    timesteps = sched.timesteps.tolist()
    grid = S.Explicit([(int(k) + 1) / sde.N for k in timesteps] + [1 / sde.N])
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    noise = Recording(torch.Generator().manual_seed(1))
    options = {"lower_order_final": False} if order == 2 else {}
    ours = S.sample(S.get_sampler(key, **options), den, x_T=x_T, grid=grid, noise=noise,
                    progress=False).x  # fmt: skip
    x = x_T
    for k, z in zip(timesteps, noise.draws, strict=True):
        eps = den.eps(x, (k + 1) / sde.N)
        x = sched.step(eps, k, x, variance_noise=z).prev_sample
    torch.testing.assert_close(ours, x, **F32_TOL)


def test_pc_matches_diffusers_score_sde_ve():
    """Reverse diffusion + one Langevin step (snr 0.16) per level, VE, float32. The scheduler's
    levels are ``k / (M - 1)`` with ``M - 1 = 16``: exact in float32, so its ``long()`` indexing
    lands on level ``k``; its last step (to sigma = 0) is outside our grid and left out."""
    diffusers = pytest.importorskip("diffusers")
    sde = S.VESDE(sigma_min=0.01, sigma_max=50.0)
    M = 17
    sched = diffusers.ScoreSdeVeScheduler(snr=0.16, sigma_min=0.01, sigma_max=50.0)
    sched.set_timesteps(M)
    sched.set_sigmas(M)
    levels = [k / (M - 1) for k in range(M - 1, 0, -1)]  # 1, 15/16, ..., 1/16
    den = gmm_2d().denoiser(sde, "eps")
    sampler = S.get_sampler("pc", predictor="reverse_diffusion",
                            corrector=LangevinCorrector(snr=0.16, n_steps=1))  # fmt: skip
    x_T = 50.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    ours = S.sample(sampler, den, x_T=x_T, grid=S.Explicit(levels),
                    generator=torch.Generator().manual_seed(1), progress=False).x  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    x = x_T
    for t, t_next in zip(levels[:-1], levels[1:], strict=True):
        x = sched.step_pred(den.score(x, t), t, x, generator=gen).prev_sample
        x = sched.step_correct(den.score(x, t_next), x, generator=gen).prev_sample
    torch.testing.assert_close(ours, x, **F32_TOL)


# -------------------------------------------------------------------------------------------
# k-diffusion (its sampling.py loaded by the ``kd`` fixture of tests/parity/conftest.py)


@pytest.mark.parametrize("sde_key", ["vp", "ve"])
def test_edm_stochastic_matches_k_diffusion_heun_with_churn(kd, sde_key, monkeypatch):
    sde = {"vp": S.VPSDE(), "ve": S.VESDE()}[sde_key]
    den = gmm_2d().denoiser(sde, "eps")
    # Karras levels in s = sigma / alpha from 40 down to 0.05: inside both schedules' ranges, and
    # the churned levels (s <= S_tmax = 10, s_hat <= 14.2) stay below s(T), so no cap applies
    u = torch.linspace(0, 1, 13, dtype=torch.float64)
    levels = (40.0 ** (1 / 7) + u * (0.05 ** (1 / 7) - 40.0 ** (1 / 7))) ** 7  # EDM eq. 5
    ts = sde.inverse_lambda(-levels.log())
    options = dict(S_churn=4.0, S_tmin=0.1, S_tmax=10.0, S_noise=1.003)
    x_T = 40.0 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = x_T * sde.alpha(ts[0])
    noise = Recording(torch.Generator().manual_seed(1))
    ours = S.sample(S.get_sampler("edm_stochastic", **options), den, x_T=x_T, grid=S.Explicit(ts),
                    noise=noise, progress=False).x  # fmt: skip
    sigmas = torch.exp(-sde.lambda_(ts))
    churned = [options["S_tmin"] <= float(v) <= options["S_tmax"] for v in sigmas[:-1]]
    draws = iter(noise.draws)
    replay = [next(draws) if c else torch.zeros_like(x_T) for c in churned]
    monkeypatch.setattr(torch, "randn_like", lambda x: replay.pop(0))

    def model(y, sigma):
        t = sde.inverse_lambda(-sigma.log())
        return den.predict(sde.alpha(t)[:, None] * y, t).x0

    y = kd.sample_heun(model, x_T / sde.alpha(ts[0]), sigmas, disable=True,
                                s_churn=options["S_churn"], s_tmin=options["S_tmin"],
                                s_tmax=options["S_tmax"], s_noise=options["S_noise"])  # fmt: skip
    torch.testing.assert_close(ours / sde.alpha(ts[-1]), y, rtol=1e-12, atol=1e-12)
