"""DPM-Solver multistep family: DDIM / DPM-Solver-1, DPM-Solver-2M/3M and DPM-Solver++(2M/3M).

``x_{i+1} = a_i x_i + sum_j c_ij m_{i-j}`` with the model outputs ``m`` of the last grid points;
the coefficients come from :func:`~scoresde.samplers.lambda_space.multistep_coefficients` (the
maths is in that module's docstring).

Default grid of the second- and third-order solvers: ``UniformTime()``, with
``lower_order_final="auto"``. Time-uniform steps are Lu et al.'s choice for guided and
high-resolution sampling and diffusers' default; on the exact problems of
``tests/convergence/test_defaults.py`` they keep these solvers at or below DDIM on VP, sub-VP,
VE, DDPM-linear and cosine schedules at 5-50 steps, whereas logSNR-uniform steps (the paper's
choice for small images) lose 2-3x to DDIM on the cosine and sub-VP schedules, whose
``lambda_`` ranges are 14-15 wide. The geometric rule matters there: the
last time-uniform step is 3.5-4.7x longer in ``lambda_`` than the one before at every step
count, and the reference's count rule lowers it only below 10 steps (measured on the ring
mixture under DDPM-linear at 10 steps: 0.456 with the count rule, 0.091 with "auto";
DDIM 0.135).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from ..denoiser import TimePoint
from ..grids import UniformTime
from ..utils import check_real
from .base import GridSchedule, Sampler, weighted_sum
from .lambda_space import (
    check_lower_order_final,
    lowered_orders,
    model_output,
    multistep_coefficients,
)

__all__ = [
    "DDIM",
    "StochasticDDIM",
    "DPMSolver1",
    "DPMSolverPP1",
    "DPMSolver2M",
    "DPMSolver3M",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
]

# ---------------------------------------------------------------------------------------------
# Multistep solvers (and the first-order update they start from)


class _MultistepState(NamedTuple):
    t: list[TimePoint]  # the grid's n + 1 times, prepared for the Denoiser
    a: list[float]  # (n,) float64 coefficients
    c: list[list[float]]  # (n, order)
    orders: list[int]
    history: tuple[Tensor, ...] = ()  # newest first, at most order - 1 model outputs
    noise: list[float] | None = None  # (n,) noise scale of stochastic DDIM


class _Multistep(Sampler):
    """Exponential multistep solvers: ``x_{i+1} = a_i x_i + sum_j c_ij m_{i-j}``, with the
    model outputs ``m`` of the last ``order`` grid points kept in the state."""

    prediction: ClassVar[str]
    stochastic = False
    nfe_per_step = 1
    lower_order_final: str | bool = False
    _d2_weight: float = 2.0

    def step_orders(self, n_steps: int, h=None) -> list[int]:
        """The order used on each step: lower while the history fills, and then by the
        ``lower_order_final`` rule (``h``: the grid's steps in ``lambda_``, needed by
        ``"auto"``)."""
        # the class's order is the method's; an instance may declare a lower convergence order
        return lowered_orders(type(self).order, n_steps, self.lower_order_final, True, h)

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(ts.numel() - 1, s.lambda_.diff())
        a, c = multistep_coefficients(s, orders, self.prediction, d2_weight=self._d2_weight)
        values = GridSchedule.values
        return _MultistepState(denoiser.times(ts, x), values(a), values(c), orders)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        m = model_output(denoiser, x, state.t[i], self.prediction)
        history = (m, *state.history)
        x_next = weighted_sum(x, state.a[i], state.c[i], history, state.orders[i])
        return x_next, state._replace(history=history[: type(self).order - 1])


class DPMSolver1(_Multistep):
    r"""DPM-Solver-1: the first-order exponential integrator with noise prediction.

    ``x_{i+1} = (alpha_{i+1} / alpha_i) x_i - sigma_{i+1} (e^h - 1) eps(x_i, t_i)``, with
    ``h = lambda_{i+1} - lambda_i``. Identical to deterministic DDIM (as Lu et al. 2022a show)
    and to DPM-Solver++(1); this class *is* :class:`DDIM` without ``eta``.

    **Order** 1. **NFE per step** 1. **Stochastic** no.
    **Reference** Lu et al. 2022a, DPM-Solver-1 (the first-order case of their Taylor expansion).
    """

    name = "dpm_solver_1"
    order = 1
    prediction = "eps"
    reference = "lu2022dpmsolver"


class DDIM(DPMSolver1):
    r"""DDIM (Song, Meng & Ermon 2021): deterministic for ``eta = 0``, stochastic for ``eta > 0``.

    ``x_{i+1} = alpha_{i+1} x0 + sqrt(sigma_{i+1}^2 - s_i^2) eps + s_i z`` with ``(x0, eps)`` the
    model's prediction at ``(x_i, t_i)``, ``z ~ N(0, I)`` from the noise source and
    ``s_i = eta sigma_{i+1} sqrt(1 - e^{-2h})`` (``h = lambda_{i+1} - lambda_i``), which is DDIM's
    ``sigma_t(eta)`` (eq. 16) written for any ``(alpha, sigma)``. With ``eta = 0`` this is
    DPM-Solver-1 (the same code path); with ``eta = 1`` it is the posterior
    ``q(x_{i+1} | x_i, x0)``, i.e. DDPM ancestral sampling for VP schedules.

    **Order** 1 (ODE order for ``eta = 0``; strong order 1 for ``eta > 0``, the noise being
    additive). **Weak order** 1 for ``eta > 0``. **NFE per step** 1.
    **Stochastic** exactly when ``eta > 0``: the instance attribute ``stochastic`` (and
    ``weak_order``) overrides the class attribute, which describes the default ``eta = 0``.
    :class:`StochasticDDIM` (``"ddim_stochastic"``) is the registered ``eta > 0`` form, so the
    registry-wide stochastic tests cover this branch.
    **Reference** Song, Meng & Ermon 2021, eq. 12 with ``sigma_t(eta)`` of eq. 16.

    Args:
        eta: noise level in ``[0, 1]``; 0 is the deterministic DDIM of the paper's experiments.
    **Default grid** ``UniformTime()`` (the base default): DDIM's best grid on our exact
    problems (logSNR-uniform and Karras grids are 1.7-7x worse on VP-type schedules, equal on
    VE); the DDIM paper uses uniform ("linear") skips for most of its experiments.
    """

    name = "ddim"
    reference = "song2021ddim"

    def __init__(self, *, eta: float = 0.0):
        self.eta = check_real("eta", eta, low=0.0, high=1.0)
        if self.eta > 0:
            self.stochastic = True
            self.weak_order = 1

    def options(self) -> dict[str, Any]:
        return {"eta": self.eta}

    def init(self, denoiser, sde, ts, x):
        state = super().init(denoiser, sde, ts, x)
        if self.eta == 0:
            return state
        s = GridSchedule.of(sde, ts)
        h = s.lambda_[1:] - s.lambda_[:-1]
        sigma_t = s.sigma[1:]
        u = self.eta**2 * -torch.expm1(-2.0 * h)  # (s_i / sigma_{i+1})^2
        # sqrt(1 - u) - e^h, written to keep every digit of -expm1(h) when u is small
        c0 = -sigma_t * (torch.expm1(h) + u / (1.0 + torch.sqrt(1.0 - u)))
        c0 = GridSchedule.values(c0)
        c = [[c0[i], *row[1:]] for i, row in enumerate(state.c)]
        return state._replace(c=c, noise=GridSchedule.values(sigma_t * u.sqrt()))

    def step(self, denoiser, sde, ts, i, x, state, noise):
        x, state = super().step(denoiser, sde, ts, i, x, state, noise)
        if state.noise is None:
            return x, state
        return x.add_(noise(ts[i], ts[i + 1], x), alpha=state.noise[i]), state


class StochasticDDIM(DDIM):
    r"""DDIM with ``eta > 0`` (default 1): the stochastic member of the DDIM family.

    The update of :class:`DDIM`,
    ``x_{i+1} = alpha_{i+1} x0 + sqrt(sigma_{i+1}^2 - s_i^2) eps + s_i z`` with
    ``s_i = eta sigma_{i+1} sqrt(1 - e^{-2h})``. It discretises the reverse SDE family
    ``dx = [f x - (1 + eta^2)/2 g^2 score] dt + eta g dW`` (its drift and noise variance agree to
    first order in ``h``, using ``g^2 |dt| = 2 sigma^2 dlambda``); ``eta = 1`` is the reverse SDE of
    Song et al. 2021 (eq. 6) and DDPM's posterior sampling.

    **Order** (strong) 1: the noise is additive, so the exponential-Euler scheme has no Itô
    correction and its one-step noise differs from the exact stochastic integral by
    ``O(h^{3/2})`` in mean square. **Weak order** 1. **NFE per step** 1. **Stochastic** yes.
    **Reference** Song, Meng & Ermon 2021, eqs. 12 and 16; Lu et al. 2022b, SDE-DPM-Solver-1
    (the same update at ``eta = 1``).

    Args:
        eta: noise level in ``(0, 1]``; 1 gives the DDPM posterior variance.
    """

    name = "ddim_stochastic"
    stochastic = True
    weak_order = 1

    def __init__(self, *, eta: float = 1.0):
        super().__init__(eta=check_real("eta", eta, low=0.0, high=1.0, low_open=True))


class DPMSolverPP1(_Multistep):
    r"""DPM-Solver++(1): the first-order exponential integrator with data prediction.

    ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) x0(x_i, t_i)``. Algebraically
    identical to DPM-Solver-1 and DDIM (as Lu et al. 2022b note); the coefficients are computed
    in the data-prediction form, so ``tests/parity/test_identities.py`` checks the identity.

    **Order** 1. **NFE per step** 1. **Stochastic** no.
    **Reference** Lu et al. 2022b, DPM-Solver++(1) (the first-order data-prediction update).
    """

    name = "dpm_solver_pp_1"
    order = 1
    prediction = "x0"
    reference = "lu2022dpmsolverpp"


class _HigherMultistep(_Multistep):
    # time-uniform: with the geometric lower-order rule never worse than DDIM on the five
    # schedules of tests/convergence/test_defaults.py (see the class docstrings)
    default_grid = UniformTime()

    def __init__(self, *, lower_order_final: str | bool = "auto"):
        self.lower_order_final = check_lower_order_final(lower_order_final)


# D2 weights of the third-order multistep update (see multistep_coefficients)
THIRD_ORDER_VARIANTS = {"taylor": 2.0, "reference": 1.0}


class _ThirdOrderMultistep(_HigherMultistep):
    def __init__(self, *, lower_order_final: str | bool = "auto", variant: str = "taylor"):
        super().__init__(lower_order_final=lower_order_final)
        if variant not in THIRD_ORDER_VARIANTS:
            raise ValueError(
                f"variant must be one of {sorted(THIRD_ORDER_VARIANTS)} for {self.name!r}; "
                f"got {variant!r}"
            )
        self.variant = variant
        self._d2_weight = THIRD_ORDER_VARIANTS[variant]
        if variant == "reference":
            self.order = 2  # its local error is O(h^3): see multistep_coefficients

    def options(self) -> dict[str, Any]:
        return {"lower_order_final": self.lower_order_final, "variant": self.variant}


class DPMSolver2M(_HigherMultistep):
    r"""Multistep DPM-Solver-2 (noise prediction).

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} (e^h - 1) (eps_i + D / 2)``,
    ``D = (eps_i - eps_{i-1}) / r``, with ``r = h_{i-1} / h_i``. The first step is DPM-Solver-1
    (no history yet).

    **Order** 2. **NFE per step** 1. **Stochastic** no.
    **Reference** Lu et al. 2022b, multistep DPM-Solver (noise-prediction form); the authors'
    ``multistep_dpm_solver_second_update`` (``solver_type='dpmsolver'``).
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"`` (module docstring).

    Args:
        lower_order_final: ``"auto"`` (default) lowers orders from the grid's geometry: order
            1 on a step longer than 1.5x the previous one in ``lambda_``, order at most 2 on a
            step longer than 1 (see :func:`~scoresde.samplers.lambda_space.geometric_orders`).
            ``True`` is the reference implementation's count rule (orders ``min(order, n - i)``
            on grids of fewer than 10 steps; k-diffusion and Lu et al.'s code), ``False`` never
            lowers them.
    """

    name = "dpm_solver_2m"
    order = 2
    prediction = "eps"
    reference = "lu2022dpmsolverpp"


class DPMSolver3M(_ThirdOrderMultistep):
    r"""Multistep DPM-Solver-3 (noise prediction).

    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} (p1 eps_i + p2 D1 + 2 p3 D2)`` with
    ``p1 = e^h - 1``, ``p2 = p1/h - 1``, ``p3 = p2/h - 1/2`` and the divided differences
    ``D1 ~ h eps'``, ``D2 ~ h^2 eps''/2`` of ``eps_i, eps_{i-1}, eps_{i-2}`` (see
    :func:`multistep_coefficients`). Steps 0 and 1 use orders 1 and 2 while the history fills.

    **Order** 3 (``variant="taylor"``); 2 for ``variant="reference"``. **NFE per step** 1.
    **Stochastic** no.
    **Reference** Lu et al. 2022b, multistep DPM-Solver; the third-order update of the
    authors' implementation (``multistep_dpm_solver_third_update``), with the Taylor weight of
    ``D2``.
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"`` (module docstring).

    Args:
        lower_order_final: ``"auto"`` (default) lowers orders from the grid's geometry: order
            1 on a step longer than 1.5x the previous one in ``lambda_``, order at most 2 on a
            step longer than 1 (see :func:`~scoresde.samplers.lambda_space.geometric_orders`).
            ``True`` is the reference implementation's count rule (orders ``min(order, n - i)``
            on grids of fewer than 10 steps; k-diffusion and Lu et al.'s code), ``False`` never
            lowers them.
        variant: ``"taylor"`` weighs ``D2`` by ``2 p3``, the exponential integral's Taylor
            weight, which makes the method third order. ``"reference"`` weighs it by ``p3`` as
            the authors' code, diffusers and k-diffusion do; that leaves a local error
            ``O(h^3)``, so it converges at order 2 (measured in ``tests/convergence``). Use it
            to reproduce those implementations.
    """

    name = "dpm_solver_3m"
    order = 3
    prediction = "eps"
    reference = "lu2022dpmsolverpp"


class DPMSolverPP2M(_HigherMultistep):
    r"""DPM-Solver++(2M): second-order multistep solver of the data-prediction PF-ODE.

    ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D`` with
    ``D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}``, ``r = h_{i-1}/h_i``. The first step is
    DPM-Solver++(1).

    **Order** 2. **NFE per step** 1. **Stochastic** no.
    **Reference** Lu et al. 2022b, Algorithm 2.
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"`` (module docstring).

    Args:
        lower_order_final: ``"auto"`` (default) lowers orders from the grid's geometry: order
            1 on a step longer than 1.5x the previous one in ``lambda_``, order at most 2 on a
            step longer than 1 (see :func:`~scoresde.samplers.lambda_space.geometric_orders`).
            ``True`` is the reference implementation's count rule (orders ``min(order, n - i)``
            on grids of fewer than 10 steps; k-diffusion and Lu et al.'s code), ``False`` never
            lowers them.
    """

    name = "dpm_solver_pp_2m"
    order = 2
    prediction = "x0"
    reference = "lu2022dpmsolverpp"


class DPMSolverPP3M(_ThirdOrderMultistep):
    r"""DPM-Solver++(3M): third-order multistep solver of the data-prediction PF-ODE.

    ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (p1 x0_i + p2 D1 + 2 p3 D2)`` with
    ``p1 = e^{-h} - 1``, ``p2 = p1/(-h) - 1``, ``p3 = p2/(-h) - 1/2`` and the divided differences
    ``D1 ~ h x0'``, ``D2 ~ h^2 x0''/2`` of ``x0_i, x0_{i-1}, x0_{i-2}``. Steps 0 and 1 use orders 1
    and 2 while the history fills.

    **Order** 3 (``variant="taylor"``); 2 for ``variant="reference"``. **NFE per step** 1.
    **Stochastic** no.
    **Reference** Lu et al. 2022b, multistep DPM-Solver++; the third-order update of
    the authors' implementation, with the Taylor weight of ``D2``.
    **Default grid** ``UniformTime()`` with ``lower_order_final="auto"`` (module docstring).

    Args:
        lower_order_final: ``"auto"`` (default) lowers orders from the grid's geometry: order
            1 on a step longer than 1.5x the previous one in ``lambda_``, order at most 2 on a
            step longer than 1 (see :func:`~scoresde.samplers.lambda_space.geometric_orders`).
            ``True`` is the reference implementation's count rule (orders ``min(order, n - i)``
            on grids of fewer than 10 steps; k-diffusion and Lu et al.'s code), ``False`` never
            lowers them.
        variant: ``"taylor"`` (order 3) or ``"reference"`` (the authors' code, diffusers'
            ``DPMSolverMultistepScheduler(solver_order=3)`` and k-diffusion's
            ``sample_dpmpp_3m_sde``: ``D2`` weighed by ``p3``, global order 2); see
            :class:`DPMSolver3M`.
    """

    name = "dpm_solver_pp_3m"
    order = 3
    prediction = "x0"
    reference = "lu2022dpmsolverpp"
