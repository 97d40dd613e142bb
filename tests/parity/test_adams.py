"""Parity of the Adams–Bashforth samplers in ``rho = sigma/alpha`` with their references.

Both work in k-diffusion's coordinates ``y = x/alpha``, noise level ``sigma_ve = rho`` and
derivative ``d = (y - D(y; sigma_ve)) / sigma_ve`` (= our ``eps``); the same exact denoiser is
wrapped as ``model(y, sigma_ve)`` (``VEModel`` of ``test_k_diffusion.py``) and the reference's
result is mapped back by ``x = alpha y``.

* ``lms`` against k-diffusion 0.1.1.post1's ``sample_lms`` (orders 1-4). k-diffusion integrates
  the Lagrange basis with ``scipy.integrate.quad`` (21-point Gauss–Kronrod, exact for these cubic
  polynomials up to rounding), ours by Gauss–Legendre in ``lambda_``; both are exact to rounding,
  so the bound is float64 rounding amplified by ``1/alpha_T`` ~ 150 through the coordinate change
  over 20 steps: 1e-12 relative (measured: 1.7e-15 at most), far inside the 1e-6 asked of a peer
  comparison.
* ``ipndm`` against a reference written here from its definition (Zhang & Chen 2023: PNDM's
  pseudo linear multistep with lower-order Adams–Bashforth warm start, fixed equal-step weights)
  in the same coordinates: an algebraic identity, 1e-12 relative (float64 rounding over 20 steps).
"""

import pytest
import torch

import scoresde as S
from tests.parity.test_k_diffusion import SDES, VEModel, ours, setup

AB = [[1.0], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_lms_matches_k_diffusion_sample_lms(kd, sde_key, order):
    sde, ts, x_T, y_T = setup(sde_key, 20, S.Karras())
    sigmas = torch.exp(-sde.lambda_(ts))
    y = kd.sample_lms(VEModel(sde), y_T, sigmas, disable=True, order=order)
    expected = sde.alpha(ts[-1]) * y
    torch.testing.assert_close(
        ours("lms", sde, ts, x_T, order=order), expected, rtol=1e-12, atol=1e-12
    )


def ipndm_reference(model, y, sigmas, max_order=4):
    """iPNDM in k-diffusion's coordinates, from the algorithm: ``d_i = (y - D) / sigma_i``,
    ``y <- y + (sigma_{i+1} - sigma_i) sum_j b^{(q)}_j d_{i-j}``, ``q = min(max_order, i + 1)``."""
    ds = []
    for i in range(len(sigmas) - 1):
        s = sigmas[i : i + 1].expand(y.shape[0])
        ds.insert(0, (y - model(y, s)) / sigmas[i])
        b = AB[min(max_order, i + 1) - 1]
        y = y + (sigmas[i + 1] - sigmas[i]) * sum(c * d for c, d in zip(b, ds, strict=False))
    return y


@pytest.mark.parametrize("grid", [S.Karras(), S.UniformLambda(), S.UniformTime()], ids=repr)
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_ipndm_matches_the_algorithm_written_out(sde_key, grid):
    sde, ts, x_T, y_T = setup(sde_key, 20, grid)
    y = ipndm_reference(VEModel(sde), y_T, torch.exp(-sde.lambda_(ts)))
    torch.testing.assert_close(
        ours("ipndm", sde, ts, x_T), sde.alpha(ts[-1]) * y, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("max_order", [1, 2, 3])
def test_ipndm_of_lower_max_order_matches_the_algorithm(max_order):
    sde, ts, x_T, y_T = setup("vp", 12, S.Karras())
    y = ipndm_reference(VEModel(sde), y_T, torch.exp(-sde.lambda_(ts)), max_order)
    torch.testing.assert_close(
        ours("ipndm", sde, ts, x_T, max_order=max_order), sde.alpha(ts[-1]) * y,
        rtol=1e-12, atol=1e-12,
    )  # fmt: skip
