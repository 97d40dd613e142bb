r"""Solvers of the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6).

.. math:: dx = \left[f(t)\,x - g(t)^2 \nabla_x \log p_t(x)\right] dt + g(t)\, d\bar W_t,
          \qquad \nabla_x \log p_t = -\hat\epsilon / \sigma_t,

run from ``T`` down to ``t_min`` (``dt < 0``). The noise is additive (``g`` depends on ``t``
only), which raises Euler–Maruyama's strong order from 1/2 to 1 (Kloeden & Platen 1992,
Sec. 10.2).
"""

from __future__ import annotations

from .base import GridSchedule, Sampler

__all__ = ["EulerMaruyama"]


class EulerMaruyama(Sampler):
    r"""Euler–Maruyama on the reverse SDE.

    ``x_{i+1} = (1 + h f_i) x_i + h g2_i / sigma_i eps(x_i, t_i) + sqrt(-h g2_i) z_i`` with
    ``h = t_{i+1} - t_i < 0`` and ``z_i = (W(t_i) - W(t_{i+1})) / sqrt(-h)`` from the noise source.

    **Strong order** 1 (additive noise: the Milstein correction ``g g'`` in ``x`` vanishes, so
    EM coincides with Milstein). **Weak order** 1. **NFE per step** 1. **Stochastic** yes.
    **Reference** Song et al. 2021, eq. 6 and Appendix (Euler–Maruyama predictor).
    """

    name = "euler_maruyama"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "song2021sde"

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        h = s.t[1:] - s.t[:-1]
        a = 1.0 + h * s.f[:-1]
        b = h * s.g2[:-1] / s.sigma[:-1]
        c = (-h * s.g2[:-1]).sqrt()
        cast = GridSchedule.cast
        return cast(s.t, x), cast(a, x), cast(b, x), cast(c, x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, a, b, c = state
        eps = denoiser.predict(x, t[i]).eps
        z = noise(ts[i], ts[i + 1], x)
        return a[i] * x + b[i] * eps + c[i] * z, state
