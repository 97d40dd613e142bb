r"""DPM-Solver and DPM-Solver++: exponential integrators of the PF-ODE in half log-SNR.

In ``lambda_ = log(alpha / sigma)`` the probability-flow ODE has the exact variation-of-constants
solution from ``s`` to ``t`` (``h = lambda_t - lambda_s > 0``; the exact-solution formulas of
Lu et al. 2022a and 2022b)

.. math::
    x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t \int_0^h e^{h-u}\,\hat\epsilon(\lambda_s + u)\,du
        = \frac{\sigma_t}{\sigma_s} x_s + \alpha_t \int_0^h e^{u-h}\,\hat x_0(\lambda_s + u)\,du,

for noise prediction ``eps`` (DPM-Solver) and data prediction ``x0`` (DPM-Solver++). Writing either
as ``x_t = a x_s + B \int ... m`` and expanding the model output ``m`` in a Taylor series in ``u``
gives, with ``hh = h`` (eps) or ``hh = -h`` (x0) and the phi-functions

.. math:: p_1 = e^{hh} - 1,\quad p_2 = p_1/hh - 1,\quad p_3 = p_2/hh - 1/2,

the update ``x_t = a x_s + B (p_1 m + p_2 D_1 + p_3 D_2)``, where ``D_k ~ h^k m^{(k)}`` are divided
differences of earlier model outputs (multistep) or of intermediate stages (singlestep), and
``(a, B) = (alpha_t/alpha_s, -sigma_t)`` for eps, ``(sigma_t/sigma_s, -alpha_t)`` for x0.

Every coefficient is a function of the grid only. ``init`` evaluates them in float64 for the whole
grid (stage times by ``sde.inverse_lambda``) and casts once; ``step`` is a linear combination of
``x`` and model outputs. Nothing here depends on the SDE class: only ``alpha``, ``sigma`` and
``lambda_`` enter, so VP, sub-VP, VE and discrete schedules all work, with any parameterization
(the Denoiser returns both ``eps`` and ``x0`` from one call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..utils import check_int, check_real
from .base import GridSchedule, Sampler, StepInfo

__all__ = [
    "DDIM",
    "StochasticDDIM",
    "DPMSolver1",
    "DPMSolverPP1",
    "DPMSolver2S",
    "DPMSolver3S",
    "DPMSolverPP2S",
    "DPMSolver2M",
    "DPMSolver3M",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "DPMSolverAdaptive",
]

# The reference implementation lowers the order of the final steps only on grids of fewer than
# 10 steps (Lu et al.'s dpm_solver_pytorch.py, `lower_order_final and steps < 10`): on longer grids
# the final steps are short enough to be stable, and a first-order last step would cap a
# third-order method at global order 2.
LOWER_ORDER_FINAL_BELOW = 10

# Stage positions r_k in (0, 1) of the singlestep solvers, as fractions of h (Lu et al. 2022a,
# Algorithms 1 and 2: r1 = 1/2 for DPM-Solver-2; r1 = 1/3, r2 = 2/3 for DPM-Solver-3).
SINGLESTEP_RATIOS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


# ---------------------------------------------------------------------------------------------
# Coefficients (float64, vectorised over the steps of a grid)


def _phi(hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``p1 = e^hh - 1``, ``p2 = p1/hh - 1``, ``p3 = p2/hh - 1/2`` (Taylor weights of the
    exponential integral: ``int_0^h e^{h-u} u^k / k! du = h^k p_{k+1}`` for ``hh = h``)."""
    p1 = torch.expm1(hh)
    p2 = p1 / hh - 1.0
    return p1, p2, p2 / hh - 0.5


def _linear_part(prediction: str, alpha_s, sigma_s, alpha_t, sigma_t, h):
    """``(a, B, hh)`` of the update ``x_t = a x_s + B (p1(hh) m + ...)`` from ``s`` to ``t``."""
    if prediction == "eps":
        return alpha_t / alpha_s, -sigma_t, h
    return sigma_t / sigma_s, -alpha_t, -h


def _model_output(denoiser, x: Tensor, t: Tensor, prediction: str) -> Tensor:
    pred = denoiser.predict(x, t)
    return pred.eps if prediction == "eps" else pred.x0


