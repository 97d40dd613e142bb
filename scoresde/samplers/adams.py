r"""Adams–Bashforth samplers in the VE-equivalent noise level: iPNDM (Zhang & Chen 2023) and
k-diffusion's linear multistep method LMS.

With ``y = x / alpha`` and ``rho = sigma / alpha = exp(-lambda_)`` (EDM's and k-diffusion's
``sigma``), the probability-flow ODE of every SDE in :mod:`scoresde.sde` is exactly
``dy/drho = eps(x, t)`` (Karras et al. 2022, eq. 4; Zhang & Chen 2023, eq. 12). Both methods step

.. math:: x_{i+1} = \frac{\alpha_{i+1}}{\alpha_i} x_i + \alpha_{i+1} \sum_{j<q_i} w_{ij}\,
          \epsilon_{i-j},\qquad \epsilon_k = \epsilon(x_k, t_k),

with one network call per step and a lower-order warm start ``q_i = min(order, i + 1)``. They
differ only in the weights ``w_ij``:

* iPNDM: the fixed Adams–Bashforth weights of *equal* steps, ``w_ij = (rho_{i+1} - rho_i) b_j``;
* LMS: the weights of the grid's own steps, ``w_ij = int_{rho_i}^{rho_{i+1}} ell_ij(rho) d rho``
  with ``ell_ij`` the Lagrange basis polynomial of node ``rho_{i-j}`` among
  ``rho_i, ..., rho_{i-q+1}``: the variable-step Adams–Bashforth method in ``rho``, which is
  also DEIS's rhoAB variant (``deis_coefficients(..., "rho")``, computed here by the same
  quadrature, exact to float64 rounding).
"""

from __future__ import annotations

import torch

from ..utils import check_int
from .base import GridSchedule, Sampler
from .exponential import deis_coefficients

__all__ = ["IPNDM", "LMS"]

# Adams–Bashforth weights of equal steps, newest evaluation first (Hairer, Nørsett & Wanner,
# Solving ODEs I, Table III.1.1)
_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def _check_order(name: str, value, key: str) -> int:
    value = check_int(name, value, low=1)
    if value > 4:
        raise ValueError(f"{name} must be an int in [1, 4] for sampler {key!r}; got {value!r}")
    return value


