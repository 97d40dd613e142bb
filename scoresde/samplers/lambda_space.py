r"""Shared lambda-space maths of the DPM-Solver family: phi-functions, multistep and singlestep
coefficients, per-step orders.

DPM-Solver and DPM-Solver++ are exponential integrators of the PF-ODE in half log-SNR.

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

Every coefficient is a function of the grid only. A sampler's ``init`` evaluates them in float64 for the whole
grid (stage times by ``sde.inverse_lambda``) and casts once; ``step`` is a linear combination of
``x`` and model outputs. Nothing here depends on the SDE class: only ``alpha``, ``sigma`` and
``lambda_`` enter, so VP, sub-VP, VE and discrete schedules all work, with any parameterization
(the Denoiser returns both ``eps`` and ``x0`` from one call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import GridSchedule

# The reference implementation lowers the order of the final steps only on grids of fewer than
# 10 steps (Lu et al.'s dpm_solver_pytorch.py, `lower_order_final and steps < 10`): on longer grids
# the final steps are short enough to be stable, and a first-order last step would cap a
# third-order method at global order 2. This is the rule of ``lower_order_final=True``.
LOWER_ORDER_FINAL_BELOW = 10

# The geometric rule of ``lower_order_final="auto"`` (see ``geometric_orders``).
# A step longer than STEP_RATIO_MAX times the previous one is taken at order 1: the linear
# extrapolation of the model output then weighs the previous output by h_i / (2 h_{i-1}) > 3/4,
# and on time-uniform grids the last step is 3.5-4.7x the one before at every step count.
STEP_RATIO_MAX = 1.5
# Third order only on steps of at most 1 in lambda_: the reference's 10-step threshold expressed
# in the step itself (its logSNR-uniform grids span ~10 in lambda_, so fewer than 10 steps means
# h > 1), which keeps the rule right on any grid and schedule.
THIRD_ORDER_H_MAX = 1.0
LOWER_ORDER_FINAL_CHOICES = ("auto", True, False)

# Stage positions r_k in (0, 1) of the singlestep solvers, as fractions of h (Lu et al. 2022a,
# Algorithms 1 and 2: r1 = 1/2 for DPM-Solver-2; r1 = 1/3, r2 = 2/3 for DPM-Solver-3).
SINGLESTEP_RATIOS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


# ---------------------------------------------------------------------------------------------
# Coefficients (float64, vectorised over the steps of a grid)


def phi(hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``p1 = e^hh - 1``, ``p2 = p1/hh - 1``, ``p3 = p2/hh - 1/2`` (Taylor weights of the
    exponential integral: ``int_0^h e^{h-u} u^k / k! du = h^k p_{k+1}`` for ``hh = h``)."""
    p1 = torch.expm1(hh)
    p2 = p1 / hh - 1.0
    return p1, p2, p2 / hh - 0.5


def linear_part(prediction: str, alpha_s, sigma_s, alpha_t, sigma_t, h, eta: float = 0.0):
    """``(a, B, hh)`` of the update ``x_t = a x_s + B (p1(hh) m + ...)`` from ``s`` to ``t``.

    ``eta > 0`` (data prediction only) is the reverse SDE of the family
    ``dx = [f x - (1 + eta)/2 g^2 score] dt + sqrt(eta) g dW`` (k-diffusion's ``eta`` of
    ``sample_dpmpp_2m_sde``; ``eta = 1`` is the reverse SDE of Song et al. 2021): in ``lambda_``
    its linear part contracts ``x - alpha x0`` at rate ``1 + eta``, so ``a = (sigma_t/sigma_s)
    e^{-eta h}`` and ``hh = -(1 + eta) h``; its noise is :func:`sde_noise_scale`.
    """
    if prediction == "eps":
        if eta != 0:
            raise ValueError(f"eta applies to data prediction only; got eta={eta!r} with eps")
        return alpha_t / alpha_s, -sigma_t, h
    if eta == 0:  # also where h = inf (a full denoise), which exp(-0 * h) would make NaN
        return sigma_t / sigma_s, -alpha_t, -h
    return sigma_t / sigma_s * torch.exp(-eta * h), -alpha_t, -(1.0 + eta) * h