def multistep_coefficients(
    s: GridSchedule, orders: list[int], prediction: str, *, d2_weight: float = 2.0
) -> tuple[Tensor, Tensor]:
    """``(a, c)`` with ``x_{i+1} = a[i] x_i + sum_j c[i, j] m_{i-j}`` for the multistep solver of
    order ``orders[i]`` at step ``i``; ``c`` has ``max(orders)`` columns, zero-padded.

    Order 2 is the reference's "dpmsolver" second-order update ``B p1 (m_0 + D1_0 / 2)`` with
    ``D1_0 = (m_0 - m_1) / r0``. Order 3 is ``B (p1 m_0 + p2 D1 + d2_weight p3 D2)`` with
    ``D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1)`` and ``D2 = (D1_0 - D1_1)/(r0+r1)``,
    ``r0 = h_{i-1}/h_i``, ``r1 = h_{i-2}/h_i`` (Lu et al. 2022b, multistep solvers; their reference
    implementation's ``multistep_dpm_solver_{second,third}_update``). These divided differences
    estimate ``D1 = h m' + O(h^3)`` and ``D2 = h^2 m'' / 2 + O(h^3)``, while the Taylor term of the
    exponential integral is ``int_0^h e^{h-u} u^2/2 m'' du = h^2 p3 m'' = 2 p3 D2``: the Taylor
    weight is ``d2_weight = 2``. The reference code (and diffusers' and k-diffusion's 3M) uses
    weight 1, which leaves a local error ``B p3 D2 = O(h^3)`` and so global order 2.
    """
    lam = s.lambda_
    h = lam[1:] - lam[:-1]
    n = h.numel()
    a, B, hh = _linear_part(prediction, s.alpha[:-1], s.sigma[:-1], s.alpha[1:], s.sigma[1:], h)
    p1, p2, p3 = _phi(hh)
    nan = torch.full((2,), math.nan, dtype=h.dtype)
    h_prev = torch.cat([nan, h])  # h_prev[i + 2 - k] = h_{i-k}; NaN before the grid starts
    r0 = h_prev[1:-1] / h
    r1 = h_prev[:-2] / h
    zero = torch.zeros_like(h)
    rows = {
        1: torch.stack([B * p1, zero, zero], 1),
        2: torch.stack([B * p1 * (1.0 + 0.5 / r0), -B * p1 * 0.5 / r0, zero], 1),
    }
    # D1_0, D1_1 as coefficient vectors over (m_i, m_{i-1}, m_{i-2})
    u0 = torch.stack([1.0 / r0, -1.0 / r0, zero], 1)
    u1 = torch.stack([zero, 1.0 / r1, -1.0 / r1], 1)
    w = (1.0 / (r0 + r1))[:, None]
    d1 = u0 + (r0[:, None] * w) * (u0 - u1)
    d2 = w * (u0 - u1)
    e0 = torch.tensor([1.0, 0.0, 0.0], dtype=h.dtype)
    rows[3] = B[:, None] * (p1[:, None] * e0 + p2[:, None] * d1 + (d2_weight * p3)[:, None] * d2)
    k = torch.tensor(orders)
    c = torch.zeros(n, 3, dtype=h.dtype)
    for order, row in rows.items():
        c = torch.where((k == order)[:, None], row, c)
    return a, c[:, : max(orders)]


@dataclass(frozen=True)
class Tableau:
    """A singlestep exponential Runge–Kutta scheme on every step of a grid (float64, or cast).

    Stage 0 is ``(x_i, t_i)``; row ``r < K - 1`` builds stage ``r + 1`` as
    ``u = a[:, r] x + sum_{j <= r} b[:, r, j] m_j`` at time ``t[:, r + 1]``; row ``K - 1`` is the
    final update to ``t_{i+1}``.
    """

    t: Tensor  # (n, K) stage times (float64)
    a: Tensor  # (n, K)
    b: Tensor  # (n, K, K)

    @property
    def stages(self) -> int:
        return self.t.shape[1]