class _AdamsInRho(Sampler):
    """Shared ``init``/``step``: subclasses give the ``(n_steps, max_order)`` weight table."""

    stochastic = False
    nfe_per_step = 1
    max_order: int

    def step_orders(self, n: int) -> list[int]:
        """Lower-order warm start: step ``i`` has ``i + 1`` evaluations to use."""
        return [min(self.max_order, i + 1) for i in range(n)]

    def weights(self, sde, s: GridSchedule, orders: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(len(ts) - 1)
        C = s.alpha[1:, None] * self.weights(sde, s, orders)
        a = s.alpha[1:] / s.alpha[:-1]
        cast = GridSchedule.cast
        return {
            "t": GridSchedule.times(s.t, x),
            "a": cast(a, x),
            "C": cast(C, x),
            "orders": orders,
            "eps": [],
        }

    def step(self, denoiser, sde, ts, i, x, state, noise):
        eps = denoiser.predict(x, state["t"][i]).eps
        history = [eps, *state["eps"][: self.max_order - 1]]
        state["eps"] = history
        C = state["C"][i]
        x = state["a"][i] * x
        for j in range(state["orders"][i]):
            x = x + C[j] * history[j]
        return x, state


class IPNDM(_AdamsInRho):
    r"""iPNDM: Adams–Bashforth-4 with fixed weights on ``eps`` in ``rho = sigma/alpha``, with a
    lower-order multistep warm start.

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + alpha_{i+1} (rho_{i+1} - rho_i) e'_i`` with
    ``e'_i = eps_i`` (step 0), ``(3 eps_i - eps_{i-1})/2`` (step 1),
    ``(23 eps_i - 16 eps_{i-1} + 5 eps_{i-2})/12`` (step 2) and
    ``(55 eps_i - 59 eps_{i-1} + 37 eps_{i-2} - 9 eps_{i-3})/24`` afterwards. This is PNDM's
    pseudo linear multistep update (``plms``) with PNDM's Runge–Kutta start replaced by
    lower-order Adams–Bashforth steps, so every step costs one NFE.

    **Order** 2 on a general grid, 4 on grids with equal steps in ``rho``. The weights are those
    of equal steps; on a grid whose ``rho``-steps vary smoothly (ratio ``1 + O(h)`` between
    neighbours: uniform in ``t``, ``lambda_``, or Karras' ``sigma^(1/rho)``) the extrapolated
    ``eps`` is off by ``O(h^2)``, so the local error is ``O(h^3)`` (measured slopes 1.95-1.99 on
    logSNR-uniform grids, VP, VE and DDPM; see ``docs/correctness.md``). At the few steps where it is used the
    ``h^2`` term is small against the higher-order ones, which is why iPNDM leads many 5-10 NFE
    tables; ``lms`` is the same update with the grid's own weights, of order 4.
    **NFE per step** 1. **Stochastic** no.
    **Reference** Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", Sec. 4.2 / App. (iPNDM: PNDM with a lower-order multistep warm start); the
    ``sample_ipndm`` of zju-pi's diff-sampler and ComfyUI is this update.

    Args:
        max_order: the highest Adams–Bashforth order used, 1-4 (default 4; ComfyUI's keyword).
            ``max_order = 1`` is DDIM; 2-4 have order 2 on a general grid (see above).
    """

    name = "ipndm"
    order = 2
    reference = "zhang2023deis"

    def __init__(self, *, max_order: int = 4):
        self.max_order = _check_order("max_order", max_order, "ipndm")
        if max_order == 1:
            self.order = 1

    def options(self):
        return {"max_order": self.max_order}

    def weights(self, sde, s, orders):
        drho = torch.exp(-s.lambda_[1:]) - torch.exp(-s.lambda_[:-1])
        w = torch.zeros(len(orders), self.max_order, dtype=torch.float64)
        for i, q in enumerate(orders):
            w[i, :q] = drho[i] * torch.tensor(_AB[q], dtype=torch.float64)
        return w


class LMS(_AdamsInRho):
    r"""LMS: the variable-step linear multistep (Adams–Bashforth) method in ``rho = sigma/alpha``
    (k-diffusion's ``sample_lms``).

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + alpha_{i+1} sum_{j<q} w_ij eps_{i-j}``,
    ``w_ij = int_{rho_i}^{rho_{i+1}} ell_ij(rho) d rho`` (``ell_ij`` the Lagrange basis polynomial
    of ``rho_{i-j}`` among the last ``q`` nodes), ``q = min(order, i + 1)``. In k-diffusion's
    coordinates (``y = x/alpha``, ``sigma = rho``, ``d = (y - D)/sigma = eps``) this is
    ``y_{i+1} = y_i + sum_j w_ij d_{i-j}``. k-diffusion integrates the basis with
    ``scipy.integrate.quad`` at every step; here the weights are computed once per grid in
    ``init`` by Gauss–Legendre quadrature that is exact for these polynomials (to float64
    rounding).

    **Order** ``order`` (4 by default): the interpolant of ``eps`` has error ``O(h^order)`` on
    any grid, the warm-up steps change only the constant.
    **NFE per step** 1. **Stochastic** no.
    **Reference** Crowson, k-diffusion ``sample_lms`` (after Karras et al. 2022, eq. 4); the
    method is the Adams–Bashforth family (Hairer, Nørsett & Wanner, *Solving ODEs I*, III.5,
    variable step sizes), and equals rhoAB-DEIS (Zhang & Chen 2023, Sec. 4.2).

    Args:
        order: number of past evaluations in the interpolant, 1-4 (k-diffusion's keyword and
            default, 4); it is also the method's convergence order.
    """

    name = "lms"
    order = 4
    reference = "crowson2022kdiffusion"

    def __init__(self, *, order: int = 4):
        self.order = self.max_order = _check_order("order", order, "lms")

    def options(self):
        return {"order": self.order}

    def weights(self, sde, s, orders):
        return deis_coefficients(sde, s.t, orders, "rho")
