"""ER-SDE-Solver against its algorithm written out, on the same noise draws (float64).

The reference below follows Cui et al. 2023 (arXiv:2309.06169, Algorithms 1-3 in their VE form,
"Taylor method") step by step in k-diffusion's coordinates ``y = x/alpha``, ``rho = sigma/alpha``
with the model ``D(y; rho)`` (``VEModel`` of ``test_k_diffusion.py``), computing the integrals
``int d rho / phi`` and ``int (rho - rho_i) / phi d rho`` with ``scipy.integrate.quad`` at
``epsabs = epsrel = 1e-13``; both sides consume one pre-drawn sequence of standard normals.

Tolerance 1e-12 relative (measured: 1e-15 at most): the quadratures agree to ~1e-13 relative
and enter only through the Taylor terms' coefficients, which are O(h^2) and O(h^3) against the
state; the rest is float64 rounding times ``1/alpha_T`` ~ 150 over 20 steps.

Also: with ``phi(rho) = rho`` (the probability-flow ODE) ER-SDE-Solver-1 is DDIM, to rounding.
"""

import math

import pytest
import torch
from scipy import integrate

import scoresde as S
from scoresde.noise import NoiseSource
from scoresde.samplers.er_sde import default_noise_scaler
from tests.helpers import gmm_2d
from tests.parity.test_k_diffusion import SDES, VEModel, setup


class Drawn(NoiseSource):
    """Hands out a pre-drawn sequence of standard normals, one per call."""

    def __init__(self, draws):
        self.draws = draws

    def bind(self, ts, like):
        self.k = 0

    def __call__(self, t, t_next, like):
        z = self.draws[self.k]
        self.k += 1
        return z


def er_sde_reference(model, y, rhos, draws, phi, stages):
    """Cui et al. 2023, Algorithms 1-3 (VE, data prediction), written out."""

    def f(r):
        return float(phi(torch.tensor(r, dtype=torch.float64)))

    x0_old = d_old = None
    for i in range(len(rhos) - 1):
        s, t = float(rhos[i]), float(rhos[i + 1])
        x0 = model(y, rhos[i : i + 1].expand(y.shape[0]))
        ratio = f(t) / f(s)
        y_new = ratio * y + (1 - ratio) * x0
        stage = min(stages, i + 1)
        d = None
        if stage >= 2:
            i1 = integrate.quad(lambda r: 1 / f(r), t, s, epsabs=1e-13, epsrel=1e-13)[0]
            d = (x0 - x0_old) / (s - float(rhos[i - 1]))
            y_new = y_new + ((t - s) + f(t) * i1) * d
        if stage >= 3:
            i2 = integrate.quad(lambda r, s=s: (r - s) / f(r), t, s, epsabs=1e-13, epsrel=1e-13)[0]
            dd = 2 * (d - d_old) / (s - float(rhos[i - 2]))
            y_new = y_new + ((t - s) ** 2 / 2 + f(t) * i2) * dd
        y = y_new + math.sqrt(max(t**2 - s**2 * ratio**2, 0.0)) * draws[i]
        x0_old, d_old = x0, d
    return y


def run_both(sde_key, n, stages, phi, grid):
    sde, ts, x_T, y_T = setup(sde_key, n, grid)
    draws = torch.randn((n, *x_T.shape), generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)  # fmt: skip
    sampler = S.get_sampler("er_sde", solver_order=stages, noise_scaler=phi)
    ours = S.sample(sampler, gmm_2d().denoiser(sde), x_T=x_T, grid=S.Explicit(ts),
                    noise=Drawn(draws), progress=False).x  # fmt: skip
    y = er_sde_reference(VEModel(sde), y_T, torch.exp(-sde.lambda_(ts)), draws, phi, stages)
    return ours, sde.alpha(ts[-1]) * y


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_er_sde_matches_its_algorithm_on_the_same_noise(sde_key, stages):
    ours, ref = run_both(sde_key, 20, stages, default_noise_scaler, S.Karras())
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("phi", [lambda r: r**2, lambda r: r**1.5], ids=["rho^2", "rho^1.5"])
def test_er_sde_matches_its_algorithm_with_other_noise_scale_functions(phi):
    ours, ref = run_both("vp", 12, 3, phi, S.UniformLambda())
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_key", sorted(SDES))
def test_er_sde_1_with_phi_equal_to_rho_is_ddim(sde_key):
    sde, ts, x_T, _ = setup(sde_key, 12)
    den = gmm_2d().denoiser(sde)
    er = S.get_sampler("er_sde", solver_order=1, noise_scaler=lambda r: r)
    ours = S.sample(er, den, x_T=x_T, grid=S.Explicit(ts), progress=False).x
    ddim = S.sample("ddim", den, x_T=x_T, grid=S.Explicit(ts), progress=False).x
    torch.testing.assert_close(ours, ddim, rtol=1e-12, atol=1e-12)