def singlestep_tableau(sde, s: GridSchedule, ratios: tuple[float, ...], prediction: str) -> Tableau:
    """The tableau of DPM-Solver-(K) with stage positions ``ratios`` (``K = len(ratios) + 1``).

    K = 1 is DPM-Solver-1 / DPM-Solver++(1). K = 2 is Lu et al. 2022a Algorithm 1 (eps) and Lu et
    al. 2022b Algorithm 1 (x0): ``u = a_1 x + B_1 p1(r1 hh) m_0``,
    ``x_t = a x + B p1(hh) ((1 - 1/(2 r1)) m_0 + 1/(2 r1) m_1)``. K = 3 is Lu et al. 2022a
    Algorithm 2: ``u_2 = a_2 x + B_2 (p1(r2 hh) m_0 + r2/r1 p2(r2 hh) (m_1 - m_0))`` and
    ``x_t = a x + B (p1(hh) m_0 + p2(hh)/r2 (m_2 - m_0))``.
    """
    lam_s, lam_t = s.lambda_[:-1], s.lambda_[1:]
    h = lam_t - lam_s
    n, K = h.numel(), len(ratios) + 1
    t = torch.zeros(n, K, dtype=h.dtype)
    a = torch.zeros(n, K, dtype=h.dtype)
    b = torch.zeros(n, K, K, dtype=h.dtype)
    t[:, 0] = s.t[:-1]
    # stages: lambda_s + r h, mapped back to t (Lu et al. 2022a, Alg. 1 line 3)
    stage_hh = []
    for r, ratio in enumerate(ratios):
        g = GridSchedule.of(sde, sde.inverse_lambda(lam_s + ratio * h))
        a_r, B_r, hh_r = _linear_part(
            prediction, s.alpha[:-1], s.sigma[:-1], g.alpha, g.sigma, ratio * h
        )
        t[:, r + 1], a[:, r] = g.t, a_r
        stage_hh.append((B_r, hh_r))
    a_T, B_T, hh = _linear_part(prediction, s.alpha[:-1], s.sigma[:-1], s.alpha[1:], s.sigma[1:], h)
    a[:, K - 1] = a_T
    p1, p2, _ = _phi(hh)
    if K == 1:
        b[:, 0, 0] = B_T * p1
    elif K == 2:
        (r1,), ((B1, hh1),) = ratios, stage_hh
        b[:, 0, 0] = B1 * torch.expm1(hh1)
        b[:, 1, 0] = B_T * p1 * (1.0 - 0.5 / r1)
        b[:, 1, 1] = B_T * p1 * (0.5 / r1)
    elif K == 3:
        (r1, r2), ((B1, hh1), (B2, hh2)) = ratios, stage_hh
        b[:, 0, 0] = B1 * torch.expm1(hh1)
        q1, q2, _ = _phi(hh2)
        b[:, 1, 0] = B2 * (q1 - (r2 / r1) * q2)
        b[:, 1, 1] = B2 * (r2 / r1) * q2
        b[:, 2, 0] = B_T * (p1 - p2 / r2)
        b[:, 2, 2] = B_T * p2 / r2
    else:
        raise ValueError(f"singlestep DPM-Solver has orders 1, 2 and 3; got order {K}")
    return Tableau(t, a, b)


def _lowered_orders(order: int, n: int, lower_order_final: bool, warm_up: bool) -> list[int]:
    """Per-step orders: ``min(order, i + 1)`` while a multistep history fills (``warm_up``), and
    ``min(order, n - i)`` at the end when ``lower_order_final`` and ``n < 10``."""
    orders = [min(order, i + 1) if warm_up else order for i in range(n)]
    if lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
        orders = [min(k, n - i) for i, k in enumerate(orders)]
    return orders


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False); got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Multistep solvers (and the first-order update they start from)


@dataclass(frozen=True)
class _MultistepState:
    t: Tensor  # (n + 1,) float64 grid on the sample's device
    a: Tensor  # (n,)
    c: Tensor  # (n, order)
    orders: list[int]
    history: tuple[Tensor, ...] = ()  # newest first, at most order - 1 model outputs
    noise: Tensor | None = None  # (n,) noise scale of stochastic DDIM


class _Multistep(Sampler):
    """Exponential multistep solvers: ``x_{i+1} = a_i x_i + sum_j c_ij m_{i-j}``, with the
    model outputs ``m`` of the last ``order`` grid points kept in the state."""

    prediction: ClassVar[str]
    stochastic = False
    nfe_per_step = 1
    lower_order_final: bool = False
    _d2_weight: float = 2.0

    def step_orders(self, n_steps: int) -> list[int]:
        """The order used on each step: lower while the history fills, and at the end with
        ``lower_order_final`` on grids of fewer than 10 steps."""
        # the class's order is the method's; an instance may declare a lower convergence order
        return _lowered_orders(type(self).order, n_steps, self.lower_order_final, warm_up=True)

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(ts.numel() - 1)
        a, c = multistep_coefficients(s, orders, self.prediction, d2_weight=self._d2_weight)
        cast = GridSchedule.cast
        # times stay float64: they feed the schedule inside the Denoiser
        return _MultistepState(ts.to(x.device, dtype=ts.dtype), cast(a, x), cast(c, x), orders)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        m = _model_output(denoiser, x, state.t[i], self.prediction)
        history = (m, *state.history)
        x_next = state.a[i] * x
        for j in range(state.orders[i]):
            x_next = x_next + state.c[i, j] * history[j]
        return x_next, replace(state, history=history[: type(self).order - 1])


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
        c = state.c.clone()
        c[:, 0] = GridSchedule.cast(c0, x)
        return replace(state, c=c, noise=GridSchedule.cast(sigma_t * u.sqrt(), x))

    def step(self, denoiser, sde, ts, i, x, state, noise):
        x, state = super().step(denoiser, sde, ts, i, x, state, noise)
        if state.noise is None:
            return x, state
        return x + state.noise[i] * noise(ts[i], ts[i + 1], x), state


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
    def __init__(self, *, lower_order_final: bool = True):
        self.lower_order_final = _check_bool("lower_order_final", lower_order_final)


