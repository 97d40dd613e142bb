r"""Exponential integrators with Adams–Bashforth coefficients: tAB-DEIS (Zhang & Chen 2023).

With ``y = x / alpha`` and ``rho = sigma / alpha = exp(-lambda_)`` (the VE-equivalent noise
level), the probability-flow ODE of every SDE in :mod:`scoresde.sde` is exactly

.. math:: \frac{dy}{d\rho} = \epsilon(x, t)

(Zhang & Chen 2023, eq. 12 with their ``Psi``; Song, Meng & Ermon 2021, eq. 14), because
``d rho/dt = g^2 / (2 sigma alpha)``. The linear part is therefore integrated exactly, and an
Adams–Bashforth method interpolates only ``eps`` through its last ``q`` evaluations with a
Lagrange polynomial in a chosen time variable ``v`` and integrates it exactly:

.. math:: x_{i+1} = \frac{\alpha_{i+1}}{\alpha_i} x_i + \sum_{j<q} C_{ij}\,\epsilon_{i-j},\qquad
          C_{ij} = \alpha_{i+1} \int_{\rho_i}^{\rho_{i+1}} \ell_{ij}(v(\rho))\, d\rho,

where ``ell_ij`` is the Lagrange basis polynomial of node ``v(t_{i-j})`` among
``v(t_i), ..., v(t_{i-q+1})`` (Zhang & Chen 2023, eq. 15 and Algorithm 1).

The variable ``v`` is an option: ``"t"`` is the paper's tAB-DEIS (polynomial in the SDE's time),
``"rho"`` its rhoAB-DEIS (polynomial in ``rho``; Sec. 4.2 of the paper), and ``"lambda"`` a
polynomial in ``lambda_ = -log rho``, which is what diffusers' ``DEISMultistepScheduler`` calls
``solver_type="logrho"``. The default is ``"lambda"``: (i) ``eps`` along a trajectory is smooth in
``lambda_`` for every schedule, whereas ``t(lambda_)`` of a discrete DDPM schedule has a kink at
every train step; (ii) on logSNR-uniform grids the interpolation nodes are equispaced, and the
measured order reaches 3 from 12 steps on, while ``"t"`` and ``"rho"`` are still pre-asymptotic
(slopes 2.5-2.9 from 12 to 192 steps on the VP problem of ``tests/convergence``; they do reach
their order); (iii) it reproduces diffusers. All three are the same method at order 1, and ``"t"``
and ``"lambda"`` coincide for the VE SDE, whose ``t`` is affine in ``lambda_``.

Coefficients are computed once per grid in float64 by composite Gauss–Legendre quadrature in
``lambda_`` (``d rho = -exp(-lambda_) d lambda_``), on pieces at most 1 long in ``lambda_`` and
split at the knots of a discrete schedule, where ``t(lambda_)`` has kinks. On each piece the
integrand is analytic, and 16 nodes integrate it to float64 rounding (the quadrature error of an
entire function on a unit interval is below ``0.5^32 / 32!``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from ..grids import UniformTime
from ..sde import DiscreteVPSDE
from .base import GridSchedule, Sampler, weighted_sum
from .lambda_space import check_lower_order_final, geometric_orders

__all__ = ["DEIS1", "DEIS2", "DEIS3"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_VARIABLES = ("t", "rho", "lambda")
# lower_order_final=True is diffusers' few-step stabiliser: its DEIS and DPM-Solver apply it below
# 15 steps only, so that the method keeps its order as the grid is refined
LOWER_ORDER_FINAL_BELOW = 15


def _lagrange_basis(v: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``ell_j(v)`` for every node ``j``: shape ``(len(nodes), len(v))``."""
    out = np.ones((len(nodes), len(v)))
    for j, vj in enumerate(nodes):
        for m, vm in enumerate(nodes):
            if m != j:
                out[j] *= (v - vm) / (vj - vm)
    return out


