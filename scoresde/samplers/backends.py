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
solve (or, streamed, as the solver passes each grid time), with ``x0 = None``: returning
``Interrupt`` stops the solve at that grid time, and returning a replacement state is an error
(a solver's own state cannot be replaced).

Adaptive solves always end: tolerances below ``16 eps`` of the state's dtype are raised to it
with a ``RuntimeWarning`` (the model is evaluated in that dtype, so its output carries rounding
noise of that size); a step below ``h_min`` in ``lambda_`` raises ``FloatingPointError`` and more
than ``max_nfe`` network calls ``RuntimeError``, each naming ``t``, the step size and the NFE spent.
torchdiffeq integrates half-precision states in float32 (its step-size control underflows in
float16), evaluating the model in the state's dtype.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.integrate import DOP853, RK23, RK45
from torch import Tensor
from torchdiffeq import odeint

from ..grids import Karras
from ..utils import check_int, check_real
from .base import Sampler, StepInfo, run_callback, tolerance_floor

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
_SCIPY_SOLVERS = {"RK23": RK23, "RK45": RK45, "DOP853": DOP853}


def _check_guards(h_min, max_nfe) -> tuple[float, int]:
    return check_real("h_min", h_min, low=0.0, low_open=True), check_int("max_nfe", max_nfe, low=1)


class _ScaledPFODE:
    """``dy/dlambda = x0(alpha y, t(lambda)) - y`` as a callable ``f(lambda, y)`` of torch tensors;
    the model sees ``x`` in ``dtype``.

    With ``guards = (h_min, max_nfe)`` it also counts accepted and rejected steps through
    torchdiffeq's adaptive-solver callbacks (fixed-grid solvers accept only ``callback_step``),
    and raises when a step falls below ``h_min`` or the NFE exceeds ``max_nfe``.
    """

    def __init__(self, denoiser, sde, shape, dtype, *, guards=None, name=""):
        self.denoiser, self.sde, self.shape, self.dtype = denoiser, sde, shape, dtype
        self.accepted = self.rejected = 0
        self.nfe_start, self.guards, self.name = denoiser.nfe, guards, name
        self.lam, self.dt = math.nan, math.nan  # the last step attempted
        self.first_bad: float | None = None  # t of the first non-finite model output
        if guards is not None:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject

    def __call__(self, lam: Tensor, y: Tensor) -> Tensor:
        if self.guards is not None and self.spent >= self.guards[1]:
            raise RuntimeError(
                f"{self.name}: spent max_nfe={self.guards[1]} NFE and reached {self.where()}; "
                "loosen the tolerances or raise max_nfe"
            )
        t = self.sde.inverse_lambda(lam.to(torch.float64))
        x = (self.sde.alpha(t).to(y.dtype) * y).to(self.dtype)
        x0 = self.denoiser.predict(x.reshape(self.shape), t).x0
        # an adaptive solver rejects a non-finite stage, so it is no error here; the first one
        # at a finite state is kept to name where the solve broke down (these solvers sync anyway)
        if self.first_bad is None and not bool(torch.isfinite(x0).all()):
            if bool(torch.isfinite(x).all()):
                self.first_bad = float(t)
        return x0.to(y.dtype).reshape(y.shape) - y

    @property
    def spent(self) -> int:
        return self.denoiser.nfe - self.nfe_start

    def where(self) -> str:
        t = float(self.sde.inverse_lambda(torch.tensor(self.lam, dtype=torch.float64)))
        return f"t={t:.6g} with step size h={self.dt:.3g} in lambda_ after {self.spent} NFE"

    def collapsed(self, detail: str) -> FloatingPointError:
        cause = (
            ""
            if self.first_bad is None
            else f"; the model output first became non-finite at t={self.first_bad:.6g}"
        )
        return FloatingPointError(
            f"{self.name}: step size collapsed ({detail}) at {self.where()}{cause}"
        )

    def _step(self, t0, dt):
        self.lam, self.dt = float(t0), float(dt)
        if abs(self.dt) < self.guards[0]:
            raise self.collapsed(f"|h| < h_min={self.guards[0]:.3g}")

    def _accept(self, t0, y0, dt):
        self.accepted += 1
        self._step(t0, dt)

    def _reject(self, t0, y0, dt):
        self.rejected += 1
        self._step(t0, dt)


class _Stop(Exception):
    """The callback asked to stop (``Interrupt``): the solve ends at that grid time."""


class _Outputs:
    """The states at the grid times, handed over as the solver passes them: ``x = alpha y``, the
    callback, the trajectory if asked for, and a check that names the first grid interval whose
    end state is not finite. Nothing else is kept, so memory does not grow with the grid."""

    def __init__(self, sde, ts: Tensor, x_start: Tensor, callback, save_trajectory, func):
        self.grid, self.alpha = ts.tolist(), sde.alpha(ts).tolist()
        self.dtype, self.callback, self.func = x_start.dtype, callback, func
        # preallocated: stacking a list at the end would hold the trajectory twice
        self.trajectory = (
            x_start.new_empty((ts.numel(), *x_start.shape)) if save_trajectory else None
        )
        if self.trajectory is not None:
            self.trajectory[0] = x_start
        self.k, self.since, self.x = 0, 0, x_start
        self.stats: dict[str, Any] = {}

    def skip_interior(self) -> None:
        """The next state handed over is the final one (no interior state was wanted)."""
        self.k = len(self.grid) - 2

    @property
    def wanted(self) -> bool:
        """Whether the states between the ends are needed at all."""
        return self.callback is not None or self.trajectory is not None

    def __call__(self, y: Tensor) -> None:
        """``y`` at the next grid time ``ts[k + 1]``."""
        k, grid = self.k, self.grid
        x = (self.alpha[k + 1] * y).to(self.dtype)
        if not bool(torch.isfinite(x).all()):
            where = (
                f"at step {k} (t={grid[k]:.6g} -> t_next={grid[k + 1]:.6g})"
                if self.since == k
                else f"between t={grid[self.since]:.6g} and t={grid[k + 1]:.6g}"
            )
            bad = self.func.first_bad
            cause = (
                "" if bad is None else f"; the model output first became non-finite at t={bad:.6g}"
            )
            raise FloatingPointError(f"non-finite sample {where} in {self.func.name!r}{cause}")
        if self.trajectory is not None:
            self.trajectory[k + 1] = x
        self.k = self.since = k + 1
        self.x = x
        if self.callback is not None:
            x_cb, stop = run_callback(
                self.callback, StepInfo(k, grid[k], grid[k + 1], x, None), self.func.name
            )
            if x_cb is not x:
                raise ValueError(
                    f"{self.func.name!r} integrates the whole grid in one solve, so its callback cannot "
                    "replace the state; use a step-based sampler (e.g. 'dpm_solver_pp_2m' or "
                    "'pf_rk4') to steer the run"
                )
            if stop:
                self.stats["interrupted_at"] = k
                raise _Stop

    def result(self) -> tuple[Tensor, Tensor | None]:
        traj = None if self.trajectory is None else self.trajectory[: self.k + 1]
        return self.x, traj


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
        h_min: smallest step in ``lambda_`` (> 0) of adaptive methods before the solve is
            declared collapsed.
        max_nfe: most network calls (>= 1) of an adaptive solve.
    """

    name = "torchdiffeq"
    order = 5
    stochastic = False
    nfe_per_step = None
    fixed_grid: ClassVar[bool] = False
    reference = "chen2018neuralode"
    _methods: ClassVar[dict] = {**TORCHDIFFEQ_ADAPTIVE, **TORCHDIFFEQ_FIXED}

    def __init__(
        self,
        *,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        h_min: float = 1e-6,
        max_nfe: int = 10_000,
    ):
        self.method = _check_method(method, self._methods, self.name)
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)
        self.h_min, self.max_nfe = _check_guards(h_min, max_nfe)
        if method in TORCHDIFFEQ_FIXED:
            self.order, self.nfe_per_step = TORCHDIFFEQ_FIXED[method]
            self.fixed_grid = True
        else:
            self.order = TORCHDIFFEQ_ADAPTIVE[method]
            self.nfe_per_step, self.fixed_grid = None, False

    def options(self) -> dict[str, Any]:
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol,
                "h_min": self.h_min, "max_nfe": self.max_nfe}  # fmt: skip

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError(f"{self.name} integrates the whole grid in run()")

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        lam = sde.lambda_(ts).to(x.device)
        work = torch.promote_types(x.dtype, torch.float32)
        y0 = x.to(work) / sde.alpha(ts[0]).to(x.device, work)
        guards = None if self.fixed_grid else (self.h_min, self.max_nfe)
        func = _ScaledPFODE(denoiser, sde, x.shape, x.dtype, guards=guards, name=self.name)
        rtol, atol = self.rtol, self.atol
        if not self.fixed_grid:
            rtol, atol = tolerance_floor(rtol, atol, x.dtype, self.name)
        out = _Outputs(sde, ts, x, callback, save_trajectory, func)
        try:
            if self.fixed_grid:
                # one odeint call per interval is one step of the method (torchdiffeq's fixed
                # solvers step on exactly the times they are given), and keeps one state alive
                y = y0
                for i in range(ts.numel() - 1):
                    y = odeint(func, y, lam[i : i + 2], method=self.method)[1]
                    out(y.to(x.dtype))
            else:
                # adaptive steps do not depend on the output times (the solver interpolates), so
                # without a trajectory or callback only the end point is asked for
                times = lam if out.wanted else lam[[0, -1]]
                ys = odeint(func, y0, times, method=self.method, rtol=rtol, atol=atol)
                if not out.wanted:
                    out.skip_interior()
                for y in ys[1:]:
                    out(y.to(x.dtype))
        except AssertionError as err:  # torchdiffeq's "underflow in dt"
            raise func.collapsed(str(err)) from err
        except _Stop:
            pass
        x, traj = out.result()
        stats = dict(out.stats)
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
    **Default grid** ``Karras()``: the grid on which it comes closest to DDIM at equal NFE on
    our exact problems. Explicit RK4 on ``dy/dlambda = x0 - y`` is stable only for steps
    ``h <= 2.78`` in ``lambda_`` (its real stability interval), so it needs at least 6 steps on
    the cosine schedule's 15-wide ``lambda_`` range on any grid.

    Args:
        method: one of ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``.
    """

    name = "torchdiffeq_fixed"
    order = 4
    nfe_per_step = 4
    fixed_grid = True
    reference = "kutta1901"
    default_grid = Karras()
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
        h_min: smallest step in ``lambda_`` (> 0) before the solve is declared collapsed.
        max_nfe: most network calls (>= 1) of one solve.
    """

    name = "scipy"
    order = 5
    stochastic = False
    nfe_per_step = None
    reference = "dormand1980"

    def __init__(
        self,
        *,
        method: str = "RK45",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        h_min: float = 1e-6,
        max_nfe: int = 10_000,
    ):
        self.method = _check_method(method, SCIPY_METHODS, self.name)
        self.order = SCIPY_METHODS[method]
        self.rtol = check_real("rtol", rtol, low=0.0, low_open=True)
        self.atol = check_real("atol", atol, low=0.0, low_open=True)
        self.h_min, self.max_nfe = _check_guards(h_min, max_nfe)

    def options(self) -> dict[str, Any]:
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol,
                "h_min": self.h_min, "max_nfe": self.max_nfe}  # fmt: skip

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError(f"{self.name} integrates the whole grid in run()")

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        guards = (self.h_min, self.max_nfe)
        func = _ScaledPFODE(denoiser, sde, x.shape, x.dtype, guards=guards, name=self.name)
        rtol, atol = tolerance_floor(self.rtol, self.atol, x.dtype, self.name)
        lam = sde.lambda_(ts).numpy()
        y0 = (x.detach().to("cpu", torch.float64) / sde.alpha(ts[0])).flatten().numpy()

        def rhs(lam_, y):
            # the state stays float64 (scipy's); the model sees x.dtype through func
            y_t = torch.from_numpy(y).to(x.device)
            lam_t = torch.tensor(lam_, dtype=torch.float64, device=x.device)
            return func(lam_t, y_t).to("cpu", torch.float64).numpy()

        out = _Outputs(sde, ts, x, callback, save_trajectory, func)

        def emit(y: np.ndarray) -> None:
            out(torch.from_numpy(np.ascontiguousarray(y)).reshape(x.shape).to(x.device))

        # solve_ivp's loop, unrolled so that every step's t and size are seen by the guards, and
        # each grid time is read from the dense output of the step that passes it (then dropped)
        solver = _SCIPY_SOLVERS[self.method](rhs, lam[0], y0, lam[-1], rtol=rtol, atol=atol)
        last = ts.numel() - 1
        direction = 1.0 if lam[-1] > lam[0] else -1.0  # inversion runs lambda_ downwards
        try:
            self._solve(solver, func, out, emit, lam, direction, last)
        except _Stop:
            pass
        x, traj = out.result()
        return x, traj, {**out.stats, "accepted_steps": solver.accepted,
                         "solver_nfev": int(solver.nfev)}  # fmt: skip

    def _solve(self, solver, func, out, emit, lam, direction, last) -> None:
        """Step ``solver`` to the end, handing each grid time it passes to ``out``."""
        solver.accepted, nxt = 0, 1
        while solver.status == "running":
            func.lam, func.dt = solver.t, solver.step_size or math.nan
            message = solver.step()
            if solver.status == "failed":
                raise func.collapsed(f"scipy {self.method}: {message}")
            if solver.step_size is not None and solver.t != lam[-1]:
                func.lam, func.dt = solver.t, solver.step_size
                if solver.step_size < self.h_min:
                    raise func.collapsed(f"h < h_min={self.h_min:.3g}")
            solver.accepted += 1
            dense = None
            while out.wanted and nxt < last and direction * (lam[nxt] - solver.t) <= 0:
                dense = solver.dense_output() if dense is None else dense
                emit(dense(lam[nxt]))  # an interior grid time inside this step
                nxt += 1
        if not out.wanted:
            out.skip_interior()
        emit(solver.y)  # the end point is the last step's own value