# D2 weights of the third-order multistep update (see multistep_coefficients)
THIRD_ORDER_VARIANTS = {"taylor": 2.0, "reference": 1.0}


class _ThirdOrderMultistep(_HigherMultistep):
    def __init__(self, *, lower_order_final: bool = True, variant: str = "taylor"):
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

    Args:
        lower_order_final: on grids of fewer than 10 steps, use first order on the last step
            (Lu et al.'s reference implementation; stabilises very short grids).
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

    Args:
        lower_order_final: on grids of fewer than 10 steps, use orders 2 and 1 on the last two
            steps (Lu et al.'s reference implementation).
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

    Args:
        lower_order_final: on grids of fewer than 10 steps, use first order on the last step.
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

    Args:
        lower_order_final: on grids of fewer than 10 steps, use orders 2 and 1 on the last two
            steps.
        variant: ``"taylor"`` (order 3) or ``"reference"`` (the authors' code, diffusers'
            ``DPMSolverMultistepScheduler(solver_order=3)`` and k-diffusion's
            ``sample_dpmpp_3m_sde``: ``D2`` weighed by ``p3``, global order 2); see
            :class:`DPMSolver3M`.
    """

    name = "dpm_solver_pp_3m"
    order = 3
    prediction = "x0"
    reference = "lu2022dpmsolverpp"


# ---------------------------------------------------------------------------------------------
# Singlestep solvers


@dataclass(frozen=True)
class _SinglestepState:
    tables: dict[int, Tableau]  # per order used on this grid; t float64, a and b cast
    orders: list[int]


class _Singlestep(Sampler):
    """Exponential Runge–Kutta solvers: ``order`` model calls per step at
    ``lambda_i + r_k h`` (stage positions :data:`SINGLESTEP_RATIOS`)."""

    prediction: ClassVar[str]
    stochastic = False

    def __init__(self, *, lower_order_final: bool = True):
        self.lower_order_final = _check_bool("lower_order_final", lower_order_final)

    def step_orders(self, n_steps: int) -> list[int]:
        return _lowered_orders(self.order, n_steps, self.lower_order_final, warm_up=False)

    def nfe(self, n_steps: int) -> int:
        return sum(self.step_orders(n_steps))

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(ts.numel() - 1)
        cast = GridSchedule.cast
        tables = {}
        for k in sorted(set(orders)):
            tab = singlestep_tableau(sde, s, SINGLESTEP_RATIOS[k], self.prediction)
            tables[k] = Tableau(tab.t.to(x.device), cast(tab.a, x), cast(tab.b, x))
        return _SinglestepState(tables, orders)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        tab = state.tables[state.orders[i]]
        return _run_stages(denoiser, tab, i, x, self.prediction)[0], state


def _run_stages(denoiser, tab: Tableau, i: int, x: Tensor, prediction: str, ms=()):
    """All stages of step ``i`` of ``tab`` and its final update; ``ms`` are model outputs already
    known (reused by the adaptive solver after a rejected step). Returns ``(x_next, ms)``."""
    ms = list(ms)
    K = tab.stages
    for r in range(K):
        if len(ms) == r:
            u = (
                x
                if r == 0
                else tab.a[i, r - 1] * x + sum(tab.b[i, r - 1, j] * ms[j] for j in range(r))
            )
            ms.append(_model_output(denoiser, u, tab.t[i, r], prediction))
    x_next = tab.a[i, K - 1] * x
    for j in range(K):
        x_next = x_next + tab.b[i, K - 1, j] * ms[j]
    return x_next, ms


class DPMSolver2S(_Singlestep):
    r"""Singlestep DPM-Solver-2 (noise prediction), ``r1 = 1/2``.

    ``s1 = t_lambda(lambda_i + r1 h)``,
    ``u = (alpha_s1/alpha_i) x_i - sigma_s1 (e^{r1 h} - 1) eps_i``,
    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} (e^h - 1) eps_i
    - sigma_{i+1}/(2 r1) (e^h - 1) (eps(u, s1) - eps_i)``.

    **Order** 2. **NFE per step** 2 (``2n - 1`` with ``lower_order_final`` and ``n < 10``: the last
    step is DPM-Solver-1). **Stochastic** no.
    **Reference** Lu et al. 2022a, Algorithm 1.

    Args:
        lower_order_final: on grids of fewer than 10 steps, take the last step with DPM-Solver-1
            (as the reference multistep solvers do).
    """

    name = "dpm_solver_2s"
    order = 2
    nfe_per_step = 2
    prediction = "eps"
    reference = "lu2022dpmsolver"


class DPMSolver3S(_Singlestep):
    r"""Singlestep DPM-Solver-3 (noise prediction), ``r1 = 1/3``, ``r2 = 2/3``.

    ``u1 = (alpha_s1/alpha_i) x_i - sigma_s1 (e^{r1 h} - 1) eps_i``;
    ``u2 = (alpha_s2/alpha_i) x_i - sigma_s2 (e^{r2 h} - 1) eps_i
    - sigma_s2 r2/r1 ((e^{r2 h} - 1)/(r2 h) - 1) (eps(u1, s1) - eps_i)``;
    ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i - sigma_{i+1} (e^h - 1) eps_i
    - sigma_{i+1}/r2 ((e^h - 1)/h - 1) (eps(u2, s2) - eps_i)``.

    **Order** 3. **NFE per step** 3 (with ``lower_order_final`` and ``n < 10`` the last two steps
    take orders 2 and 1: ``3n - 3`` in all). **Stochastic** no.
    **Reference** Lu et al. 2022a, Algorithm 2.

    Args:
        lower_order_final: on grids of fewer than 10 steps, lower the order of the last steps to
            ``min(3, n - i)``.
    """

    name = "dpm_solver_3s"
    order = 3
    nfe_per_step = 3
    prediction = "eps"
    reference = "lu2022dpmsolver"


class DPMSolverPP2S(_Singlestep):
    r"""DPM-Solver++(2S): singlestep second-order solver of the data-prediction PF-ODE.

    With ``r1 = 1/2`` and ``s1 = t_lambda(lambda_i + r1 h)``:
    ``u = (sigma_s1/sigma_i) x_i - alpha_s1 (e^{-r1 h} - 1) x0_i``,
    ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h} - 1)
    ((1 - 1/(2 r1)) x0_i + 1/(2 r1) x0(u, s1))``.

    **Order** 2. **NFE per step** 2 (``2n - 1`` with ``lower_order_final`` and ``n < 10``).
    **Stochastic** no.
    **Reference** Lu et al. 2022b, Algorithm 1.

    Args:
        lower_order_final: on grids of fewer than 10 steps, take the last step with
            DPM-Solver++(1).
    """

    name = "dpm_solver_pp_2s"
    order = 2
    nfe_per_step = 2
    prediction = "x0"
    reference = "lu2022dpmsolverpp"


# ---------------------------------------------------------------------------------------------
# Adaptive step size (DPM-Solver-12 and DPM-Solver-23)


class DPMSolverAdaptive(Sampler):
    r"""DPM-Solver-12 / DPM-Solver-23: adaptive step size in ``lambda_`` from an embedded pair.

    Each attempt from ``s`` with step ``h`` computes a lower-order estimate (DPM-Solver-1 for
    ``order=2``; DPM-Solver-2 with ``r1 = 1/3`` for ``order=3``) and a higher-order one
    (DPM-Solver-2 with ``r1 = 1/2``; DPM-Solver-3) that shares its model calls, and the error

    ``E = max_batch RMS((x_high - x_low) / delta)`` with
    ``delta = max(atol, rtol max(|x_low|, |x_prev|))``.

    The step is accepted when ``E <= 1`` (``x <- x_high``); either way
    ``h <- min(theta h E^{-1/order}, lambda_end - lambda_s)``. One step size serves the whole
    batch, as in the paper. Two deviations from the reference, neither changing an accepted step:
    the model output at ``s`` is reused after a rejection (the reference recomputes it), and the
    last step is clipped to land exactly on each output time, so the ``t_err`` stopping tolerance is
    not needed. The grid's times are output times (trajectory and callback); the solver is the
    paper's with ``n_steps=1``.

    **Order** ``order`` (2 or 3). **NFE per step** adaptive (``nfe_per_step = None``; measured by
    the Denoiser; ``stats`` reports ``accepted_steps`` and ``rejected_steps``). **Stochastic** no.
    **Reference** Lu et al. 2022a, adaptive step size, Algorithms 4 (DPM-Solver-12) and 5
    (DPM-Solver-23); defaults from the authors' ``dpm_solver_adaptive``.

    Args:
        order: 2 (DPM-Solver-12) or 3 (DPM-Solver-23).
        rtol: relative tolerance (> 0).
        atol: absolute tolerance (> 0), in the units of the data.
        h_init: first step size in ``lambda_`` (> 0).
        theta: safety factor in ``(0, 1]``.
    """

    name = "dpm_solver_adaptive"
    order = 3
    stochastic = False
    nfe_per_step = None
    reference = "lu2022dpmsolver"
    prediction = "eps"

    def __init__(
        self,
        *,
        order: int = 3,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        theta: float = 0.9,
    ):
        if check_int("order", order) not in (2, 3):
            raise ValueError(f"order must be 2 (DPM-Solver-12) or 3 (DPM-Solver-23); got {order!r}")
        self.order = order
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)
        self.h_init = check_real("h_init", h_init, low=0.0, low_open=True)
        self.theta = check_real("theta", theta, low=0.0, high=1.0, low_open=True)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError("dpm_solver_adaptive chooses its own steps; use run()")

    def _pair(self, sde, s: float, t: float, like: Tensor) -> tuple[Tableau, Tableau]:
        """High- and low-order tableaux of one step from ``s`` to ``t`` (sharing stages)."""
        sched = GridSchedule.of(sde, torch.tensor([s, t], dtype=torch.float64))
        high_ratios = SINGLESTEP_RATIOS[self.order]
        high = singlestep_tableau(sde, sched, high_ratios, self.prediction)
        low = singlestep_tableau(
            sde, sched, high_ratios[:1] if self.order == 3 else (), self.prediction
        )
        cast = GridSchedule.cast
        return tuple(
            Tableau(tab.t.to(like.device), cast(tab.a, like), cast(tab.b, like))
            for tab in (high, low)
        )

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        grid = ts.tolist()
        lam = sde.lambda_(ts).tolist()
        trajectory = [x] if save_trajectory else None
        x_prev = x
        h = self.h_init
        accepted = rejected = 0
        bar = tqdm(total=len(grid) - 1, desc=self.name, disable=not progress, leave=False)
        for k in range(len(grid) - 1):
            s, lam_s = grid[k], lam[k]
            ms: list[Tensor] = []  # model outputs of the current attempt; ms[0] is at (x, s)
            while s != grid[k + 1]:
                lands = h >= lam[k + 1] - lam_s
                h_try = lam[k + 1] - lam_s if lands else h
                t = grid[k + 1] if lands else float(sde.inverse_lambda(lam_s + h_try))
                high, low = self._pair(sde, s, t, x)
                x_high, ms = _run_stages(denoiser, high, 0, x, self.prediction, ms[:1])
                x_low, _ = _run_stages(denoiser, low, 0, x, self.prediction, ms)
                delta = torch.maximum(x_low.abs(), x_prev.abs()).mul(self.rtol).clamp_min(self.atol)
                err = float(((x_high - x_low) / delta).flatten(1).pow(2).mean(1).sqrt().max())
                if not math.isfinite(err):
                    raise FloatingPointError(
                        f"non-finite error estimate at t={s:.6g} (step to t_next={t:.6g}) in "
                        f"{self.name!r}: the model or the state is not finite"
                    )
                if err <= 1.0:
                    accepted += 1
                    x, x_prev, ms = x_high, x_low, []
                    s, lam_s = t, (lam[k + 1] if lands else float(sde.lambda_(t)))
                else:
                    rejected += 1
                h = self.theta * h_try * err ** (-1.0 / self.order) if err > 0 else math.inf
            if trajectory is not None:
                trajectory.append(x)
            if callback is not None:
                callback(StepInfo(k, grid[k], grid[k + 1], x, None))
            bar.update()
        bar.close()
        traj = None if trajectory is None else torch.stack(trajectory)
        return x, traj, {"accepted_steps": accepted, "rejected_steps": rejected}
