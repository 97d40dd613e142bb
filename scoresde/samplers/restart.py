r"""Restart sampling (Xu et al. 2023): ODE steps with restart cycles that re-noise and re-solve.

An ODE sampler's errors, once made, are carried to the end; an SDE's noise contracts them but
costs many steps. Restart alternates the two: it solves the probability-flow ODE on the main
grid, and when it reaches the lower end ``t_min`` of a restart interval ``[t_min, t_max]`` it
``K`` times adds the *exact* forward-process noise from ``t_min`` to ``t_max``,

.. math:: x_{t_\max} = \frac{\alpha_{t_\max}}{\alpha_{t_\min}} x_{t_\min}
          + \sqrt{\sigma_{t_\max}^2 - \frac{\alpha_{t_\max}^2}{\alpha_{t_\min}^2}
          \sigma_{t_\min}^2}\; z,

and solves the ODE from ``t_max`` back to ``t_min`` again (Xu et al. 2023, Algorithm 1). The
forward step is the process's own transition, so an exact ODE solver would leave the marginal at
``t_min`` unchanged, and the accumulated error contracts by a factor that falls with ``t_max``
(their Sec. 4).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch

from ..utils import check_int, check_real
from .base import GridSchedule, Sampler

__all__ = ["Restart"]

_VARIABLES = ("sigma", "t")


class Restart(Sampler):
    r"""Restart sampling: a deterministic ODE sampler on the grid, plus ``K`` restart cycles.

    The lower end of the restart interval is snapped to the grid point whose noise level
    ``s = sigma/alpha`` is closest to it in ``log s`` (among the points below ``t_max``), so
    that the restart fits in the driver's loop. Call it ``t_j``. Step ``j - 1`` (the one that
    ends at ``t_j``) is followed, inside the same driver step, by ``K`` cycles of:
    ``x <- (alpha_max/alpha_j) x + sqrt(sigma_max^2 - (alpha_max/alpha_j)^2 sigma_j^2) z`` (the
    exact forward transition, ``z`` an auxiliary draw of the noise source), then
    ``restart_steps`` steps of ``solver`` from ``t_max`` to ``t_j`` on an EDM grid
    (``s^{1/7}`` uniform, Karras et al. 2022, eq. 5, as the paper). The main grid is solved in two
    segments, ``t_0 .. t_j`` and ``t_j .. t_n``, each started afresh (a multistep solver's
    history from before a restart belongs to another trajectory).

    **Order** the solver's ODE order (2 for the default Heun): with ``K = 0`` the sampler is that
    ODE sampler (and ``stochastic`` is then ``False``). **Strong order**: none towards the reverse
    SDE (``strong_convergence = False``): the restart noise is a finite jump, not a Brownian
    increment, and the snapped lower end moves with the grid. **Weak order** the solver's order
    when the restart segments are refined with the grid (``restart_steps`` proportional to
    ``n_steps``, as the default does): the forward jump is exact in distribution, so only the
    ODE segments err (measured 2.0 for Heun on Gaussian data). With a fixed ``restart_steps``
    the restart segments leave an ``n``-independent bias, which the paper trades for the
    contraction of the main grid's errors.
    **NFE** ``solver.nfe(n_steps) + K solver.nfe(r)`` with ``r`` the restart steps per cycle:
    ``2 n + 2 K r`` for Heun (``2 n + 4 r`` on the defaults: 48 at ``n = 18``, 18 at ``n = 7``).
    **Stochastic** yes (if ``K > 0``).
    **Reference** Xu, Deng, Cheng, Tian, Liu & Jaakkola 2023, "Restart Sampling for Improving
    Generative Processes" (arXiv:2306.14878), Algorithm 1; defaults from their CIFAR-10 setting
    (one interval ``[0.06, 0.30]`` in EDM's sigma, ``K = 2``, Heun, ``N_restart = 3`` on their
    18 main steps, scaled here with the main grid so that small budgets keep their main steps).

    Args:
        solver: a deterministic step-based sampler (a registry key or an instance) whose NFE is
            proportional to its step count; default ``"edm_heun"`` (Heun in EDM's coordinates,
            the paper's choice).
        restart_interval: ``(lower, upper)`` ends of the restart interval, ``0 < lower < upper``,
            in ``interval_variable``.
        interval_variable: ``"sigma"`` (default): the noise level ``sigma/alpha`` (EDM's and
            k-diffusion's sigma, the paper's unit); ``"t"``: the SDE's own time.
        K: number of restart cycles (>= 0).
        restart_steps: solver steps from ``t_max`` back to ``t_min`` in each cycle (>= 1), or
            ``None`` (default): ``max(1, (n_steps + 3) // 6)``, the paper's 3 at its 18 main
            steps and in proportion elsewhere (a fixed 3 spends 12 of a 20-NFE budget on
            restarts and leaves 3 Heun steps for the main grid).
    """

    name = "restart"
    order = 2
    weak_order = 2
    stochastic = True
    nfe_per_step = 2
    strong_convergence = False
    reference = "xu2023restart"

    def __init__(
        self,
        *,
        solver: str | Sampler = "edm_heun",
        restart_interval: tuple[float, float] = (0.06, 0.30),
        interval_variable: str = "sigma",
        K: int = 2,
        restart_steps: int | None = None,
    ):
        self.solver = _check_solver(solver)
        if interval_variable not in _VARIABLES:
            raise ValueError(
                f"interval_variable must be one of {list(_VARIABLES)}; got {interval_variable!r}"
            )
        self.interval_variable = interval_variable
        if not isinstance(restart_interval, (tuple, list)) or len(restart_interval) != 2:
            raise ValueError(
                f"restart_interval must be a pair (lower, upper); got {restart_interval!r}"
            )
        lo = check_real("restart_interval[0]", restart_interval[0], low=0.0, low_open=True)
        hi = check_real("restart_interval[1]", restart_interval[1], low=lo, low_open=True)
        self.restart_interval = (lo, hi)
        self.K = check_int("K", K, low=0)
        self.restart_steps = (
            None if restart_steps is None else check_int("restart_steps", restart_steps, low=1)
        )
        self.order = self.weak_order = self.solver.order
        self.stochastic = self.K > 0

    @property
    def default_grid(self):
        """Its solver's default grid (``Karras()`` for the default ``edm_heun``, the paper's)."""
        return self.solver.default_grid

    def options(self):
        return {"solver": self.solver, "restart_interval": self.restart_interval,
                "interval_variable": self.interval_variable, "K": self.K,
                "restart_steps": self.restart_steps}  # fmt: skip

    def steps_per_cycle(self, n_steps: int) -> int:
        """Solver steps of each restart cycle on a main grid of ``n_steps``."""
        if self.restart_steps is not None:
            return self.restart_steps
        return max(1, (n_steps + 3) // 6)

    def nfe(self, n_steps):
        return self.solver.nfe(n_steps) + self.K * self.solver.nfe(self.steps_per_cycle(n_steps))

    def restart_grid(self, sde, ts: torch.Tensor) -> tuple[int, torch.Tensor]:
        """``(j, ts_restart)``: the grid index ``j`` of the restart's lower end and the restart
        segment's times from ``t_max`` down to ``ts[j]`` (float64). Raises if the interval is
        not inside the grid."""
        ts = ts.to("cpu", torch.float64)
        level = torch.exp(-sde.lambda_(ts))
        lo, hi = self.restart_interval
        if self.interval_variable == "t":
            t_hi = torch.tensor(hi, dtype=torch.float64)
            s_lo, s_hi = (
                float(torch.exp(-sde.lambda_(torch.tensor(v, dtype=torch.float64))))
                for v in (lo, hi)
            )
        else:
            s_lo, s_hi = lo, hi
            t_hi = sde.inverse_lambda(torch.tensor(-math.log(hi), dtype=torch.float64))
        s_first, s_last = float(level[0]), float(level[-1])
        if not (s_last <= s_lo and s_hi <= s_first):
            unit = "sigma/alpha" if self.interval_variable == "sigma" else "t"
            span = (s_last, s_first) if self.interval_variable == "sigma" else (
                float(ts[-1]), float(ts[0]))  # fmt: skip
            raise ValueError(
                f"restart_interval must lie inside the grid, in {unit} within "
                f"[{span[0]:.6g}, {span[1]:.6g}]; got {self.restart_interval!r}"
            )
        below = torch.nonzero(level[1:] < s_hi).flatten() + 1
        if below.numel() == 0:
            raise ValueError(
                f"restart_interval {self.restart_interval!r}: no grid point after the first lies "
                "below its upper end"
            )
        dist = (level[below].log() - math.log(s_lo)).abs()
        j = int(below[int(dist.argmin())])
        # EDM's grid (rho = 7) from s_hi down to the grid's level at t_j
        u = torch.linspace(0, 1, self.steps_per_cycle(len(ts) - 1) + 1, dtype=torch.float64)
        a, b = s_hi ** (1 / 7), float(level[j]) ** (1 / 7)
        s_r = (a + u * (b - a)) ** 7
        ts_r = sde.inverse_lambda(-s_r.log())
        ts_r[0], ts_r[-1] = t_hi, ts[j]
        return j, ts_r

    def init(self, denoiser, sde, ts, x):
        j, ts_r = self.restart_grid(sde, ts)
        n = len(ts) - 1
        solver = self.solver
        s = GridSchedule.of(sde, torch.stack([ts_r[-1], ts_r[0]]))
        ratio = s.alpha[1] / s.alpha[0]
        c_z = (s.sigma[1] ** 2 - (ratio * s.sigma[0]) ** 2).clamp(min=0.0).sqrt()
        segments = {"main": ts[: j + 1], "restart": ts_r}
        if j < n:
            segments["tail"] = ts[j:]
        states = {k: solver.init(denoiser, sde, v, x) for k, v in segments.items()}
        grids = {k: v.tolist() for k, v in segments.items()}
        cast = GridSchedule.cast
        return {"j": j, "states": states, "grids": grids,
                "ratio": cast(ratio, x), "c_z": cast(c_z, x)}  # fmt: skip

    def step(self, denoiser, sde, ts, i, x, state, noise):
        j, states, grids = state["j"], state["states"], state["grids"]
        key, k = ("main", i) if i < j else ("tail", i - j)
        x, states[key] = self.solver.step(denoiser, sde, grids[key], k, x, states[key], noise)
        if i == j - 1:
            for _ in range(self.K):
                x = state["ratio"] * x + state["c_z"] * noise.extra(x)
                sub = copy.copy(states["restart"])  # a fresh start for every cycle
                for m in range(len(grids["restart"]) - 1):
                    x, sub = self.solver.step(denoiser, sde, grids["restart"], m, x, sub, noise)
        return x, state


def _check_solver(solver) -> Sampler:
    from . import SAMPLERS  # the registry imports this module

    if isinstance(solver, Mapping):  # a config, as to_config writes it
        from . import get_sampler

        solver = get_sampler(solver)
    if isinstance(solver, str):
        if solver not in SAMPLERS:
            raise ValueError(
                f"solver must be a registry key of a deterministic sampler; got {solver!r}"
            )
        solver = SAMPLERS[solver]()
    if not isinstance(solver, Sampler):
        raise TypeError(f"solver must be a registry key or a Sampler; got {type(solver).__name__}")
    linear = type(solver).run is Sampler.run and all(
        solver.nfe(n) is not None and solver.nfe(n) == n * solver.nfe(1) for n in range(1, 9)
    )
    if solver.stochastic or not linear:
        raise ValueError(
            "solver must be a deterministic step-based sampler whose NFE is proportional to its "
            f"step count (e.g. 'edm_heun', 'dpm_solver_pp_2m'); got {solver!r}"
        )
    return solver
