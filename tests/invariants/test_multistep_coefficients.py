"""Invariants of the DEIS / UniPC / PNDM coefficients and identities between the samplers.

Properties, all to float64 rounding (relative 1e-12: a few hundred operations of relative
rounding 1e-16, on coefficients of size <= 1e3):

- DEIS's quadrature integrates every polynomial of degree < q in its variable exactly: the
  weights of a step reproduce ``int p(v) d rho`` for ``p = 1, v, v^2`` against closed forms;
- the ``phi_k`` of UniPC match their closed forms;
- one step from ``T`` is the DDIM step for DEIS of every order and variable and for UniPC in both
  forms (a multistep method's first step has one evaluation; UniPC's corrector never runs after
  the final step); and DEIS in ``t`` equals DEIS in ``lambda_`` under the VE SDE, whose ``t`` is
  affine in ``lambda_``.
"""

import math

import pytest
import torch

import scoresde as S
from scoresde.samplers import SAMPLERS
from scoresde.samplers.exponential import deis_coefficients
from scoresde.samplers.unipc import phi
from tests.helpers import gmm_2d

SDES = {"vp": S.VPSDE(), "ve": S.VESDE(), "ddpm": S.DiscreteVPSDE.linear()}


def antiderivative(variable, power, lam):
    """``F`` with ``dF = v^power d rho`` as a function of ``lambda_`` (``rho = e^{-lambda_}``)."""
    rho = torch.exp(-lam)
    if variable == "rho":
        return rho ** (power + 1) / (power + 1)
    # int lambda^k d rho = -int lambda^k e^{-lambda} d lambda = e^{-lambda} sum_j k!/j! lambda^j
    return rho * sum(math.factorial(power) / math.factorial(j) * lam**j for j in range(power + 1))


@pytest.mark.parametrize("variable", ["lambda", "rho"])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_deis_quadrature_is_exact_on_polynomials_in_its_variable(sde_key, variable):
    sde = SDES[sde_key]
    ts = S.UniformLambda().grid(sde, 7)
    orders = [1, 2, 3, 3, 3, 3, 3]
    C = deis_coefficients(sde, ts, orders, variable)
    lam = sde.lambda_(ts)
    v = lam if variable == "lambda" else torch.exp(-lam)
    for i, q in enumerate(orders):
        for power in range(q):
            nodes = v[[i - j for j in range(q)]]
            got = (C[i, :q] * nodes**power).sum()
            want = antiderivative(variable, power, lam[i + 1]) - antiderivative(
                variable, power, lam[i]
            )
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_deis_weights_in_t_sum_to_the_ddim_weight_on_a_discrete_schedule():
    """``t`` on a DDPM schedule integrates piecewise between train steps; sum_j ell_j = 1."""
    sde = SDES["ddpm"]
    ts = S.DiscreteSpacing("linspace").grid(sde, 9)
    C = deis_coefficients(sde, ts, [1, 2, 3, 3, 3, 3, 3, 3, 3], "t")
    rho = torch.exp(-sde.lambda_(ts))
    torch.testing.assert_close(C.sum(1), rho[1:] - rho[:-1], rtol=1e-12, atol=0)


def test_phi_functions_match_their_closed_forms():
    z = torch.tensor([-10.0, -3.0, -0.5, -0.1, 0.1, 0.5, 3.0], dtype=torch.float64)
    e = torch.expm1(z)
    torch.testing.assert_close(phi(0, z), torch.exp(z), rtol=1e-14, atol=0)
    torch.testing.assert_close(phi(1, z), e / z, rtol=1e-13, atol=0)
    torch.testing.assert_close(phi(2, z), (e - z) / z**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(phi(3, z), (e - z - z**2 / 2) / z**3, rtol=1e-10, atol=0)
    small = torch.tensor([1e-6], dtype=torch.float64)  # Taylor: phi_k(0) = 1/k!
    for k in (1, 2, 3, 4):
        torch.testing.assert_close(phi(k, small), torch.tensor([1 / math.factorial(k)]).double(),
                                   rtol=1e-6, atol=0)  # fmt: skip


ONE_STEP = [
    ("deis_1", {}), ("deis_2", {"variable": "t"}), ("deis_3", {"variable": "rho"}),
    ("unipc", {}), ("unipc", {"predict_x0": False, "variant": "bh1", "solver_order": 3}),
]  # fmt: skip


@pytest.mark.parametrize("sde_key", sorted(SDES))
@pytest.mark.parametrize("key,options", ONE_STEP, ids=[f"{k}{o}" for k, o in ONE_STEP])
def test_one_step_from_T_is_the_ddim_step(key, options, sde_key):
    sde = SDES[sde_key]
    data = gmm_2d()
    den = data.denoiser(sde, "eps")
    x = sde.prior_sample((6, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t, t_next = sde.T, 0.3
    res = S.sample(S.get_sampler(key, **options), den, x_T=x, grid=S.Explicit([t, t_next]),
                   progress=False)  # fmt: skip
    a, a_next = sde.alpha(t), sde.alpha(t_next)
    rho, rho_next = sde.sigma(t) / a, sde.sigma(t_next) / a_next
    ddim = a_next / a * x + a_next * (rho_next - rho) * den.eps(x, t)
    torch.testing.assert_close(res.x, ddim, rtol=1e-12, atol=1e-14)
    if "ddim" in SAMPLERS:
        other = S.sample("ddim", den, x_T=x, grid=S.Explicit([t, t_next]), progress=False).x
        torch.testing.assert_close(res.x, other, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("key", ["deis_2", "deis_3"])
def test_deis_in_t_equals_deis_in_lambda_under_ve(key):
    sde = SDES["ve"]
    den = gmm_2d().denoiser(sde)
    x = sde.prior_sample((6, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = [
        S.sample(S.get_sampler(key, variable=v), den, x_T=x, n_steps=9, grid=S.UniformLambda(),
                 progress=False).x
        for v in ("t", "lambda")
    ]  # fmt: skip
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)
