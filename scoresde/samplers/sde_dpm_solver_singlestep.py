r"""Stochastic singlestep DPM-Solvers: SDE-DPM-Solver++(2S) on a Brownian path and the ancestral
second-order samplers of k-diffusion.

All three take two model calls per step at ``lambda_i`` and a stage in the middle (in
``lambda_``) and inject noise by k-diffusion's ancestral split
(:func:`~scoresde.samplers.lambda_space.ancestral_split`): a step to the level ``s = sigma /
alpha`` is a deterministic step to ``s_down = s sqrt(1 - u)`` plus noise ``s sqrt(u) z``, with
``u = eta^2 (1 - e^{-2h})`` (DDIM's ``sigma_t(eta)``; ``eta = 1`` is the Gaussian posterior).
k-diffusion works in ``y = x / alpha``; every coefficient here is the same step written for any
``(alpha, sigma)`` (exponential integrators are invariant under that change of coordinates).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..utils import check_real
from .base import GridSchedule, Sampler
from .dpm_solver_singlestep import PreparedTableau, _run_stages
from .lambda_space import ancestral_split, linear_part, singlestep_tableau

__all__ = ["DPMSolverPPSDE", "DPMSolverPP2SAncestral", "DPM2Ancestral"]


class _Stochastic2Stage(Sampler):
    stochastic = True
    nfe_per_step = 2

    def _set_eta(self, eta: float, s_noise: float, *, high: float | None = None) -> None:
        self.eta = check_real("eta", eta, low=0.0, high=high)
        self.s_noise = check_real("s_noise", s_noise, low=0.0)
        if self.eta == 0:  # no noise: the singlestep second-order ODE solver
            self.stochastic, self.weak_order, self.order = False, None, 2

    def options(self) -> dict[str, Any]:
        return {
            k: v for k, v in vars(self).items() if k not in ("stochastic", "weak_order", "order")
        }


# ---------------------------------------------------------------------------------------------
# Ancestral samplers: a second-order ODE step to s_down, then noise to s_{i+1}


class _Ancestral(_Stochastic2Stage):
    prediction: ClassVar[str]

    def __init__(self, *, eta: float = 1.0, s_noise: float = 1.0):
        # above 1 the split can reach s_down = 0, where no midpoint in lambda_ exists
        self._set_eta(eta, s_noise, high=1.0)

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        h_down, u = ancestral_split(s.lambda_[1:] - s.lambda_[:-1], self.eta)
        tab = singlestep_tableau(
            sde, s, (0.5,), self.prediction, lambda_next=s.lambda_[:-1] + h_down
        )
        z = GridSchedule.values(self.s_noise * s.sigma[1:] * u.sqrt())
        return PreparedTableau.of(tab, denoiser, x), z

    def step(self, denoiser, sde, ts, i, x, state, noise):
        tab, z = state
        x_next, _ = _run_stages(denoiser, tab, i, x, self.prediction)
        if self.eta != 0:
            x_next = x_next.add_(noise(ts[i], ts[i + 1], x), alpha=z[i])
        return x_next, state


class DPM2Ancestral(_Ancestral):
    r"""DPM-Solver-2 ancestral (k-diffusion's ``sample_dpm_2_ancestral``).

    With the ancestral split ``h_down = h - log(1 - u) / 2``, ``u = eta^2 (1 - e^{-2h})``
    (``h = lambda_{i+1} - lambda_i``): a DPM-Solver-2 step (noise prediction, stage at
    ``lambda_i + h_down / 2``) to the level ``alpha_{i+1} e^{-lambda_i - h_down}``, then
    ``x_{i+1} = x_down + s_noise sigma_{i+1} sqrt(u) z_i``. In ``y = x / alpha`` this is
    k-diffusion's Euler half-step to the geometric mean of ``s_i`` and ``s_down``, and a full
    step to ``s_down`` with the slope there.

    **Strong order** 1 (additive noise; the model is evaluated off the Brownian path, which
    costs ``O(h^{3/2})`` in mean square per step). **Weak order** 2 (measured). Per step, with
    ``c = (1 + eta^2) eta^2 h^2`` and ``D`` the denoiser in ``y = x / alpha``, the mean is off by
    ``c/2 (d_lambda D - s^2 D'')`` (the model is read at the stage's time and state rather than
    along the noisy path) and the variance lacks ``2 c s^2 D'`` (the noise is added after the
    deterministic part, which so never contracts it). Against the exact marginal ``p`` these
    cancel for every test function ``u``: ``E_p[(d_lambda D - s^2 D'') u'] = 2 s^2 E_p[D' u'']``
    (differentiate ``E_p[u'(y) D]`` in ``lambda_`` and use the heat equation of ``p`` and Stein's
    identity), so the local weak error is ``O(h^3)``. The first-order ancestral step lacks the
    stage, so the drift term ``2 D' (D - y)`` is left over: weak order 1. With ``eta = 0`` it is
    DPM-Solver-2 (order 2, not stochastic). **NFE per step** 2. **Stochastic** yes (for
    ``eta > 0``).
    **Reference** Lu et al. 2022a, Algorithm 1 (DPM-Solver-2) with the ancestral step of
    k-diffusion (Crowson, ``sample_dpm_2_ancestral``; Karras et al. 2022, Alg. 2 in ``sigma``).

    Args:
        eta: ancestral noise level in ``[0, 1]`` (1: posterior variance; 0: the ODE).
        s_noise: factor on the injected noise (``>= 0``; 1 for a convergent sampler).
    """

    name = "dpm_2_ancestral"
    order = 1
    weak_order = 2
    prediction = "eps"
    reference = "lu2022dpmsolver"


class DPMSolverPP2SAncestral(_Ancestral):
    r"""DPM-Solver++(2S) ancestral (k-diffusion's ``sample_dpmpp_2s_ancestral``).

    A DPM-Solver++(2S) step (data prediction, ``r = 1/2``) to the ancestral level
    ``alpha_{i+1} e^{-lambda_i - h_down}``:
    ``u_s = (sigma_s / sigma_i) x_i - alpha_s (e^{-h_down/2} - 1) x0_i`` at
    ``lambda_s = lambda_i + h_down / 2``, ``x_down = (alpha_{i+1}/alpha_i) e^{-h_down} x_i
    - alpha_{i+1} (e^{-h_down} - 1) x0(u_s, s)``, then
    ``x_{i+1} = x_down + s_noise sigma_{i+1} sqrt(u) z_i`` with ``u = eta^2 (1 - e^{-2h})``.

    **Strong order** 1 and **weak order** 2, for the reasons given in :class:`DPM2Ancestral`
    (measured). With ``eta = 0`` it is DPM-Solver++(2S) (order 2). **NFE per step** 2.
    **Stochastic** yes (for ``eta > 0``).
    **Reference** Lu et al. 2022b, Algorithm 1 (DPM-Solver++(2S)) with k-diffusion's ancestral
    step (Crowson, ``sample_dpmpp_2s_ancestral``).

    Args:
        eta: ancestral noise level in ``[0, 1]`` (1: posterior variance; 0: the ODE).
        s_noise: factor on the injected noise (``>= 0``; 1 for a convergent sampler).
    """

    name = "dpm_solver_pp_2s_ancestral"
    order = 1
    weak_order = 2
    prediction = "x0"
    reference = "lu2022dpmsolverpp"


# ---------------------------------------------------------------------------------------------
# SDE-DPM-Solver++(2S): noise at the stage too, from one Brownian path


class DPMSolverPPSDE(_Stochastic2Stage):
    r"""Stochastic DPM-Solver++(2S) on a Brownian path (k-diffusion's ``sample_dpmpp_sde``).

    With the stage ``lambda_s = lambda_i + r h`` and the ancestral splits
    ``(h1, u1)`` of the step ``r h`` and ``(h2, u2)`` of ``h``
    (:func:`~scoresde.samplers.lambda_space.ancestral_split`):

    * ``u_s = (alpha_s/alpha_i) e^{-h1} x_i + alpha_s (1 - e^{-h1}) x0_i
      + s_noise sigma_s sqrt(u1) z_a``;
    * ``x_{i+1} = (alpha_{i+1}/alpha_i) e^{-h2} x_i + alpha_{i+1} (1 - e^{-h2})
      ((1 - 1/(2r)) x0_i + 1/(2r) x0(u_s, s)) + s_noise sigma_{i+1} sqrt(u2) z``,

    where ``z_a`` is the path's increment from ``t_i`` to ``t_s`` and ``z`` the increment from
    ``t_i`` to ``t_{i+1}``, built as ``sqrt(q) z_a + sqrt(1 - q) z_b`` from ``z_a`` and the next
    increment ``z_b`` (``t_s`` to ``t_{i+1}``), ``q = (t_i - t_s) / (t_i - t_{i+1})``. So any
    noise source gives the two draws the correlation of one Brownian path in ``t``, and
    ``BrownianNoise`` gives exactly its increments (k-diffusion asks its Brownian tree for both
    intervals; in ``sigma`` rather than ``t``, the same correlation to leading order in ``h``).

    **Strong order** 1 (additive noise; ``x0`` follows the path only through the stage).
    **Weak order** 2 (measured): the stage sees the path's noise with the right correlation, so
    the ``O(h^2)`` covariance term of the exact transition is reproduced. With ``eta = 0`` it is
    DPM-Solver++(2S) (order 2, not stochastic). **NFE per step** 2. **Stochastic** yes
    (for ``eta > 0``).
    **Reference** Lu et al. 2022b, Algorithm 1 with noise at both stages, as in k-diffusion
    (Crowson, ``sample_dpmpp_sde``) and diffusers' ``DPMSolverSDEScheduler``.

    Args:
        eta: ancestral noise level (``>= 0``; 1: posterior variance, 0: the ODE; above 1 a
            split may reach ``u = 1``, a full denoise followed by fresh noise).
        s_noise: factor on the injected noise (``>= 0``; 1 for a convergent sampler).
        r: stage position in ``(0, 1)`` as a fraction of ``h``.
    """

    name = "dpm_solver_pp_sde"
    order = 1
    weak_order = 2
    reference = "lu2022dpmsolverpp"

    def __init__(self, *, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5):
        self._set_eta(eta, s_noise)
        self.r = check_real("r", r, low=0.0, high=1.0, low_open=True, high_open=True)

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        h = s.lambda_[1:] - s.lambda_[:-1]
        mid = GridSchedule.of(sde, sde.inverse_lambda(s.lambda_[:-1] + self.r * h))
        alpha_i, sigma_i, alpha_n, sigma_n = s.alpha[:-1], s.sigma[:-1], s.alpha[1:], s.sigma[1:]
        coefs = []
        for alpha_t, sigma_t, h_t in ((mid.alpha, mid.sigma, self.r * h), (alpha_n, sigma_n, h)):
            h_down, u = ancestral_split(h_t, self.eta)
            # deterministic part: to the level alpha_t e^{-lambda_i - h_down}
            sigma_down = alpha_t * torch.exp(-s.lambda_[:-1] - h_down)
            a, B, hh = linear_part("x0", alpha_i, sigma_i, alpha_t, sigma_down, h_down)
            coefs += [a, B * torch.expm1(hh), self.s_noise * sigma_t * u.sqrt()]
        # z = sqrt(q) z_a + sqrt(1 - q) z_b is the path's increment over the whole step
        grid, t_s = ts.tolist(), mid.t.tolist()
        q = [(t - v) / (t - w) for t, v, w in zip(grid, t_s, grid[1:], strict=False)]
        mix = [(math.sqrt(v), math.sqrt(1.0 - v)) for v in q]
        cast = GridSchedule.cast
        return ts.to(x.device), mid.t.to(x.device), t_s, mix, cast(torch.stack(coefs), x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, t_mid, t_s, mix, c = state
        a1, b1, n1, a2, b2, n2 = c[:, i]
        x0 = denoiser.predict(x, t[i]).x0
        u_s = a1 * x + b1 * x0
        if self.eta != 0:
            z_a = noise(ts[i], t_s[i], x)
            u_s = u_s + n1 * z_a
        x0_s = denoiser.predict(u_s, t_mid[i]).x0
        fac = 0.5 / self.r
        x_next = a2 * x + b2 * ((1.0 - fac) * x0 + fac * x0_s)
        if self.eta != 0:
            z = mix[i][0] * z_a + mix[i][1] * noise(t_s[i], ts[i + 1], x)
            x_next = x_next + n2 * z
        return x_next, state
