"""DPM-Solver singlestep family: DPM-Solver-2S/3S, DPM-Solver++(2S) and the adaptive
DPM-Solver-12/23.

Exponential Runge–Kutta steps in ``lambda_`` whose stage coefficients come from
:func:`~scoresde.samplers.lambda_space.singlestep_tableau` (the maths is in that module's
docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import TimePoint
from ..utils import check_bool, check_int, check_real
from .base import (
    GridSchedule,
    Sampler,
    StepInfo,
    run_callback,
    tolerance_floor,
    weighted_sum,
)
from .lambda_space import (
    SINGLESTEP_RATIOS,
    Tableau,
    lowered_orders,
    model_output,
    singlestep_tableau,
)

__all__ = ["DPMSolver2S", "DPMSolver3S", "DPMSolverPP2S", "DPMSolverAdaptive"]

# ---------------------------------------------------------------------------------------------
# Singlestep solvers


@dataclass(frozen=True)
class _SinglestepState:
    tables: dict[int, PreparedTableau]  # per order used on this grid
    orders: list[int]


class PreparedTableau(NamedTuple):
    """A :class:`Tableau` ready to run: stage times as the Denoiser's
    :class:`~scoresde.denoiser.TimePoint` s, coefficients as Python floats (indexed
    ``[i][r]``, ``[i][r][j]``), built once per run."""

    t: list[list[TimePoint]]
    a: list[list[float]]
    b: list[list[list[float]]]
    stages: int

    @classmethod
    def of(cls, tab: Tableau, denoiser, like: Tensor) -> PreparedTableau:
        n, K = tab.t.shape
        times = denoiser.times(tab.t.reshape(-1), like)
        t = [times[i * K : (i + 1) * K] for i in range(n)]
        values = GridSchedule.values
        return cls(t, values(tab.a), values(tab.b), K)


class _Singlestep(Sampler):
    """Exponential Runge–Kutta solvers: ``order`` model calls per step at
    ``lambda_i + r_k h`` (stage positions :data:`SINGLESTEP_RATIOS`).

    ``lower_order_final`` keeps the reference's count rule (``n < 10``) here: a singlestep
    method extrapolates from no earlier step, so the ratio of consecutive steps does not enter
    its stability, and its NFE must be a function of ``n_steps`` alone (``nfe(n)``). Default
    grid ``UniformTime()`` (the base default): the grid closest to DDIM at equal NFE on the
    five schedules of ``tests/convergence/test_defaults.py``; logSNR-uniform and Karras grids
    lose 2-15x to DDIM on the cosine schedule.
    """

    prediction: ClassVar[str]
    stochastic = False

    def __init__(self, *, lower_order_final: bool = True):
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def step_orders(self, n_steps: int) -> list[int]:
        return lowered_orders(self.order, n_steps, self.lower_order_final, warm_up=False)

    def nfe(self, n_steps: int) -> int:
        return sum(self.step_orders(n_steps))

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        orders = self.step_orders(ts.numel() - 1)
        tables = {}
        for k in sorted(set(orders)):
            tab = singlestep_tableau(sde, s, SINGLESTEP_RATIOS[k], self.prediction)
            tables[k] = PreparedTableau.of(tab, denoiser, x)
        return _SinglestepState(tables, orders)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        tab = state.tables[state.orders[i]]
        return _run_stages(denoiser, tab, i, x, self.prediction)[0], state


def _run_stages(denoiser, tab: PreparedTableau, i: int, x: Tensor, prediction: str, ms=()):
    """All stages of step ``i`` of ``tab`` and its final update; ``ms`` are model outputs already
    known (reused by the adaptive solver after a rejected step). Returns ``(x_next, ms)``."""
    ms = list(ms)
    K, a, b = tab.stages, tab.a[i], tab.b[i]
    for r in range(K):
        if len(ms) == r:
            u = x if r == 0 else weighted_sum(x, a[r - 1], b[r - 1], ms, r)
            ms.append(model_output(denoiser, u, tab.t[i][r], prediction))
    return weighted_sum(x, a[K - 1], b[K - 1], ms, K), ms


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

    Termination: tolerances below ``16 eps`` of the state's dtype (float32: ``1.9e-6``; float16:
    ``1.6e-2``; bfloat16: ``0.125``) are raised to it with a ``RuntimeWarning``, since the error
    estimate is rounding noise below that; the error norm is computed in float64. A step size below
    ``h_min`` or more than ``max_nfe`` network calls end the run with a ``FloatingPointError`` /
    ``RuntimeError`` naming ``t``, the step size and the NFE spent.

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
        h_min: smallest step in ``lambda_`` (> 0) before the run is declared collapsed.
        max_nfe: most network calls (>= 1) one run may spend.
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
        h_min: float = 1e-6,
        max_nfe: int = 10_000,
    ):
        if check_int("order", order) not in (2, 3):
            raise ValueError(f"order must be 2 (DPM-Solver-12) or 3 (DPM-Solver-23); got {order!r}")
        self.order = order
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)
        self.h_init = check_real("h_init", h_init, low=0.0, low_open=True)
        self.theta = check_real("theta", theta, low=0.0, high=1.0, low_open=True)
        self.h_min = check_real("h_min", h_min, low=0.0, low_open=True)
        self.max_nfe = check_int("max_nfe", max_nfe, low=1)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError("dpm_solver_adaptive chooses its own steps; use run()")

    def _pair(self, denoiser, sde, s: float, t: float, like: Tensor):
        """High- and low-order tableaux of one step from ``s`` to ``t`` (sharing stages)."""
        sched = GridSchedule.of(sde, torch.tensor([s, t], dtype=torch.float64))
        high_ratios = SINGLESTEP_RATIOS[self.order]
        high = singlestep_tableau(sde, sched, high_ratios, self.prediction)
        low = singlestep_tableau(
            sde, sched, high_ratios[:1] if self.order == 3 else (), self.prediction
        )
        return tuple(PreparedTableau.of(tab, denoiser, like) for tab in (high, low))

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        grid = ts.tolist()
        lam = sde.lambda_(ts).tolist()
        rtol, atol = tolerance_floor(self.rtol, self.atol, x.dtype, self.name)
        nfe_start = denoiser.nfe
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
                spent = denoiser.nfe - nfe_start
                if not lands and h_try < self.h_min:
                    raise FloatingPointError(
                        f"{self.name}: step size collapsed at t={s:.6g}: h={h_try:.3g} < "
                        f"h_min={self.h_min:.3g} in lambda_ after {spent} NFE (rtol={rtol:.3g}, "
                        f"atol={atol:.3g}, state {x.dtype}); the model or the state is too noisy "
                        f"for these tolerances"
                    )
                if spent >= self.max_nfe:
                    raise RuntimeError(
                        f"{self.name}: spent max_nfe={self.max_nfe} NFE and reached t={s:.6g} "
                        f"with step size h={h_try:.3g} in lambda_ (rtol={rtol:.3g}, "
                        f"atol={atol:.3g}); loosen the tolerances or raise max_nfe"
                    )
                t = grid[k + 1] if lands else float(sde.inverse_lambda(lam_s + h_try))
                high, low = self._pair(denoiser, sde, s, t, x)
                x_high, ms = _run_stages(denoiser, high, 0, x, self.prediction, ms[:1])
                x_low, _ = _run_stages(denoiser, low, 0, x, self.prediction, ms)
                # in float64: in half precision (diff / delta)^2 overflows from err ~ 256 on
                delta = torch.maximum(x_low.abs(), x_prev.abs()).double().mul(rtol).clamp_min(atol)
                ratio = (x_high - x_low).double() / delta
                err = float(ratio.flatten(1).pow(2).mean(1).sqrt().max())
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
            stop = False
            if callback is not None:
                x_cb, stop = run_callback(callback, StepInfo(k, grid[k], grid[k + 1], x, None),
                                          self.name)  # fmt: skip
                if x_cb is not x:
                    x = x_prev = x_cb
            if trajectory is not None:
                trajectory.append(x)
            bar.update()
            if stop:
                break
        bar.close()
        traj = None if trajectory is None else torch.stack(trajectory)
        stats = {"accepted_steps": accepted, "rejected_steps": rejected}
        return x, traj, stats if not stop else {**stats, "interrupted_at": k}
