r"""SDE-DPM-Solver: exponential integrators of the reverse SDE in ``lambda_`` (Lu et al. 2022b).

With ``lambda_ = log(alpha / sigma)``, the reverse SDE (Song et al. 2021, eq. 6) has linear part
``d log alpha`` and a model term that these solvers integrate exactly in ``lambda_`` with the
model held constant (first order) or linearly extrapolated (2M), and its noise term integrated
exactly in distribution. For one step from ``t`` to ``t_next`` (``h = lambda_(t_next) -
lambda_(t) > 0``):

* noise prediction:  ``x_next = (alpha_next / alpha_t) x - 2 sigma_next (e^h - 1) eps
  + sigma_next sqrt(e^{2h} - 1) z``;
* data prediction:   ``x_next = (sigma_next / sigma_t) e^{-h} x + alpha_next (1 - e^{-2h}) x0
  + sigma_next sqrt(1 - e^{-2h}) z``.

The data-prediction first-order step is the Gaussian posterior ``q(x_next | x_t, x0)``, i.e. DDPM
ancestral sampling with the posterior variance (Lu et al. 2022b). ``z`` is the noise source's
increment for the step, so every Brownian path gives one solution. All ``e^{...} - 1`` are
``expm1``: for small ``h`` the difference loses every digit otherwise.
"""

from __future__ import annotations

import torch

from ..grids import Karras
from .base import AffineStep, GridSchedule, Sampler

__all__ = ["SDEDPMSolver1", "SDEDPMSolverPP2M"]


class SDEDPMSolver1(AffineStep):
    r"""SDE-DPM-Solver-1: first-order exponential integrator of the reverse SDE, noise prediction.

    ``x_{i+1} = (alpha_{i+1} / alpha_i) x_i - 2 sigma_{i+1} (e^h - 1) eps(x_i, t_i)
    + sigma_{i+1} sqrt(e^{2h} - 1) z_i``, ``h = lambda_{i+1} - lambda_i``.

    **Strong order** 1: with ``dlambda = -g^2 / (2 sigma^2) dt`` the eps coefficient is
    ``h_t g^2 / sigma (1 + O(h))`` and the noise scale ``sqrt(-h_t g^2) (1 + O(h))``: the
    Euler–Maruyama step up to terms that keep its strong order 1 under additive noise. The linear
    part is exact. **Weak order** 1. **NFE per step** 1. **Stochastic** yes.
    **Reference** Lu et al. 2022b (DPM-Solver++, arXiv:2211.01095), SDE-DPM-Solver-1; diffusers'
    ``algorithm_type="sde-dpmsolver"``, first order.

    **Few steps.** In noise-prediction form the step's noise has standard deviation
    ``sigma_{i+1} sqrt(e^{2h} - 1)``, about ``sigma_i alpha_{i+1} / alpha_i`` for large ``h``: a
    long step re-noises the state to the noise level it started from and relies on one ``eps``
    evaluation, weighted by ``2 sigma_{i+1} (e^h - 1)``, to remove it again. Both weights grow
    like ``e^h``, so a long step at high noise amplifies the model's error: on the ring mixture
    of ``python -m scoresde demo`` at 5 steps (``h ~ 1.9``) a logSNR-uniform grid gives a sliced
    Wasserstein distance of 24 (0.1-0.3 for the other samplers), a time-uniform grid 2.5 and
    Karras' grid 0.5; from 10 steps on all three are at the Monte-Carlo floor. There is no lower
    order to fall back on; use 10 or more steps, or the data-prediction forms
    (``ddim_stochastic``, ``sde_dpm_solver_pp_2m``), whose weights stay bounded as ``h`` grows.
    **Default grid** ``Karras()``: short steps at high noise, where the amplification acts.
    """

    name = "sde_dpm_solver_1"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "lu2022dpmsolverpp"
    default_grid = Karras()

    def coefficients(self, s):
        h = s.lambda_[1:] - s.lambda_[:-1]
        c_x = torch.exp(s.alpha[1:].log() - s.alpha[:-1].log())
        c_eps = -2.0 * s.sigma[1:] * torch.expm1(h)
        c_z = s.sigma[1:] * torch.expm1(2.0 * h).sqrt()
        return c_x, c_eps, c_z


