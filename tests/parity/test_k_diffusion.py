"""Parity with k-diffusion's DPM-Solver implementations on the same inputs (float64).

k-diffusion (Crowson) works in the variance-exploding coordinates ``y = x / alpha`` with noise
level ``sigma_ve = sigma / alpha = e^{-lambda}``, and its model returns ``x0``. The same exact
denoiser is wrapped as ``model(y, sigma_ve) = x0(alpha(t) y, t)`` with ``t = t(lambda)``, both
sides start from the same prior draw, and k-diffusion's result is mapped back by ``x = alpha y``.
Exponential integrators are invariant under this change of coordinates, so the results agree up
to rounding.

Compared: ``sample_dpmpp_2m`` with ``dpm_solver_pp_2m``; ``DPMSolver.dpm_solver_{1,2,3}_step``
with ``dpm_solver_1``, ``dpm_solver_2s``, ``dpm_solver_3s``; ``sample_dpm_fast`` (orders
``3, ..., 3, 2, 1``) with ``dpm_solver_3s(lower_order_final=True)`` on fewer than 10 steps.

Tolerance: 1e-12 relative, from float64 rounding (1e-16 per operation) amplified by at most
``1/alpha_T`` ≈ 150 through the coordinate change and accumulated over at most 20 steps.

k-diffusion's ``sampling.py`` is loaded without its package's heavy imports by the ``kd`` fixture
(``tests/parity/conftest.py``); the tests skip when k-diffusion is not installed.
"""

import pytest
import torch

import scoresde as S
from tests.helpers import gmm_2d

RTOL = ATOL = 1e-12


SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


class VEModel:
    """Our denoiser as a k-diffusion model ``model(y, sigma_ve) -> x0``."""

    def __init__(self, sde, param="eps"):
        self.sde = sde
        self.den = gmm_2d().denoiser(sde, param)

    def __call__(self, y, sigma):
        t = self.sde.inverse_lambda(-sigma.log())
        alpha = self.sde.alpha(t)[:, None]
        return self.den.predict(alpha * y, t).x0


def setup(sde_key, n, grid=None):
    sde = SDES[sde_key]
    ts = (grid or S.UniformLambda()).grid(sde, n)
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return sde, ts, x_T, x_T / sde.alpha(ts[0])


def ours(key, sde, ts, x_T, param="eps", **options):
    den = gmm_2d().denoiser(sde, param)
    return S.sample(
        S.get_sampler(key, **options), den, x_T=x_T, grid=S.Explicit(ts), progress=False
    ).x


@pytest.mark.parametrize("param", ["eps", "v"])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_dpm_solver_pp_2m_matches_k_diffusion(kd, sde_key, param):
    sde, ts, x_T, y_T = setup(sde_key, 20, S.Karras())
    sigmas = torch.exp(-sde.lambda_(ts))
    y = kd.sample_dpmpp_2m(VEModel(sde, param), y_T, sigmas, disable=True)
    expected = sde.alpha(ts[-1]) * y
    torch.testing.assert_close(
        ours("dpm_solver_pp_2m", sde, ts, x_T, param), expected, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("key, k_step", [("dpm_solver_1", "dpm_solver_1_step"),
                                         ("dpm_solver_2s", "dpm_solver_2_step"),
                                         ("dpm_solver_3s", "dpm_solver_3_step")])  # fmt: skip
def test_singlestep_dpm_solver_matches_k_diffusion_steps(kd, key, k_step, sde_key):
    sde, ts, x_T, y = setup(sde_key, 12)
    solver = kd.DPMSolver(VEModel(sde))
    lam = sde.lambda_(ts)
    for i in range(ts.numel() - 1):
        y, _ = getattr(solver, k_step)(y, lam[i], lam[i + 1])
    torch.testing.assert_close(ours(key, sde, ts, x_T), sde.alpha(ts[-1]) * y, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_lower_order_final_matches_dpm_solver_fast(kd, sde_key, float64):
    """DPM-Solver-fast with NFE = 3k takes k + 1 logSNR-uniform steps of orders 3, ..., 3, 2, 1
    (Lu et al. 2022a, Sec. 3.4): our ``dpm_solver_3s`` with ``lower_order_final`` on k + 1 < 10
    steps."""
    k = 6
    sde, ts, x_T, y_T = setup(sde_key, k + 1)
    sigma_max, sigma_min = (float(s) for s in torch.exp(-sde.lambda_(ts[[0, -1]])))
    y = kd.sample_dpm_fast(VEModel(sde), y_T, sigma_min, sigma_max, 3 * k, disable=True)
    sampler = S.get_sampler("dpm_solver_3s", lower_order_final=True)
    assert sampler.nfe(k + 1) == 3 * k
    torch.testing.assert_close(
        ours("dpm_solver_3s", sde, ts, x_T), sde.alpha(ts[-1]) * y, rtol=RTOL, atol=ATOL
    )