def _quadrature(a: float, b: float, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre nodes and weights on ``[a, b]`` (``a < b``), split at ``knots``
    inside the interval and into pieces of length at most 1."""
    inner = knots[(knots > a) & (knots < b)]
    edges = np.concatenate([[a], inner, [b]])
    xs, ws = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = max(1, math.ceil(hi - lo))
        sub = np.linspace(lo, hi, m + 1)
        for p, q in zip(sub[:-1], sub[1:], strict=True):
            xs.append(0.5 * (q - p) * _GL_X + 0.5 * (q + p))
            ws.append(0.5 * (q - p) * _GL_W)
    return np.concatenate(xs), np.concatenate(ws)


def deis_coefficients(sde, ts: torch.Tensor, orders: list[int], variable: str) -> torch.Tensor:
    r"""``C[i, j] / alpha_{i+1} = int_{rho_i}^{rho_{i+1}} ell_ij(v(rho)) d rho`` for every step,
    float64, shape ``(n_steps, max(orders))`` (zeros beyond each step's order)."""
    lam = sde.lambda_(ts).numpy()
    if variable == "t":
        v_grid = ts.numpy()

        def v_of(lam_):
            return sde.inverse_lambda(torch.from_numpy(lam_)).numpy()

        # t(lambda_) of a discrete schedule is piecewise smooth between train steps
        if isinstance(sde, DiscreteVPSDE):
            knots = np.sort(sde.lambda_(sde.index_to_t(torch.arange(sde.N))).numpy())
        else:
            knots = np.empty(0)
    elif variable == "rho":
        v_grid, knots = np.exp(-lam), np.empty(0)

        def v_of(lam_):
            return np.exp(-lam_)
    else:
        v_grid, knots = lam, np.empty(0)

        def v_of(lam_):
            return lam_

    rules = [_quadrature(lam[i], lam[i + 1], knots) for i in range(len(orders))]
    # one evaluation of v for all quadrature nodes of the grid
    v_all = np.split(
        v_of(np.concatenate([x for x, _ in rules])), np.cumsum([len(x) for x, _ in rules])[:-1]
    )
    C = np.zeros((len(orders), max(orders)))
    for i, q in enumerate(orders):
        x, w = rules[i]
        nodes = v_grid[[i - j for j in range(q)]]
        C[i, :q] = _lagrange_basis(v_all[i], nodes) @ (-np.exp(-x) * w)
    return torch.from_numpy(C)


class _DEIS(Sampler):
    """Shared implementation of tAB-DEIS of order ``deis_order``; see the module docstring."""

    deis_order: ClassVar[int]
    stochastic = False
    nfe_per_step = 1
    reference = "zhang2023deis"
    # as the DPM-Solver multistep family (the same extrapolation in lambda_ with
    # variable="lambda"): never worse than DDIM on tests/convergence/test_defaults.py's schedules
    default_grid = UniformTime()

    def __init__(self, *, variable: str = "lambda", lower_order_final: str | bool = "auto"):
        if variable not in _VARIABLES:
            raise ValueError(f"variable must be one of {list(_VARIABLES)}; got {variable!r}")
        self.variable = variable
        self.lower_order_final = check_lower_order_final(lower_order_final)

    def step_orders(self, n: int, h=None) -> list[int]:
        """The order of each of ``n`` steps: the lower-order warm-up of a multistep method (the
        first step has one past evaluation, the second two); then with ``lower_order_final=True``
        and ``n < LOWER_ORDER_FINAL_BELOW`` the mirror image at the end, with ``"auto"`` the
        geometric rule of :func:`~scoresde.samplers.lambda_space.geometric_orders` on the
        grid's steps ``h`` in ``lambda_``."""
        orders = [min(self.deis_order, i + 1) for i in range(n)]
        if self.lower_order_final == "auto":
            if h is None:
                raise ValueError("lower_order_final='auto' needs the grid's steps h in lambda_")
            return geometric_orders(orders, h)
        if self.lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
            orders = [min(q, n - i) for i, q in enumerate(orders)]
        return orders

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(len(ts) - 1, s.lambda_.diff())
        C = s.alpha[1:, None] * deis_coefficients(sde, s.t, orders, self.variable)
        a = s.alpha[1:] / s.alpha[:-1]
        values = GridSchedule.values
        return {
            "t": denoiser.times(s.t, x),
            "a": values(a),
            "C": values(C),
            "orders": orders,
            "eps": [],
        }

    def step(self, denoiser, sde, ts, i, x, state, noise):
        eps = denoiser.predict(x, state["t"][i]).eps
        history = [eps, *state["eps"][: self.deis_order - 1]]
        state["eps"] = history
        return weighted_sum(x, state["a"][i], state["C"][i], history, state["orders"][i]), state


class DEIS1(_DEIS):
    r"""DEIS of order 1: the exponential-integrator Euler step, identical to DDIM (eta = 0).

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + alpha_{i+1} (rho_{i+1} - rho_i) eps_i`` with
    ``rho = sigma/alpha``; the ``variable`` option does not change a one-node interpolant.

    **Order** 1. **NFE per step** 1. **Stochastic** no.
    **Reference** Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
    Integrator", eq. 15 with r = 0 (their Sec. 4.1 notes it equals DDIM).

    Args:
        variable: the interpolation variable, ``"t"``, ``"rho"`` or ``"lambda"`` (no effect at
            order 1; kept for a uniform family interface).
        lower_order_final: no effect at order 1.
    """

    name = "deis_1"
    order = 1
    deis_order = 1


class DEIS2(_DEIS):
    r"""tAB-DEIS of order 2: exponential integrator with a two-step Adams–Bashforth interpolant
    of ``eps``.

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + C_{i0} eps_i + C_{i1} eps_{i-1}`` with
    ``C_ij = alpha_{i+1} int_{rho_i}^{rho_{i+1}} ell_ij(v(rho)) d rho`` (module docstring); the
    first step is DEIS-1 (one past evaluation only).

    **Order** 2. **NFE per step** 1. **Stochastic** no.
    **Reference** Zhang & Chen 2023, eq. 15 and Algorithm 1 (tAB-DEIS, r = 1).
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"``, as DPM-Solver-2M, which
    this method equals up to the interpolation of ``eps``: at or below DDIM on the five schedules
    of ``tests/convergence/test_defaults.py``, where logSNR-uniform steps lose 1.2-3.6x to DDIM
    on sub-VP and cosine schedules and Karras' up to 7.6x.

    Args:
        variable: Lagrange interpolation variable: ``"lambda"`` (default; diffusers'
            ``solver_type="logrho"``), ``"t"`` (the paper's tAB-DEIS) or ``"rho"`` (its
            rhoAB-DEIS). See the module docstring for why ``"lambda"`` is the default.
        lower_order_final: ``"auto"`` (default): orders from the grid's geometry, as the
            DPM-Solver multistep family (:func:`~scoresde.samplers.lambda_space.geometric_orders`:
            order 1 on a step longer than 1.5x the previous one in ``lambda_``, at most 2 on a
            step longer than 1). ``True``: diffusers' count rule, order ``min(2, n_steps - i)``
            below 15 steps. ``False``: the paper's method, no lowering.
    """

    name = "deis_2"
    order = 2
    deis_order = 2


class DEIS3(_DEIS):
    r"""tAB-DEIS of order 3: exponential integrator with a three-step Adams–Bashforth
    interpolant of ``eps``.

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + sum_{j<3} C_ij eps_{i-j}`` with
    ``C_ij = alpha_{i+1} int_{rho_i}^{rho_{i+1}} ell_ij(v(rho)) d rho`` (module docstring); steps
    0 and 1 are DEIS-1 and DEIS-2 (warm-up).

    **Order** 3. **NFE per step** 1. **Stochastic** no.
    **Reference** Zhang & Chen 2023, eq. 15 and Algorithm 1 (tAB-DEIS, r = 2; their
    recommended tAB3 for few-step sampling).
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"``; see :class:`DEIS2`.

    Args:
        variable: Lagrange interpolation variable: ``"lambda"`` (default; diffusers'
            ``solver_type="logrho"``), ``"t"`` (the paper's tAB-DEIS) or ``"rho"`` (its
            rhoAB-DEIS). See the module docstring for why ``"lambda"`` is the default.
        lower_order_final: ``"auto"`` (default): orders from the grid's geometry, as the
            DPM-Solver multistep family (:func:`~scoresde.samplers.lambda_space.geometric_orders`:
            order 1 on a step longer than 1.5x the previous one in ``lambda_``, at most 2 on a
            step longer than 1). ``True``: diffusers' count rule, order ``min(3, n_steps - i)``
            below 15 steps. ``False``: the paper's method, no lowering.
    """

    name = "deis_3"
    order = 3
    deis_order = 3