class SDEDPMSolverPP2M(Sampler):
    r"""SDE-DPM-Solver++(2M): second-order multistep exponential integrator of the reverse SDE,
    data prediction.

    ``x_{i+1} = (sigma_{i+1} / sigma_i) e^{-h} x_i + alpha_{i+1} (1 - e^{-2h}) (D0 + D1 / 2)
    + sigma_{i+1} sqrt(1 - e^{-2h}) z_i`` with ``D0 = x0_i`` and
    ``D1 = (x0_i - x0_{i-1}) / r``, ``r = h_{i-1} / h_i`` (the "midpoint" form; diffusers'
    default ``solver_type``). The first step, and the last with ``lower_order_final``, uses
    ``D1 = 0`` (SDE-DPM-Solver++(1)).

    **Strong order** 1: along an SDE path ``x0(x_t, t)`` varies by ``O(h^{1/2})`` within a step
    (it follows the Brownian motion), so no extrapolation from past evaluations removes the
    ``O(h^{3/2})`` mean-zero local error; the linear and noise terms are exact.
    **Weak order** 2 (measured on Gaussian and Gaussian-mixture data). The extrapolation ``D1``
    from the realised previous step is what makes it so: given ``x_i``, the previous increment
    carries the time-reversed drift, and in the weak Taylor expansion of a step the terms it adds
    (``x0'`` times that drift, ``x0''`` times the increment's variance) cancel the ``O(h^2)``
    terms of the exact transition after integration by parts against ``p_t`` (as for the
    stochastic Adams–Bashforth-2 method with additive noise). The ODE limit (no noise) is
    DPM-Solver++(2M), also of order 2. **NFE per step** 1. **Stochastic** yes.
    **Reference** Lu et al. 2022b (DPM-Solver++, arXiv:2211.01095), SDE-DPM-Solver++(2M);
    diffusers' ``algorithm_type="sde-dpmsolver++"``, ``solver_order=2``.

    Args:
        lower_order_final: take the last step with first order (as DPM-Solver++ does for few
            steps; it only changes the error constant).
    """

    name = "sde_dpm_solver_pp_2m"
    order = 1
    weak_order = 2
    stochastic = True
    nfe_per_step = 1
    reference = "lu2022dpmsolverpp"

    def __init__(self, *, lower_order_final: bool = True):
        if not isinstance(lower_order_final, bool):
            raise ValueError(f"lower_order_final must be a bool; got {lower_order_final!r}")
        self.lower_order_final = lower_order_final

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        h = s.lambda_[1:] - s.lambda_[:-1]
        c_x = torch.exp(s.sigma[1:].log() - s.sigma[:-1].log() - h)
        c_x0 = -s.alpha[1:] * torch.expm1(-2.0 * h)
        c_z = s.sigma[1:] * (-torch.expm1(-2.0 * h)).sqrt()
        # D1 / 2 coefficient; step 0 has no history
        r = torch.cat([h[:1], h[:-1]]) / h
        c_d1 = 0.5 * c_x0 / r
        cast = GridSchedule.cast
        return (
            GridSchedule.times(s.t, x),
            cast(c_x, x),
            cast(c_x0, x),
            cast(c_d1, x),
            cast(c_z, x),
            None,
        )

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, c_x, c_x0, c_d1, c_z, x0_prev = state
        x0 = denoiser.predict(x, t[i]).x0
        out = c_x[i] * x + c_x0[i] * x0 + c_z[i] * noise(ts[i], ts[i + 1], x)
        first_order = i == 0 or (self.lower_order_final and i == len(ts) - 2)
        if not first_order:
            out = out + c_d1[i] * (x0 - x0_prev)
        return out, (t, c_x, c_x0, c_d1, c_z, x0)
