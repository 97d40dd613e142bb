r"""Fixed-step solvers of the probability-flow ODE (Song et al. 2021, eq. 13).

.. math:: \frac{dx}{dt} = f(t)\,x - \tfrac12 g(t)^2 \nabla_x \log p_t(x)
          = f(t)\,x + \frac{g(t)^2}{2\sigma_t}\,\hat\epsilon(x, t),

integrated from ``T`` down to ``t_min`` in the variable ``t``.
"""

from __future__ import annotations

from .base import GridSchedule, Sampler

__all__ = ["PFEuler"]


class PFEuler(Sampler):
    r"""Euler's method on the probability-flow ODE.

    ``x_{i+1} = (1 + h f_i) x_i + h g2_i / (2 sigma_i) eps(x_i, t_i)`` with ``h = t_{i+1} - t_i < 0``.

    **Order** 1. **NFE per step** 1. **Stochastic** no.
    **Reference** Song et al. 2021, eq. 13 discretised by forward Euler.
    """

    name = "pf_euler"
    order = 1
    stochastic = False
    nfe_per_step = 1
    reference = "song2021sde"

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        h = s.t[1:] - s.t[:-1]
        a = 1.0 + h * s.f[:-1]
        b = h * s.g2[:-1] / (2.0 * s.sigma[:-1])
        return GridSchedule.cast(s.t, x), GridSchedule.cast(a, x), GridSchedule.cast(b, x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, a, b = state
        eps = denoiser.predict(x, t[i]).eps
        return a[i] * x + b[i] * eps, state
