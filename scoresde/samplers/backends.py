r"""The probability-flow ODE handed to general-purpose ODE solvers: torchdiffeq and scipy.

Both integrate the PF-ODE in the exactly equivalent scaled form (Song, Meng & Ermon 2021, eq. 14;
Karras et al. 2022, eq. 4), with ``y = x / alpha`` and ``lambda_ = log(alpha / sigma)``:

.. math:: \frac{dy}{d\lambda} = \hat x_0(\alpha y,\, t(\lambda)) - y,

from ``lambda_(ts[0])`` up to ``lambda_(ts[-1])``. It is the same ODE as Song et al. 2021, eq. 13
(substitute ``x = alpha y`` and ``dlambda/dt = -g^2 / (2 sigma^2)``), but its right-hand side is
smooth wherever the model is, whatever the schedule: in ``t`` a discrete (DDPM) schedule puts a
kink at every train step, which an adaptive solver resolves one by one. ``rtol``/``atol`` therefore
act on ``y``; ``scoresde.exact.reference_solution`` solves the same form.

The grid's times are output times: adaptive methods choose their own steps and interpolate
(``trajectory`` and ``callback`` see the solution at the grid), and fixed-step methods step
exactly on the grid (never silently on output times only; torchdiffeq issue #137). NFE is the
Denoiser's count, like every other sampler's; ``callback`` runs once per grid time after the
solve, with ``x0 = None``: returning ``Interrupt`` truncates the result at that grid time, and
returning a replacement state is an error (the solve is already done).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor
from torchdiffeq import odeint

from ..utils import check_real
from .base import Sampler, StepInfo, run_callback

__all__ = ["TorchdiffeqSampler", "TorchdiffeqFixedSampler", "ScipySampler"]

# torchdiffeq methods we integrate with, with their order and model calls per step (fixed grids).
TORCHDIFFEQ_FIXED = {
    "euler": (1, 1),
    "midpoint": (2, 2),
    "heun2": (2, 2),
    "heun3": (3, 3),
    "rk4": (4, 4),
}
TORCHDIFFEQ_ADAPTIVE = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}
SCIPY_METHODS = {"RK23": 3, "RK45": 5, "DOP853": 8}


class _ScaledPFODE:
    """``dy/dlambda = x0(alpha y, t(lambda)) - y`` as a callable ``f(lambda, y)`` of torch tensors.

    With ``count_steps`` it also counts accepted and rejected steps through torchdiffeq's
    adaptive-solver callbacks (fixed-grid solvers accept only ``callback_step``).
    """

    def __init__(self, denoiser, sde, shape, *, count_steps: bool):
        self.denoiser, self.sde, self.shape = denoiser, sde, shape
        self.accepted = self.rejected = 0
        if count_steps:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject

    def __call__(self, lam: Tensor, y: Tensor) -> Tensor:
        t = self.sde.inverse_lambda(lam.to(torch.float64))
        x = self.sde.alpha(t).to(y.dtype) * y
        return self.denoiser.predict(x.reshape(self.shape), t).x0.reshape(y.shape) - y

    def _accept(self, t0, y0, dt):
        self.accepted += 1

    def _reject(self, t0, y0, dt):
        self.rejected += 1


def _outputs(sde, ts: Tensor, x_start: Tensor, ys: Tensor, callback, save_trajectory, name):
    """States ``x = alpha y`` at the grid times from ``ys`` of shape ``(n + 1, *x.shape)``; the
    first is ``x_start`` itself (``alpha (x / alpha)`` would round). The callback runs after the
    solve: it may stop the result at a grid time, but cannot replace a state."""
    alpha = sde.alpha(ts.to(ys.device)).to(ys.dtype).reshape(-1, *([1] * (ys.ndim - 1)))
    xs = torch.cat([x_start[None], alpha[1:] * ys[1:]])
    if not bool(torch.isfinite(xs[-1]).all()):
        raise FloatingPointError("non-finite sample at the end of the ODE solve; the model or the "
                                 "tolerances let the solution blow up")  # fmt: skip
    grid = ts.tolist()
    stats: dict[str, Any] = {}
    if callback is not None:
        for k in range(len(grid) - 1):
            x_k = xs[k + 1]
            x_cb, stop = run_callback(callback, StepInfo(k, grid[k], grid[k + 1], x_k, None), name)
            if x_cb is not x_k:
                raise ValueError(
                    f"{name!r} integrates the whole grid in one solve, so its callback cannot "
                    "replace the state; use a step-based sampler (e.g. 'dpm_solver_pp_2m' or "
                    "'pf_rk4') to steer the run"
                )
            if stop:
                xs, stats = xs[: k + 2], {"interrupted_at": k}
                break
    return xs[-1], (xs if save_trajectory else None), stats


def check_tolerance(name: str, rtol: float, dtype: torch.dtype) -> None:
    """An adaptive solver stepping in ``dtype`` cannot meet an ``rtol`` below its resolution: its
    step size shrinks until it underflows (float16) or runs thousands of steps (bfloat16)."""
    eps = torch.finfo(dtype).eps
    if rtol < eps:
        raise ValueError(
            f"rtol={rtol:g} of {name!r} is below the resolution of a {dtype} state "
            f"(machine epsilon {eps:.3g}); give rtol >= {eps:.3g} or sample in float32"
        )


def _check_method(method, choices: dict, backend: str) -> str:
    if method not in choices:
        raise ValueError(f"method must be one of {sorted(choices)} for {backend}; got {method!r}")
    return method


class TorchdiffeqSampler(Sampler):
    r"""The PF-ODE through ``torchdiffeq.odeint`` (adaptive methods by default).

    ``dy/dlambda = x0(alpha y, t(lambda)) - y`` with ``y = x / alpha`` (module docstring), solved by
    ``method``. Adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``,
    ``adaptive_heun``) control the local error to ``atol + rtol |y|`` per step and interpolate at
    the grid; fixed-step methods (``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``) step
    exactly on the grid's ``lambda_`` values. The instance's ``order`` and ``nfe_per_step`` are the
    chosen method's (fixed-step ones in ``TORCHDIFFEQ_FIXED``, with ``fixed_grid = True``); the
    class attributes describe the default ``dopri5``.

    **Order** 5 for ``dopri5`` (the method's order). **NFE per step** adaptive
    (``nfe_per_step = None``; measured by the Denoiser; ``stats`` counts ``accepted_steps`` and
    ``rejected_steps``). **Stochastic** no.
    **Reference** Chen et al. 2018, torchdiffeq; Dormand & Prince 1980; the scaled PF-ODE of
    Song, Meng & Ermon 2021, eq. 14.

    Args:
        method: a torchdiffeq method name (above).
        rtol, atol: tolerances of adaptive methods (> 0; score_sde's defaults 1e-5). Fixed-step
            methods ignore them.
    """

    name = "torchdiffeq"
    order = 5
    stochastic = False
    nfe_per_step = None
    fixed_grid: ClassVar[bool] = False
    reference = "chen2018neuralode"
    _methods: ClassVar[dict] = {**TORCHDIFFEQ_ADAPTIVE, **TORCHDIFFEQ_FIXED}

    def __init__(self, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5):
        self.method = _check_method(method, self._methods, self.name)
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)
        if method in TORCHDIFFEQ_FIXED:
            self.order, self.nfe_per_step = TORCHDIFFEQ_FIXED[method]
            self.fixed_grid = True
        else:
            self.order = TORCHDIFFEQ_ADAPTIVE[method]
            self.nfe_per_step, self.fixed_grid = None, False

    def options(self) -> dict[str, Any]:
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol}

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError(f"{self.name} integrates the whole grid in run()")

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        if not self.fixed_grid:
            check_tolerance(self.name, self.rtol, x.dtype)
        lam = sde.lambda_(ts).to(x.device)
        y0 = x / sde.alpha(ts[0]).to(x.device, x.dtype)
        func = _ScaledPFODE(denoiser, sde, x.shape, count_steps=not self.fixed_grid)
        # Fixed-grid solvers step on exactly the times they are given (no step_size option), so
        # passing the whole grid as output times makes every grid point a step.
        ys = odeint(func, y0, lam, method=self.method, rtol=self.rtol, atol=self.atol)
        x, traj, stats = _outputs(sde, ts, x, ys, callback, save_trajectory, self.name)
        if not self.fixed_grid:
            stats.update(accepted_steps=func.accepted, rejected_steps=func.rejected)
        return x, traj, stats


class TorchdiffeqFixedSampler(TorchdiffeqSampler):
    r"""The PF-ODE through a fixed-step ``torchdiffeq`` method on exactly the sampling grid.

    ``dy/dlambda = x0(alpha y, t(lambda)) - y`` with ``y = x / alpha``, one step of ``method`` per
    grid interval ``[lambda_(t_i), lambda_(t_{i+1})]``. The default ``rk4`` is torchdiffeq's
    3/8-rule fourth-order Runge–Kutta method. Registered separately so that the registry-wide
    order test measures a torchdiffeq fixed-step solve (``fixed_grid = True``).

    **Order** 4 for ``rk4`` (``euler`` 1, ``midpoint``/``heun2`` 2, ``heun3`` 3).
    **NFE per step** 4 for ``rk4`` (equal to the order for these methods). **Stochastic** no.
    **Reference** Kutta 1901 (3/8 rule); Chen et al. 2018, torchdiffeq.

    Args:
        method: one of ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``.
    """

    name = "torchdiffeq_fixed"
    order = 4
    nfe_per_step = 4
    fixed_grid = True
    reference = "kutta1901"
    _methods = TORCHDIFFEQ_FIXED

    def __init__(self, *, method: str = "rk4"):
        super().__init__(method=method)

    def options(self) -> dict[str, Any]:
        return {"method": self.method}


class ScipySampler(Sampler):
    r"""The PF-ODE through ``scipy.integrate.solve_ivp`` (explicit Runge–Kutta, adaptive).

    ``dy/dlambda = x0(alpha y, t(lambda)) - y`` with ``y = x / alpha`` (module docstring), the whole
    batch as one system in float64 on the CPU (every evaluation copies the state to the model's
    device and back). The local error per step is kept below ``atol + rtol |y|`` (RMS norm); the
    grid is read from the dense output.

    **Order** 5 for ``RK45`` (``RK23`` 3, ``DOP853`` 8). **NFE per step** adaptive
    (``nfe_per_step = None``; measured by the Denoiser; ``stats`` reports ``accepted_steps`` and
    scipy's own ``solver_nfev``). **Stochastic** no.
    **Reference** Dormand & Prince 1980 (RK45); Hairer, Nørsett & Wanner, *Solving ODEs I*,
    Sec. II.10 (DOP853); Song et al. 2021 (score_sde's ODE sampler uses RK45 at 1e-5).

    Args:
        method: ``"RK45"`` (default), ``"DOP853"`` or ``"RK23"``.
        rtol, atol: tolerances (> 0; score_sde's defaults 1e-5).
    """

    name = "scipy"
    order = 5
    stochastic = False
    nfe_per_step = None
    reference = "dormand1980"

    def __init__(self, *, method: str = "RK45", rtol: float = 1e-5, atol: float = 1e-5):
        self.method = _check_method(method, SCIPY_METHODS, self.name)
        self.order = SCIPY_METHODS[method]
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)

    def options(self) -> dict[str, Any]:
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol}

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError(f"{self.name} integrates the whole grid in run()")

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        func = _ScaledPFODE(denoiser, sde, x.shape, count_steps=False)
        lam = sde.lambda_(ts).numpy()
        y0 = (x.detach().to("cpu", torch.float64) / sde.alpha(ts[0])).flatten().numpy()

        def rhs(lam_, y):
            y_t = torch.from_numpy(y).to(x.device, x.dtype)
            lam_t = torch.tensor(lam_, dtype=torch.float64, device=x.device)
            return func(lam_t, y_t).to("cpu", torch.float64).numpy()

        sol = solve_ivp(rhs, (lam[0], lam[-1]), y0, method=self.method, rtol=self.rtol,
                        atol=self.atol, dense_output=True)  # fmt: skip
        if not sol.success:
            raise RuntimeError(f"scipy solve_ivp ({self.method}) failed: {sol.message}")
        # Interior grid times from the dense output; the end point is the last step's own value.
        ys = np.concatenate([sol.sol(lam[:-1]), sol.y[:, -1:]], axis=1).T.copy()
        ys = torch.from_numpy(ys).reshape(-1, *x.shape).to(x.device, x.dtype)
        x, traj, stats = _outputs(sde, ts, x, ys, callback, save_trajectory, self.name)
        return x, traj, {**stats, "accepted_steps": sol.t.size - 1, "solver_nfev": int(sol.nfev)}
