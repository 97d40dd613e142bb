"""Algebraic identities between first-order samplers, to float64 rounding.

- DDIM (eta = 0) and DPM-Solver-1 are one update (``DDIM`` subclasses ``DPMSolver1``); the test
  compares both with DDIM written from its paper (Song, Meng & Ermon 2021, eq. 12 with
  ``sigma_t = 0``: ``x_{t-1} = alpha_{t-1} x0 + sigma_{t-1} eps``) and with DPM-Solver++(1), whose
  coefficients come from the data-prediction form ``(sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) x0``.
- DDIM is Euler's method on the PF-ODE in ``y = x/alpha``, ``s = sigma/alpha``:
  ``dy/ds = eps(alpha y, t(s))`` (Song, Meng & Ermon 2021, eq. 14; Karras et al. 2022, eq. 4).
- Stochastic DDIM with ``eta = 1`` draws from the DDPM posterior ``q(x_s | x_t, x0)`` (Ho et al.
  2020, eqs. 6-7, with ``1 - alpha_bar_t / alpha_bar_s`` in place of ``beta_t`` for skipped steps).

Tolerance: the updates are algebraically equal and differ only in rounding. Each step rounds at
the level of 1e-16 relative to the state, and the flow carries such errors forward with gains of
order ``1/alpha_T`` at most (x is divided by alpha_T ≈ 6e-3 in the scaled coordinates); over
n = 25 steps that stays below 1e-12 relative, the bound asserted.
"""

import math

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d

SDES = {
    "vp": S.VPSDE(),
    "subvp": S.SubVPSDE(),
    "ve": S.VESDE(),
    "ddpm": S.DiscreteVPSDE.linear(),
}
PARAMETERIZATIONS = ["eps", "x0", "v", "score"]
N = 25
RTOL = ATOL = 1e-12


def run(key, sde, param, x_T, grid=None, **options):
    den = gmm_2d().denoiser(sde, param)
    sampler = S.get_sampler(key, **options)
    return S.sample(
        sampler, den, x_T=x_T, n_steps=N, grid=grid or S.UniformLambda(), progress=False
    )


def prior(sde, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return sde.prior_sample((16, 2), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_ddim_dpm_solver_1_and_dpm_solver_pp_1_are_one_update(sde_key, param):
    sde = SDES[sde_key]
    x_T = prior(sde)
    ddim = run("ddim", sde, param, x_T).x
    torch.testing.assert_close(run("dpm_solver_1", sde, param, x_T).x, ddim, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(
        run("dpm_solver_pp_1", sde, param, x_T).x, ddim, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_ddim_matches_its_paper_update(sde_key):
    sde = SDES[sde_key]
    x_T = prior(sde)
    den = gmm_2d().denoiser(sde, "eps")
    ts = S.Karras().grid(sde, N)
    x = x_T.clone()
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        pred = den.predict(x, t)
        x = sde.alpha(t_next) * pred.x0 + sde.sigma(t_next) * pred.eps
    res = run("ddim", sde, "eps", x_T, grid=S.Karras())
    torch.testing.assert_close(res.x, x, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_ddim_is_euler_on_the_pf_ode_in_scaled_coordinates(sde_key):
    sde = SDES[sde_key]
    x_T = prior(sde)
    den = gmm_2d().denoiser(sde, "x0")
    ts = S.UniformTime().grid(sde, N)
    s = torch.exp(-sde.lambda_(ts))  # sigma / alpha
    y = x_T / sde.alpha(ts[0])
    for i in range(N):
        eps = den.predict(sde.alpha(ts[i]) * y, ts[i]).eps
        y = y + (s[i + 1] - s[i]) * eps
    res = run("ddim", sde, "x0", x_T, grid=S.UniformTime())
    torch.testing.assert_close(res.x, sde.alpha(ts[-1]) * y, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("key", ["ddim", "ddim_stochastic"])
def test_ddim_with_eta_1_samples_the_ddpm_posterior(key):
    """Both registry entries with ``eta = 1`` on the discrete DDPM schedule at its train steps."""
    sde = SDES["ddpm"]
    x_T = prior(sde)
    den = gmm_2d().denoiser(sde, "eps")
    ts = S.UniformTime().grid(sde, N)
    gen = torch.Generator().manual_seed(5)
    res = S.sample(S.get_sampler(key, eta=1.0), den, x_T=x_T, grid=S.Explicit(ts), generator=gen,
                   progress=False)  # fmt: skip
    # the same normal draws, in the order the sampler consumes them (after the prior: x_T given)
    noise = S.GaussianNoise(torch.Generator().manual_seed(5))
    x = x_T.clone()
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        abar_t, abar_s = sde.alpha(t) ** 2, sde.alpha(t_next) ** 2
        beta = 1.0 - abar_t / abar_s
        x0 = den.predict(x, t).x0
        mean = (abar_s.sqrt() * beta / (1 - abar_t)) * x0 + (
            (1 - beta).sqrt() * (1 - abar_s) / (1 - abar_t)
        ) * x
        var = (1 - abar_s) / (1 - abar_t) * beta
        x = mean + var.sqrt() * noise(float(t), float(t_next), x)
    torch.testing.assert_close(res.x, x, rtol=RTOL, atol=ATOL)


def test_ddim_without_eta_consumes_no_noise():
    """``eta = 0`` is deterministic: a noise source that fails when called is never called."""

    class Forbidden(S.NoiseSource):
        def __call__(self, t, t_next, like):
            raise AssertionError("deterministic DDIM drew noise")

    sde = SDES["vp"]
    res = S.sample("ddim", gmm_2d().denoiser(sde), x_T=prior(sde), n_steps=5, noise=Forbidden(),
                   progress=False)  # fmt: skip
    assert math.isfinite(res.x.abs().max().item())