def sde_noise_scale(sigma_t: Tensor, h: Tensor, eta: float) -> Tensor:
    """Standard deviation ``sigma_t sqrt(1 - e^{-2 eta h})`` of the noise the SDE of
    :func:`linear_part` adds over a step of length ``h`` in ``lambda_`` (exact in distribution:
    ``int_0^h e^{-2(1+eta)(h-u)} 2 eta sigma_u^2 du`` with ``sigma_u = sigma_s e^{-u}`` in
    ``x/alpha``)."""
    return sigma_t * (-torch.expm1(-2.0 * eta * h)).sqrt()


def ancestral_split(h: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """k-diffusion's ``get_ancestral_step`` in ``lambda_``: a step of length ``h`` to the level
    ``s_t = sigma_t / alpha_t`` is split into a deterministic step to ``s_down = s_t sqrt(1 - u)``
    and fresh noise of standard deviation ``s_up = s_t sqrt(u)`` (``s_down^2 + s_up^2 = s_t^2``),
    with ``u = min(1, eta^2 (1 - e^{-2h}))``; ``eta = 1`` is the Gaussian posterior variance
    (DDPM), ``eta`` in ``[0, 1]`` DDIM's ``sigma_t(eta)`` (Song et al. 2021a, eq. 16).

    Returns ``(h_down, u)``: ``h_down = h - log(1 - u)/2`` is the deterministic step's length in
    ``lambda_`` (``inf`` where ``u = 1``)."""
    u = (eta**2 * -torch.expm1(-2.0 * h)).clamp(max=1.0)
    return h - 0.5 * torch.log1p(-u), u


def model_output(denoiser, x: Tensor, t: Tensor, prediction: str) -> Tensor:
    pred = denoiser.predict(x, t)
    return pred.eps if prediction == "eps" else pred.x0


def multistep_coefficients(
    s: GridSchedule,
    orders: list[int],
    prediction: str,
    *,
    d2_weight: float = 2.0,
    eta: float = 0.0,
    solver_type: str = "midpoint",
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
    ``solver_type="heun"`` makes order 2 the Taylor form ``B (p1 m_0 + p2 D1_0)`` (diffusers' and
    k-diffusion's "heun"). ``eta`` selects the SDE of :func:`linear_part` (data prediction); the
    caller adds its noise.
    """
    lam = s.lambda_
    h = lam[1:] - lam[:-1]
    n = h.numel()
    a, B, hh = linear_part(prediction, s.alpha[:-1], s.sigma[:-1], s.alpha[1:], s.sigma[1:], h, eta)
    p1, p2, p3 = phi(hh)
    nan = torch.full((2,), math.nan, dtype=h.dtype)
    h_prev = torch.cat([nan, h])  # h_prev[i + 2 - k] = h_{i-k}; NaN before the grid starts
    r0 = h_prev[1:-1] / h
    r1 = h_prev[:-2] / h
    zero = torch.zeros_like(h)
    rows = {
        1: torch.stack([B * p1, zero, zero], 1),
        2: torch.stack([B * p1 * (1.0 + 0.5 / r0), -B * p1 * 0.5 / r0, zero], 1),
    }
    if solver_type == "heun":
        rows[2] = torch.stack([B * (p1 + p2 / r0), -B * p2 / r0, zero], 1)
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


def singlestep_tableau(
    sde,
    s: GridSchedule,
    ratios: tuple[float, ...],
    prediction: str,
    *,
    lambda_next: Tensor | None = None,
) -> Tableau:
    """The tableau of DPM-Solver-(K) with stage positions ``ratios`` (``K = len(ratios) + 1``).

    K = 1 is DPM-Solver-1 / DPM-Solver++(1). K = 2 is Lu et al. 2022a Algorithm 1 (eps) and Lu et
    al. 2022b Algorithm 1 (x0): ``u = a_1 x + B_1 p1(r1 hh) m_0``,
    ``x_t = a x + B p1(hh) ((1 - 1/(2 r1)) m_0 + 1/(2 r1) m_1)``. K = 3 is Lu et al. 2022a
    Algorithm 2: ``u_2 = a_2 x + B_2 (p1(r2 hh) m_0 + r2/r1 p2(r2 hh) (m_1 - m_0))`` and
    ``x_t = a x + B (p1(hh) m_0 + p2(hh)/r2 (m_2 - m_0))``.

    ``lambda_next`` (one per step) moves each step's target to the half log-SNR
    ``lambda_next >= lambda_{i+1}`` at the next grid time's ``alpha``, i.e. to the noise level
    ``alpha_{i+1} e^{-lambda_next}``: the deterministic part of an ancestral step (stages at
    ``lambda_i + r (lambda_next - lambda_i)``).
    """
    lam_s = s.lambda_[:-1]
    lam_t = s.lambda_[1:] if lambda_next is None else lambda_next
    sigma_t = s.sigma[1:] if lambda_next is None else s.alpha[1:] * torch.exp(-lambda_next)
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
        a_r, B_r, hh_r = linear_part(
            prediction, s.alpha[:-1], s.sigma[:-1], g.alpha, g.sigma, ratio * h
        )
        t[:, r + 1], a[:, r] = g.t, a_r
        stage_hh.append((B_r, hh_r))
    a_T, B_T, hh = linear_part(prediction, s.alpha[:-1], s.sigma[:-1], s.alpha[1:], sigma_t, h)
    a[:, K - 1] = a_T
    p1, p2, _ = phi(hh)
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
        q1, q2, _ = phi(hh2)
        b[:, 1, 0] = B2 * (q1 - (r2 / r1) * q2)
        b[:, 1, 1] = B2 * (r2 / r1) * q2
        b[:, 2, 0] = B_T * (p1 - p2 / r2)
        b[:, 2, 2] = B_T * p2 / r2
    else:
        raise ValueError(f"singlestep DPM-Solver has orders 1, 2 and 3; got order {K}")
    return Tableau(t, a, b)


def check_lower_order_final(value) -> str | bool:
    """Validate ``lower_order_final``: ``"auto"`` (geometric rule), ``True`` (the reference's
    count rule) or ``False``."""
    if not (value == "auto" and isinstance(value, str)) and not isinstance(value, bool):
        raise ValueError(
            f"lower_order_final must be 'auto' or a bool (True or False); got {value!r}"
        )
    return value


def geometric_orders(orders: list[int], h) -> list[int]:
    """Lower the per-step ``orders`` where the grid's geometry makes extrapolation unsafe.

    ``h`` are the steps in ``lambda_`` (their lengths count, so an increasing inversion grid is
    treated like the sampling grid it reverses). Step ``i`` is taken at order 1 when
    ``|h_i| > STEP_RATIO_MAX |h_{i-1}|`` (the step outruns the history it extrapolates from), and at
    order at most 2 when ``h_i > THIRD_ORDER_H_MAX``. On logSNR-uniform grids of 10 or more steps
    nothing changes, so refinement keeps the declared order.
    """
    h = [abs(float(v)) for v in h]  # step lengths: inversion runs lambda_ downwards (h < 0)
    if len(h) != len(orders):
        raise ValueError(f"h must hold one step per order ({len(orders)}); got {len(h)}")
    out = list(orders)
    for i in range(1, len(out)):
        if out[i] >= 3 and h[i] > THIRD_ORDER_H_MAX:
            out[i] = 2
        if h[i] > STEP_RATIO_MAX * h[i - 1]:
            out[i] = 1
    return out


def lowered_orders(
    order: int, n: int, lower_order_final: str | bool, warm_up: bool, h=None
) -> list[int]:
    """Per-step orders: ``min(order, i + 1)`` while a multistep history fills (``warm_up``);
    then ``min(order, n - i)`` at the end with ``lower_order_final=True`` and ``n < 10`` (the
    reference's count rule), or :func:`geometric_orders` of the grid's steps ``h`` in
    ``lambda_`` with ``lower_order_final="auto"``."""
    orders = [min(order, i + 1) if warm_up else order for i in range(n)]
    if lower_order_final == "auto":
        if h is None:
            raise ValueError(
                "lower_order_final='auto' decides from the grid: give the steps h in lambda_"
            )
        return geometric_orders(orders, h)
    if lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
        orders = [min(k, n - i) for i, k in enumerate(orders)]
    return orders
