r"""Fixed-step solvers of the probability-flow ODE (Song et al. 2021, eq. 13).

.. math:: \frac{dx}{dt} = f(t)\,x - \tfrac12 g(t)^2 \nabla_x \log p_t(x)
          = f(t)\,x + \frac{g(t)^2}{2\sigma_t}\,\hat\epsilon(x, t),

integrated from ``T`` down to ``t_min`` in the variable ``t`` by classical Runge–Kutta methods.
Every stage evaluates the right-hand side in velocity form,
``F(x, t) = alpha'(t) x0(x, t) + sigma'(t) eps(x, t)`` (equal to ``f x + g^2/(2 sigma) eps``,
since ``f = alpha'/alpha`` and ``g^2 = 2 sigma sigma' - 2 f sigma^2``), with ``alpha'`` and
``sigma'`` tabulated in float64 at every stage time of the grid in ``init``. The velocity form stays
finite where ``alpha = 0`` (``f`` is infinite there), so these solvers start exactly at ``T`` of a
rectified flow or a zero-terminal-SNR schedule, as flow-matching samplers do.
"""

from __future__ import annotations

import torch

from ..grids import Karras
from .base import GridSchedule, Sampler

__all__ = ["PFEuler", "PFHeun", "PFRK4", "EDMHeun"]


def _drift_coefficients(sde, t):
    """``(alpha'(t), sigma'(t))``: the PF-ODE is ``dx/dt = alpha' x0 + sigma' eps``."""
    t = t.to("cpu", torch.float64)
    return sde.d_alpha(t), sde.d_sigma(t)


def _velocity(denoiser, x, t, d_alpha, d_sigma):
    return denoiser.predict(x, t).combine(d_alpha, d_sigma)


class PFEuler(Sampler):
    r"""Euler's method on the probability-flow ODE.

    ``x_{i+1} = x_i + h (alpha'_i x0(x_i, t_i) + sigma'_i eps(x_i, t_i))``,
    ``h = t_{i+1} - t_i < 0``. On :class:`~scoresde.sde.RectifiedFlow` this is the flow-matching
    Euler step ``x_{i+1} = x_i + h u(x_i, t_i)`` (diffusers' ``FlowMatchEulerDiscreteScheduler``).

    **Order** 1. **NFE per step** 1. **Stochastic** no.
    **Reference** Song et al. 2021, eq. 13 discretised by forward Euler.
    **Default grid** ``UniformTime()`` (the base default): Euler in ``t`` is at or below DDIM on
    the VP-type schedules on it; on VE it is 8-21x worse than DDIM on every grid (Euler in ``t``
    does not integrate the linear part exactly), see ``tests/convergence/test_defaults.py``.
    """

    name = "pf_euler"
    order = 1
    stochastic = False
    nfe_per_step = 1
    reference = "song2021sde"
    zero_snr_start = True

    def init(self, denoiser, sde, ts, x):
        d_alpha, d_sigma = _drift_coefficients(sde, ts)
        values = GridSchedule.values
        h = ts[1:] - ts[:-1]
        return denoiser.times(ts, x), values(h), values(d_alpha), values(d_sigma)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, h, d_alpha, d_sigma = state
        # x + h (alpha' x0 + sigma' eps), in one combination of the state and the output
        pred = denoiser.predict(x, t[i])
        return pred.combine(h[i] * d_alpha[i], h[i] * d_sigma[i], c_x=1.0), state


class PFHeun(Sampler):
    r"""Heun's method (explicit trapezoidal rule) on the probability-flow ODE.

    With ``F(x, t) = alpha'(t) x0(x, t) + sigma'(t) eps(x, t)`` and ``h = t_{i+1} - t_i < 0``::

        k1 = F(x_i, t_i)
        k2 = F(x_i + h k1, t_{i+1})
        x_{i+1} = x_i + h/2 (k1 + k2)

    On :class:`~scoresde.sde.RectifiedFlow`, ``F`` is the model's velocity and this is diffusers'
    ``FlowMatchHeunDiscreteScheduler`` (whose last step to ``sigma = 0`` is
    ``denoise_final=True`` here).

    The correction is applied on every step, including the last: the grid ends at
    ``t_min > 0`` where the model is defined, unlike EDM's final step to ``sigma = 0`` (which EDM
    takes with Euler and so spends ``2n - 1`` NFE).

    **Order** 2. **NFE per step** 2. **Stochastic** no.
    **Reference** Karras et al. 2022 (EDM), Algorithm 1, applied to Song et al. 2021, eq. 13.
    **Default grid** ``UniformTime()`` (the base default): measured at or below DDIM at equal NFE
    on the VP-type schedules, where Karras' grid is 2-6x worse; like every Runge–Kutta method in
    ``t`` it is far behind DDIM on VE (28x at 10 NFE; Karras 6x).
    """

    name = "pf_heun"
    order = 2
    stochastic = False
    nfe_per_step = 2
    reference = "karras2022edm"
    zero_snr_start = True

    def init(self, denoiser, sde, ts, x):
        a, b = _drift_coefficients(sde, ts)
        h = ts[1:] - ts[:-1]
        values = GridSchedule.values
        return denoiser.times(ts, x), values(h), values(a), values(b)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, h, a, b = state
        k1 = _velocity(denoiser, x, t[i], a[i], b[i])
        x_euler = torch.add(x, k1, alpha=h[i])
        k2 = _velocity(denoiser, x_euler, t[i + 1], a[i + 1], b[i + 1])
        return torch.add(x, k1.add_(k2), alpha=0.5 * h[i]), state


