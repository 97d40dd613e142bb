r"""Predictor–corrector and pseudo linear multistep samplers: UniPC (Zhao et al. 2023) and
PNDM / PLMS (Liu et al. 2022).

UniPC works in ``lambda_ = log(alpha / sigma)`` with step ``h = lambda_(t_{i+1}) - lambda_(t_i)``
and the model in data-prediction form ``m = x0`` (or noise prediction ``m = eps``). Its
predictor UniP-p and corrector UniC-p share one form (Zhao et al. 2023, Algorithm 2 / eq. 8):

.. math:: x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i} x_i - \alpha_{i+1} (e^{-h} - 1)\, m_i
          - \alpha_{i+1} B(h) \sum_k a_k D_k, \qquad D_k = \frac{m_{i-k} - m_i}{r_k},\;
          r_k = \frac{\lambda_{i-k} - \lambda_i}{h},

where ``a = R_p^{-1} b`` solves the order conditions ``sum_k a_k r_k^{j-1} = b_j``
(``b_j = j! h phi_{j+1}(-h) / B(h)``; ``phi_k`` the exponential-integrator phi-functions) and
``B(h) = h`` ("bh1") or ``e^h - 1`` ("bh2"). The corrector is the same expression on the step
just taken, with the new evaluation ``m_{i+1}`` (at the predicted point) as one more node
(``r = 1``); that evaluation is reused by the next predictor, so the corrector costs no NFE.

PNDM's transfer ``phi(x, e, t -> t')`` is the DDIM step (Liu et al. 2022, eq. 9), written for any
SDE as ``x' = (alpha'/alpha) x + alpha' (rho' - rho) e`` with ``rho = sigma / alpha``; the
"pseudo" methods feed it a Runge–Kutta or linear-multistep combination of ``eps`` evaluations.

All coefficients are reduced in ``init`` (float64) to per-step weights on ``x`` and on the
stored model outputs, so ``step`` is a short linear combination.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np
import torch
from torch import Tensor

from ..grids import Karras, UniformTime
from .base import GridSchedule, Sampler, weighted_sum
from .lambda_space import check_lower_order_final, geometric_orders

__all__ = ["UniPC", "PNDM", "PLMS"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
# lower_order_final stabilises few-step sampling; applied below 15 steps only (diffusers' rule for
# DPM-Solver and DEIS), so that refining the grid keeps the declared order (see UniPC's docstring)
LOWER_ORDER_FINAL_BELOW = 15


def phi(k: int, z: torch.Tensor) -> torch.Tensor:
    r"""``phi_k(z) = int_0^1 e^{(1-s) z} s^{k-1} / (k-1)! ds`` (``phi_0 = e^z``), float64.

    By Gauss–Legendre quadrature rather than the recursion ``phi_{k+1} = (phi_k - 1/k!) / z``,
    which loses ``k`` powers of ``z`` to cancellation for small steps; 32 nodes integrate the
    entire integrand to float64 rounding for ``|z| <= 20``."""
    if k == 0:
        return torch.exp(z)
    s = torch.from_numpy(0.5 * (_GL_X + 1.0))
    w = torch.from_numpy(0.5 * _GL_W)
    vals = torch.exp((1.0 - s) * z[..., None]) * s ** (k - 1) / math.factorial(k - 1)
    return (vals * w).sum(-1)


# -------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023, Sec. 3 and Algorithm 2 "UniPC-p with B(h)")


class UniPC(Sampler):
    r"""UniPC: the unified predictor UniP-p with the unified corrector UniC-p.

    Data-prediction form (``predict_x0=True``), from ``t_i`` to ``t_{i+1}``:
    ``x~_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1}(e^{-h} - 1) x0_i
    - alpha_{i+1} B(h) sum_{k<p} a_k (x0_{i-k} - x0_i) / r_k`` (UniP-p), then, after the next
    model evaluation ``x0_{i+1} = D(x~_{i+1}, t_{i+1})``, the same update with the coefficients
    of UniC-p and ``x0_{i+1}`` as an extra node corrects ``x~_{i+1}`` to ``x_{i+1}``
    (Zhao et al. 2023, eqs. 8 and 11). ``x0_{i+1}`` is reused by the next predictor, and the
    corrector is not applied after the final step (no evaluation follows it), as in the
    reference implementation. As there, ``a = 1/2`` for UniP-2 and UniC-1.

    Warm-up: step ``i`` uses order ``min(solver_order, i + 1)``; then ``lower_order_final``
    lowers orders by the grid's geometry (``"auto"``) or at the end of grids of fewer than 15
    steps (``True``, down to a UniP-1 final step).

    **Order** ``solver_order + 1`` (UniC raises the order of UniP by one; Zhao et al. 2023,
    Theorem 3.2 and Corollary 3.3), so 3 by default. The reference code lowers the final orders
    at every step count; a final UniP-1 step with no corrector after it adds a global error
    ``alpha h^2 dx0/dlambda_ = O(rho(t_end)^2 h^2)`` (``rho = sigma/alpha``, about 0.01 at the
    usual ``t_min``), which for ``solver_order=3`` overtakes the ``h^4`` error below errors of
    ~1e-7 (measured: slopes 3.6, 3.4, 2.8 from 64 to 512 steps). Hence the 15-step threshold of
    ``lower_order_final=True``; ``"auto"`` lowers nothing on logSNR-uniform grids of 10 or more
    steps.
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"``, as the DPM-Solver
    multistep family (its UniP predictor is the same extrapolation in ``lambda_``): at or below
    DDIM on the five schedules of ``tests/convergence/test_defaults.py``. With the count rule
    its error on that grid jumps 2.7x from 12 to 15 steps, where the rule stops lowering the
    4x longer last step.
    **NFE per step** 1. **Stochastic** no.
    **Reference** Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified Predictor-Corrector
    Framework for Fast Sampling of Diffusion Models", Algorithm 2 (multistep UniPC with B(h)).

    Args:
        solver_order: order ``p`` of UniP (1, 2 or 3). The keyword is not ``order``, which names
            the declared convergence order of every sampler. Default 2 (diffusers' default and
            the paper's recommendation for guided sampling; 3 for unconditional sampling).
        variant: ``"bh2"`` (``B(h) = e^h - 1``, default, as diffusers) or ``"bh1"``
            (``B(h) = h``, the paper's choice for unconditional sampling with < 10 steps).
        predict_x0: data-prediction form (default, as the paper and diffusers); ``False`` uses
            the noise-prediction form with ``e^{h}`` in place of ``e^{-h}``.
        lower_order_final: ``"auto"`` (default): per-step orders from the grid's geometry, as
            the DPM-Solver multistep family (order 1 on a step longer than 1.5x the previous
            one in ``lambda_``, at most 2 on a step longer than 1). ``True``: below 15 steps,
            lower the order of the last ``solver_order - 1`` steps (the reference's and
            diffusers' rule, which they apply at every step count). ``False``: never.
    """

    name = "unipc"
    order = 3
    stochastic = False
    nfe_per_step = 1
    reference = "zhao2023unipc"
    default_grid = UniformTime()

    def __init__(
        self,
        *,
        solver_order: int = 2,
        variant: str = "bh2",
        predict_x0: bool = True,
        lower_order_final: str | bool = "auto",
    ):
        if isinstance(solver_order, bool) or solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3; got {solver_order!r}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2'; got {variant!r}")
        if not isinstance(predict_x0, bool):
            raise ValueError(f"predict_x0 must be a bool; got {predict_x0!r}")
        self.solver_order = solver_order
        self.variant = variant
        self.predict_x0 = predict_x0
        self.lower_order_final = check_lower_order_final(lower_order_final)
        # the declared convergence order depends on the options (see the docstring)
        self.order = solver_order + 1

    def options(self):
        return {k: v for k, v in super().options().items() if k != "order"}

    def step_orders(self, n: int, h=None) -> list[int]:
        """UniP order of each of ``n`` steps (warm-up, and ``lower_order_final``; ``h``: the
        grid's steps in ``lambda_``, needed by ``"auto"``)."""
        orders = [min(self.solver_order, i + 1) for i in range(n)]
        if self.lower_order_final == "auto":
            if h is None:
                raise ValueError("lower_order_final='auto' needs the grid's steps h in lambda_")
            return geometric_orders(orders, h)
        if self.lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
            orders = [min(q, n - i) for i, q in enumerate(orders)]
        return orders

    def _weights(self, s: GridSchedule, i: int, q: int, corrector: bool) -> tuple[Tensor, list]:
        """The update from ``t_i`` to ``t_{i+1}`` as ``A x_i + sum_j w_j m_{i-j}`` (predictor,
        ``j = 0..q-1``) or ``A x_i + w_{-1} m_{i+1} + sum_j w_j m_{i-j}`` (corrector; the
        weight of the new evaluation comes first)."""
        lam = s.lambda_
        h = lam[i + 1] - lam[i]
        hh = -h if self.predict_x0 else h
        B = hh if self.variant == "bh1" else torch.expm1(hh)
        if self.predict_x0:
            A = s.sigma[i + 1] / s.sigma[i]
            scale = -s.alpha[i + 1]
        else:
            A = s.alpha[i + 1] / s.alpha[i]
            scale = -s.sigma[i + 1]
        w0 = scale * torch.expm1(hh)  # weight of m_i from the exponential-integrator step
        # nodes r_k of the past evaluations m_{i-k}, k = 1..q-1 (and r = 1 for the corrector)
        r = [(lam[i - k] - lam[i]) / h for k in range(1, q)]
        n_coef = q if corrector else q - 1
        if n_coef == 0:
            return A, [w0]
        nodes = torch.stack([*r, torch.ones((), dtype=torch.float64)])[:n_coef]
        b = torch.stack([math.factorial(j) * hh * phi(j + 1, hh) / B for j in range(1, n_coef + 1)])
        if (corrector and q == 1) or (not corrector and q == 2):
            a = torch.full((1,), 0.5, dtype=torch.float64)  # the reference's simplification
        else:
            R = torch.stack([nodes**j for j in range(n_coef)])
            a = torch.linalg.solve(R, b)
        c = scale * B * a / nodes  # weight of (m_node - m_i)
        past = [c[k] for k in range(q - 1)]
        w_i = w0 - c.sum()
        if corrector:
            return A, [c[-1], w_i, *past]
        return A, [w_i, *past]

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        n = len(ts) - 1
        orders = self.step_orders(n, s.lambda_.diff())
        width = self.solver_order + 1
        pred = torch.zeros(n, 1 + width, dtype=torch.float64)  # [A, w_0, w_1, ...]
        corr = torch.zeros(n, 1 + width, dtype=torch.float64)  # [A, w_new, w_0, ...]
        for i, q in enumerate(orders):
            A, w = self._weights(s, i, q, corrector=False)
            pred[i, 0], pred[i, 1 : 1 + len(w)] = A, torch.stack(w)
            if i + 1 < n:  # the corrector of step i runs at the start of step i + 1
                A, w = self._weights(s, i, q, corrector=True)
                corr[i, 0], corr[i, 1 : 1 + len(w)] = A, torch.stack(w)
        values = GridSchedule.values
        return {
            "t": denoiser.times(ts, x), "pred": values(pred), "corr": values(corr), "orders": orders,
            "m": [], "x_prev": None,
        }  # fmt: skip

    def step(self, denoiser, sde, ts, i, x, state, noise):
        p = denoiser.predict(x, state["t"][i])
        m_new = p.x0 if self.predict_x0 else p.eps
        m = state["m"]
        if i > 0 and not state.pop("replaced", False):
            # UniC for step i - 1: correct x at t_i with the evaluation just made at it
            c = state["corr"][i - 1]
            x = weighted_sum(state["x_prev"], c[0], c[1:], [m_new, *m], 1 + state["orders"][i - 1])
        m = [m_new, *m[: self.solver_order - 1]]
        w = state["pred"][i]
        x_next = weighted_sum(x, w[0], w[1:], m, state["orders"][i])
        state["m"], state["x_prev"] = m, x
        return x_next, state

    def replace_state(self, x, state):
        # the corrector would rebuild x at t_i from x at t_{i-1}, undoing the replacement: skip it
        # once, so the run continues from x exactly
        state["replaced"] = True
        return state


# -------------------------------------------------------------------------------------------
# PNDM and PLMS (Liu et al. 2022, Sec. 3.3-3.4)

_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class _PseudoLinearMultistep(Sampler):
    """PLMS steps shared by PNDM and PLMS; subclasses define the warm-up ``_start_step``."""

    stochastic = False
    reference = "liu2022pndm"
    # see PNDM's docstring
    default_grid = Karras()
    warmup_steps: int

    def init(self, denoiser, sde, ts, x):
        # the schedule on the grid, then on the midpoints (t_i + t_{i+1}) / 2 of PNDM's PRK steps
        t = ts.to("cpu", torch.float64)
        n = len(t) - 1
        s = GridSchedule.of(sde, torch.cat([t, 0.5 * (t[1:] + t[:-1])]))
        rho = s.sigma / s.alpha
        i, mid = torch.arange(n), torch.arange(n + 1, 2 * n + 1)

        def transfer(src, dst):
            # PNDM eq. 9 (the DDIM step) between any two times: x' = a x + b eps
            return s.alpha[dst] / s.alpha[src], s.alpha[dst] * (rho[dst] - rho[src])

        a, b = transfer(i, i + 1)
        a_mid, b_mid = transfer(i, mid)
        values = GridSchedule.values
        times = denoiser.times(s.t, x)
        return {
            "t": times[: n + 1], "t_mid": times[n + 1 :],
            "a": values(a), "b": values(b), "a_mid": values(a_mid), "b_mid": values(b_mid),
            "eps": [],
        }  # fmt: skip

    def step(self, denoiser, sde, ts, i, x, state, noise):
        if i < self.warmup_steps:
            return self._start_step(denoiser, i, x, state)
        eps = denoiser.predict(x, state["t"][i]).eps
        e = [eps, *state["eps"][:3]]
        state["eps"] = e
        coef = _AB[min(4, len(e))]
        e_prime = weighted_sum(e[0], coef[0], coef[1:], e[1:], len(coef) - 1)
        return (x * state["a"][i]).add_(e_prime, alpha=state["b"][i]), state

    @abstractmethod
    def _start_step(self, denoiser, i, x, state):
        """Step ``i < warmup_steps``: the method's own start, filling the ``eps`` history."""


class PNDM(_PseudoLinearMultistep):
    r"""PNDM: pseudo linear multistep (Adams–Bashforth-4 on ``eps``) started by three pseudo
    Runge–Kutta steps.

    With the transfer ``phi(x, e, t -> t') = (alpha'/alpha) x + alpha' (rho' - rho) e``
    (``rho = sigma/alpha``; the DDIM step, Liu et al. 2022, eq. 9) and ``t_m = (t_i + t_{i+1})/2``:

    - steps 0-2 (PRK, eq. 13): ``e1 = eps(x_i, t_i)``,
      ``e2 = eps(phi(x_i, e1, t_i -> t_m), t_m)``, ``e3 = eps(phi(x_i, e2, t_i -> t_m), t_m)``,
      ``e4 = eps(phi(x_i, e3, t_i -> t_{i+1}), t_{i+1})``,
      ``x_{i+1} = phi(x_i, (e1 + 2 e2 + 2 e3 + e4)/6, t_i -> t_{i+1})``;
    - later steps (PLMS, eq. 12): ``e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24``,
      ``x_{i+1} = phi(x_i, e', t_i -> t_{i+1})``, where ``e_k = eps(x_k, t_k)``.

    The multistep weights are the fixed ones of uniform steps, whatever the grid.

    **Order** 2, as Liu et al. prove for PNDM. The fixed weights are those of equal steps in
    ``rho``, the variable over which the transfer integrates ``eps``; on any grid whose
    ``rho``-steps vary (uniform in ``t`` or ``lambda_``: ratios ``1 + O(h)``) the extrapolated
    ``eps`` is off by ``O(h^2)``, so local errors are ``O(h^3)``.
    **NFE per step** 4 for the first three steps, then 1: ``nfe(n) = n + 9`` for ``n >= 3``.
    **Stochastic** no.
    **Default grid** ``Karras()`` (also PLMS's): its fixed multistep weights and DDIM transfer
    work in ``rho = sigma/alpha``, in which Karras' grid is smooth; time-uniform and
    time-quadratic grids diverge on the cosine schedule (their first step takes ``rho`` from
    2e4 to 3-13), and logSNR-uniform ones lose 2-10x on sub-VP and cosine.
    **Reference** Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on
    Manifolds", eqs. 9, 12 and 13 (Algorithm 1).
    """

    name = "pndm"
    order = 2
    nfe_per_step = 1  # after the start; nfe() counts the PRK steps
    warmup_steps = 3

    def nfe(self, n_steps):
        return 4 * min(n_steps, 3) + max(n_steps - 3, 0)

    def _start_step(self, denoiser, i, x, state):
        a, b, a_m, b_m = state["a"][i], state["b"][i], state["a_mid"][i], state["b_mid"][i]
        t, t_mid = state["t"], state["t_mid"][i]
        e1 = denoiser.predict(x, t[i]).eps
        e2 = denoiser.predict((x * a_m).add_(e1, alpha=b_m), t_mid).eps
        e3 = denoiser.predict((x * a_m).add_(e2, alpha=b_m), t_mid).eps
        e4 = denoiser.predict((x * a).add_(e3, alpha=b), t[i + 1]).eps
        state["eps"] = [e1, *state["eps"][:3]]
        return (x * a).add_((e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0, alpha=b), state


class PLMS(_PseudoLinearMultistep):
    r"""PLMS: PNDM's pseudo linear multistep with a cheap start (diffusers' ``PNDMScheduler``
    with ``skip_prk_steps=True``).

    With the DDIM transfer ``phi`` of :class:`PNDM`: step 0 is Heun's method on the transfer,
    ``e0 = eps(x_0, t_0)``, ``x_1 = phi(x_0, (e0 + eps(phi(x_0, e0, t_0 -> t_1), t_1)) / 2,
    t_0 -> t_1)``; steps 1, 2 and later use Adams–Bashforth weights of order 2, 3 and 4 on
    ``e_k = eps(x_k, t_k)`` (``(3, -1)/2``, ``(23, -16, 5)/12``, ``(55, -59, 37, -9)/24``) and
    ``x_{i+1} = phi(x_i, e', t_i -> t_{i+1})``.

    **Order** 2 on a general grid, for the reason given in :class:`PNDM`.
    **NFE per step** 2 for the first step, then 1: ``nfe(n) = n + 1``. **Stochastic** no.
    **Reference** Liu, Ren, Lin & Zhao 2022, eq. 12 (PLMS); the start follows diffusers'
    ``PNDMScheduler.step_plms`` (used by Stable Diffusion's "PLMS" sampler).
    """

    name = "plms"
    order = 2
    nfe_per_step = 1  # after the start; nfe() counts the Heun step
    warmup_steps = 1

    def nfe(self, n_steps):
        return n_steps + 1

    def _start_step(self, denoiser, i, x, state):
        a, b = state["a"][i], state["b"][i]
        e0 = denoiser.predict(x, state["t"][i]).eps
        e1 = denoiser.predict((x * a).add_(e0, alpha=b), state["t"][i + 1]).eps
        state["eps"] = [e0]
        return (x * a).add_(0.5 * (e0 + e1), alpha=b), state