class PFRK4(Sampler):
    r"""The classical fourth-order Runge–Kutta method on the probability-flow ODE.

    With ``F(x, t) = alpha'(t) x0(x, t) + sigma'(t) eps(x, t)``, ``h = t_{i+1} - t_i < 0`` and
    ``m = t_i + h/2``::

        k1 = F(x_i, t_i)
        k2 = F(x_i + h/2 k1, m)
        k3 = F(x_i + h/2 k2, m)
        k4 = F(x_i + h k3, t_{i+1})
        x_{i+1} = x_i + h/6 (k1 + 2 k2 + 2 k3 + k4)

    **Order** 4. **NFE per step** 4. **Stochastic** no.
    **Reference** Kutta 1901; Hairer, Nørsett & Wanner, *Solving ODEs I*, Table II.1.2
    ("the" Runge–Kutta method), applied to Song et al. 2021, eq. 13.
    **Default grid** ``Karras()``: the only grid on which it is below DDIM at equal NFE on all
    five schedules of ``tests/convergence/test_defaults.py`` (time-uniform is 5x worse on VE,
    whose stiff start needs the short first steps of Karras' grid).
    """

    name = "pf_rk4"
    order = 4
    stochastic = False
    nfe_per_step = 4
    reference = "kutta1901"
    zero_snr_start = True
    default_grid = Karras()

    def init(self, denoiser, sde, ts, x):
        mid = 0.5 * (ts[1:] + ts[:-1])
        a, b = _drift_coefficients(sde, ts)
        a_mid, b_mid = _drift_coefficients(sde, mid)
        h = ts[1:] - ts[:-1]
        cast = GridSchedule.cast
        # times stay float64: they feed the schedule inside the Denoiser
        times = ts.to(x.device, dtype=ts.dtype), mid.to(x.device, dtype=mid.dtype)
        return (*times, cast(h, x), cast(a, x), cast(b, x), cast(a_mid, x), cast(b_mid, x))

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, mid, h, a, b, a_mid, b_mid = state
        half = 0.5 * h[i]
        k1 = _velocity(denoiser, x, t[i], a[i], b[i])
        u = x + half * k1
        k2 = _velocity(denoiser, u, mid[i], a_mid[i], b_mid[i])
        u = x + half * k2
        k3 = _velocity(denoiser, u, mid[i], a_mid[i], b_mid[i])
        u = x + h[i] * k3
        k4 = _velocity(denoiser, u, t[i + 1], a[i + 1], b[i + 1])
        return x + (h[i] / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), state


class EDMHeun(Sampler):
    r"""Heun's method on the probability-flow ODE in EDM's scaled coordinates (Karras et al.
    2022, Algorithm 1 with ``S_churn = 0``; k-diffusion's ``sample_heun``).

    With ``y = x / alpha`` and ``s = sigma / alpha = e^{-lambda}`` the PF-ODE is
    ``dy/ds = eps(alpha y, t(s))`` (EDM eq. 4 / DDIM eq. 14), smooth in ``s`` for every schedule,
    including the piecewise-linear ``log alpha`` of DDPM schedules that trips ``pf_heun`` in ``t``.
    One step, in ``x`` with ``a = alpha_{i+1} / alpha_i`` and ``b = alpha_{i+1} (s_{i+1} - s_i)``::

        x' = a x_i + b eps(x_i, t_i)                       (Euler: the DDIM step)
        x_{i+1} = a x_i + b/2 (eps(x_i, t_i) + eps(x', t_{i+1}))

    The correction is applied on every step (the grid ends at ``t_min > 0``). EDM's and
    k-diffusion's last step to ``sigma = 0`` is an Euler step that returns ``x0``: here that is
    ``sample(..., denoise_final=True)``, for ``2 n + 1`` NFE in all.

    **Order** 2. **NFE per step** 2. **Stochastic** no.
    **Reference** Karras et al. 2022 (EDM), Algorithm 1.
    **Default grid** ``Karras()`` (rho = 7, EDM's eq. 5 and their recommendation for this
    sampler). On the cosine schedule, whose first step starts at ``s = sigma/alpha ~ 2e4``,
    time-uniform and time-quadratic grids take it to 3-13 in one Heun step and
    diverge (errors 10^3x DDIM's); Karras' grid keeps it finite.
    """

    name = "edm_heun"
    order = 2
    stochastic = False
    nfe_per_step = 2
    reference = "karras2022edm"
    default_grid = Karras()

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        sigma_ve = s.sigma / s.alpha
        a = s.alpha[1:] / s.alpha[:-1]
        b = s.alpha[1:] * (sigma_ve[1:] - sigma_ve[:-1])
        return s.t.to(x.device), GridSchedule.cast(a, x), GridSchedule.cast(b, x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, a, b = state
        eps = denoiser.predict(x, t[i]).eps
        x_euler = a[i] * x + b[i] * eps
        eps_next = denoiser.predict(x_euler, t[i + 1]).eps
        return a[i] * x + (0.5 * b[i]) * (eps + eps_next), state
