"""The sampler contract and the one driver loop every sampler runs in.

A :class:`Sampler` only steps: :meth:`Sampler.init` precomputes every coefficient for the grid
(float64, cast once), and :meth:`Sampler.step` is tensor arithmetic indexed by the integer step
``i``. The loop, the progress bar, the callback, the trajectory and the non-finite check live in
:meth:`Sampler.run`, once (diffrax's ``init``/``step`` split). Backends that integrate the whole
interval themselves (torchdiffeq, scipy, torchsde) override :meth:`Sampler.run` instead.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from ..grids import TimeGrid, UniformTime
from ..noise import NoiseSource
from ..sde import SDE

__all__ = [
    "Sampler", "AffineStep", "SampleResult", "StepInfo", "GridSchedule", "Interrupt",
    "run_callback", "tolerance_floor", "all_finite", "weighted_sum",
]  # fmt: skip

# Tolerances of adaptive solvers are floored at this many units of roundoff of the state's dtype:
# an error estimate is a difference of two solutions, each rounded in every stage, so below a few
# ulps it is rounding noise and no step size satisfies it (the step size then collapses).
TOLERANCE_FLOOR_ULPS = 16


class Interrupt(Exception):
    """Raise it from a sampling ``callback`` (or return it) to stop sampling after that step.

    :func:`scoresde.sample` then returns a :class:`SampleResult` holding the state reached (at
    ``ts[i + 1]`` after step ``i``) with ``stats["interrupted_at"] = i``.
    """


def run_callback(callback, info: StepInfo, sampler: str) -> tuple[Tensor, bool]:
    """Call ``callback(info)``: returns the state to continue from (``info.x``, or the tensor the
    callback returned in its place) and whether the callback asked to stop."""
    try:
        out = callback(info)
    except Interrupt:
        return info.x, True
    if out is None:
        return info.x, False
    if out is Interrupt or isinstance(out, Interrupt):
        return info.x, True
    if not isinstance(out, Tensor):
        raise TypeError(
            "callback must return None, a tensor that replaces the state, or scoresde.Interrupt; "
            f"got {type(out).__name__} after step {info.i} of {sampler!r}"
        )
    x = info.x
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(
            f"the tensor the callback returned after step {info.i} of {sampler!r} must match the "
            f"state: got shape {tuple(out.shape)}, {out.dtype} on {out.device}; expected shape "
            f"{tuple(x.shape)}, {x.dtype} on {x.device}"
        )
    return out, False


# the driver checks the state for NaN / inf every this many steps (and after the last): a NaN or
# inf, once in the state, stays there through the affine updates of every sampler, so a check
# per window finds it; the window's states are kept to name the first bad step
FINITE_CHECK_EVERY = 8


class _FiniteWatch:
    """The driver's non-finite check, without a host sync in the loop.

    Every ``FINITE_CHECK_EVERY`` steps the last state is reduced once on its device (see
    :func:`all_finite`). On the CPU the answer is read at once. On a GPU it is copied to pinned
    host memory without blocking and read when a CUDA event says it has arrived, at the latest
    one window later (waiting then only for the step that closed the older window, never for
    the work queued since), and at the end of the run. A bad window's states are kept until
    read, so the error names the first non-finite step either way."""

    def __init__(self, name: str, grid: list[float]):
        self.name, self.grid = name, grid
        self.pending: deque = deque()

    def push(self, window: list[Tensor], i: int) -> None:
        """Check the states ``window`` of steps ``i + 1 - len(window) .. i``."""
        x = window[-1]
        finite = _finite_sum(x)
        if x.device.type != "cuda":
            if not bool(finite):
                self._verify(window, i)
            return
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((list(window), i, host, event))
        while self.pending and (len(self.pending) > 1 or self.pending[0][3].query()):
            self._read(self.pending.popleft())

    def finish(self) -> None:
        """Read every check still in flight (the end of the run waits for the device anyway)."""
        while self.pending:
            self._read(self.pending.popleft())

    def _read(self, item) -> None:
        window, i, host, event = item
        event.synchronize()
        if not bool(host):
            self._verify(window, i)

    def _verify(self, window: list[Tensor], i: int) -> None:
        """The sum was not finite: find the first non-finite state entry-wise and raise (a sum
        that overflowed on finite entries passes)."""
        if bool(torch.isfinite(window[-1]).all()):
            return
        self.pending.clear()
        first = next(j for j, w in enumerate(window) if not torch.isfinite(w).all())
        k = i + 1 - len(window) + first
        grid = self.grid
        raise FloatingPointError(
            f"non-finite sample at step {k} (t={grid[k]:.6g} -> t_next={grid[k + 1]:.6g}) "
            f"in {self.name!r}; the first non-finite value appeared in this step's update"
        )


@dataclass
class StepInfo:
    """What a per-step ``callback`` receives: the state after step ``i`` (from ``t`` to
    ``t_next``) and the last ``x0`` prediction (``None`` if the step made no network call).

    The callback may return ``None`` (observe only), a tensor like ``x`` that replaces the state
    the run continues from (diffusers' ``callback_on_step_end``), or :class:`Interrupt` (or raise
    it) to stop after this step."""

    i: int
    t: float
    t_next: float
    x: Tensor
    x0: Tensor | None


@dataclass
class SampleResult:
    """The result of :func:`scoresde.sample`; always this type, whatever the options.

    Attributes:
        x: final samples at ``ts[-1]`` (denoised if ``denoise_final``).
        nfe: network calls measured by the Denoiser's counter.
        ts: the float64 grid that was used (``n_steps + 1`` times; for adaptive backends, the
            output times).
        trajectory: ``(n_steps + 1, *x.shape)`` states at every grid time, or ``None``.
        stats: extra measurements (wall time, accepted/rejected steps of adaptive solvers, ...).
    """

    x: Tensor
    nfe: int
    ts: Tensor
    trajectory: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class Sampler(ABC):
    """A method for one step of a reverse-time diffusion process.

    Class attributes every sampler declares (and the registry-wide tests read):
        name: registry key.
        order: convergence order; for deterministic samplers the global ODE order, for
            stochastic samplers the strong order of the SDE scheme (with additive noise).
        weak_order: weak order of stochastic samplers (``None`` for deterministic ones).
        stochastic: whether the sampler consumes noise.
        nfe_per_step: network calls per step (``None`` if adaptive); see :meth:`nfe`.
        reference: short citation of the method.
        zero_snr_start: whether ``step`` itself is finite from a first grid time where
            ``alpha = 0`` (zero terminal SNR, rectified flow). Otherwise :func:`scoresde.sample`
            takes that first step as the exact ``lambda -> -inf`` limit of a first-order step
            (see :func:`scoresde.samplers.zero_snr.zero_snr_first_step`) and the sampler
            continues from ``ts[1]``.
        default_grid: the :class:`~scoresde.grids.TimeGrid` that :func:`scoresde.sample` (and
            the CLI and the demo) use when no ``grid`` is given. The base default is
            ``UniformTime()``: DDIM's best grid on our exact problems (it beats logSNR-uniform,
            Karras and time-quadratic grids on VP, sub-VP and the cosine schedule, and ties on
            VE), so a new sampler starts on the grid of its first-order baseline. Families
            override it where the paper and ``tests/convergence/test_defaults.py`` agree.
    """

    name: ClassVar[str]
    order: ClassVar[float]
    weak_order: ClassVar[float | None] = None
    stochastic: ClassVar[bool]
    nfe_per_step: ClassVar[int | None] = 1
    reference: ClassVar[str] = ""
    zero_snr_start: ClassVar[bool] = False
    default_grid: ClassVar[TimeGrid] = UniformTime()

    def nfe(self, n_steps: int) -> int | None:
        """Network calls for ``n_steps`` steps (``None`` when it depends on the solution)."""
        return None if self.nfe_per_step is None else self.nfe_per_step * n_steps

    def init(self, denoiser: Denoiser, sde: SDE, ts: Tensor, x: Tensor) -> Any:
        """Precompute per-grid coefficients; returns the sampler's state."""
        return None

    @abstractmethod
    def step(
        self,
        denoiser: Denoiser,
        sde: SDE,
        ts: Sequence[float],
        i: int,
        x: Tensor,
        state: Any,
        noise: NoiseSource,
    ) -> tuple[Tensor, Any]:
        """Advance ``x`` from ``ts[i]`` to ``ts[i + 1]``.

        ``ts`` is the grid as Python floats (for noise sources and int/float logic); device-side
        times and coefficients come from ``state``. No host syncs: tensor arithmetic on
        precomputed coefficients, branches on the Python int ``i`` only."""

    def replace_state(self, x: Tensor, state: Any) -> Any:
        """The sampler state to continue from after a callback replaced the state by ``x``.

        Histories of multistep methods keep the model outputs at the earlier (unreplaced)
        states, as diffusers' schedulers do; a sampler whose next step would recompute the
        current state from the previous one (a corrector) overrides this to use ``x`` as is."""
        return state

    def options(self) -> dict[str, Any]:
        """The sampler's constructor options, for ``repr`` and result tables."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def to_config(self) -> dict[str, Any]:
        """``{"name": registry key, "options": {...}}``, plain JSON (``json.dumps`` with
        ``allow_nan=False`` accepts it); :func:`scoresde.get_sampler` rebuilds the sampler."""
        return {
            "name": self.name,
            "options": {k: config_value(k, v) for k, v in self.options().items()},
        }

    def run(
        self,
        denoiser: Denoiser,
        sde: SDE,
        ts: Tensor,
        x: Tensor,
        *,
        noise: NoiseSource,
        callback: Callable[[StepInfo], Any] | None = None,
        progress: bool = True,
        save_trajectory: bool = False,
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """The driver loop: ``init``, then ``step`` for every interval of ``ts``.

        Non-finite states: the state is checked every ``FINITE_CHECK_EVERY`` steps, after the
        last and when the run is interrupted: one reduction per check, not per step, and no host
        sync in the loop (on a GPU the answer is read asynchronously, see :class:`_FiniteWatch`).
        The states since the last check are kept, so a failed check finds the first non-finite
        one and names its step; a diverging run stops within ``FINITE_CHECK_EVERY`` steps on the
        CPU (within two windows on a GPU) instead of spending the rest. After each step the
        ``callback`` may replace the state (then :meth:`replace_state` updates the sampler's
        state) or stop the run (``stats["interrupted_at"]``).
        """
        n = ts.numel() - 1
        state = self.init(denoiser, sde, ts, x)
        grid = ts.tolist()
        # preallocated: stacking a list at the end would hold the trajectory twice
        trajectory = x.new_empty((n + 1, *x.shape)) if save_trajectory else None
        if trajectory is not None:
            trajectory[0] = x
        window: list[Tensor] = []  # step outputs since the last finite check
        watch = _FiniteWatch(self.name, grid)
        denoiser.last = None
        stats: dict[str, Any] = {}
        steps = tqdm(range(n), desc=self.name, leave=False) if progress else range(n)
        for i in steps:
            x, state = self.step(denoiser, sde, grid, i, x, state, noise)
            window.append(x)
            stop = False
            if callback is not None:
                last = denoiser.last
                info = StepInfo(i, grid[i], grid[i + 1], x, None if last is None else last.x0)
                x_cb, stop = run_callback(callback, info, self.name)
                if x_cb is not x:
                    x, state = x_cb, self.replace_state(x_cb, state)
            if trajectory is not None:
                trajectory[i + 1] = x
            if len(window) == FINITE_CHECK_EVERY or i == n - 1 or stop:
                watch.push(window, i)
                window.clear()
            if stop:
                stats["interrupted_at"] = i
                if trajectory is not None:
                    trajectory = trajectory[: i + 2]
                break
        watch.finish()
        return x, trajectory, stats


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite, from one reduction: a NaN or inf entry makes the
    sum NaN or inf (``inf - inf`` is NaN), so a finite sum proves every entry finite, with no
    boolean copy of the state (``isfinite(x).all()`` costs ~10x more on the CPU). The sum
    accumulates in float32 or better (a float16 sum of many entries overflows); a sum that
    overflows on finite entries falls back to the entry-wise test, so the answer is exact."""
    return bool(_finite_sum(x)) or bool(torch.isfinite(x).all())


def _finite_sum(x: Tensor) -> Tensor:
    """Whether the sum of ``x`` (in float32 or better) is finite, as a device bool tensor (no
    host sync): the one reduction of :func:`all_finite` and of the driver's check."""
    return torch.isfinite(x.sum(dtype=torch.promote_types(x.dtype, torch.float32)))


def weighted_sum(
    x: Tensor, a: float, b: Sequence[float], terms: Sequence[Tensor], k: int
) -> Tensor:
    """``a x + sum_{j < k} b[j] terms[j]`` for Python-float weights, in one new tensor with
    fused adds: the update of every linear multistep and Runge–Kutta stage."""
    out = x * a
    for j in range(k):
        out.add_(terms[j], alpha=b[j])
    return out


def config_value(name: str, value: Any) -> Any:
    """An option as plain JSON: nested samplers and correctors as their configs, tuples as
    lists, infinities as the strings ``"inf"`` / ``"-inf"`` (strict JSON has no infinity)."""
    if hasattr(value, "to_config"):
        return value.to_config()
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [config_value(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise TypeError(
        f"option {name}={value!r} has no JSON form; expected a number, str, bool or None"
    )


def option_from_config(value: Any) -> Any:
    """Inverse of :func:`config_value` for scalars (nested configs are rebuilt by their owner)."""
    return float(value) if value in ("inf", "-inf") else value


def tolerance_floor(rtol: float, atol: float, dtype: torch.dtype, name: str) -> tuple[float, float]:
    """``(rtol, atol)`` raised to ``TOLERANCE_FLOOR_ULPS * eps(dtype)`` (``atol`` in the units of
    unit-scale data), with a warning naming what was raised, when the state's dtype cannot reach
    them."""
    floor = TOLERANCE_FLOOR_ULPS * torch.finfo(dtype).eps
    raised = [f"{k}={v:.3g}" for k, v in (("rtol", rtol), ("atol", atol)) if v < floor]
    if raised:
        warnings.warn(
            f"{name}: {', '.join(raised)} is below what a {dtype} state can resolve "
            f"({TOLERANCE_FLOOR_ULPS} x eps = {floor:.3g}); raised to {floor:.3g}",
            RuntimeWarning,
            stacklevel=4,
        )
    return max(rtol, floor), max(atol, floor)


@dataclass(frozen=True)
class GridSchedule:
    """The schedule evaluated on a grid, float64 on the CPU: what ``init`` builds
    coefficients from before casting them once with :meth:`cast`."""

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    lambda_: Tensor
    f: Tensor
    g2: Tensor

    @classmethod
    def of(cls, sde: SDE, ts: Tensor) -> GridSchedule:
        ts = ts.to("cpu", torch.float64)
        return cls(ts, sde.alpha(ts), sde.sigma(ts), sde.lambda_(ts), sde.f(ts), sde.g2(ts))

    @staticmethod
    def cast(c: Tensor, like: Tensor) -> Tensor:
        """Move a float64 coefficient table to ``like``'s device and dtype (once per run)."""
        return c.to(device=like.device, dtype=like.dtype)

    @staticmethod
    def values(c: Tensor) -> list:
        """A float64 coefficient table as Python numbers (nested lists for a 2-d table), once per
        run: a step then scales by ``c[i]`` with no indexing op, no device copy and no sync (the
        tables are built on the CPU), and can fuse it (``torch.add(a, b, alpha=c[i])``)."""
        return c.to("cpu", torch.float64).tolist()

    @staticmethod
    def times(t: Tensor, like: Tensor) -> Tensor:
        """Move float64 times to ``like``'s device, keeping float64: they feed the schedule and
        the network's time conditioning, which a float16 or bfloat16 state would round (near
        t = 1 float16 steps by 4.9e-4, bfloat16 by 3.9e-3)."""
        return t.to(device=like.device, dtype=torch.float64)


class AffineStep(Sampler):
    """Base of the one-evaluation samplers whose step is affine in the state, the prediction and
    one noise draw: ``x_{i+1} = c_x[i] x_i + c_eps[i] eps(x_i, t_i) + c_z[i] z_i``.

    A subclass gives the three float64 coefficient tables in :meth:`coefficients` (``c_z`` is
    ``None`` for a deterministic sampler); ``init`` casts them once and ``step`` is shared.
    """

    @abstractmethod
    def coefficients(self, s: GridSchedule) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(c_x, c_eps, c_z)``, one entry per step of the grid ``s``."""

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        c_x, c_eps, c_z = self.coefficients(s)
        values = GridSchedule.values
        c_z = None if c_z is None else values(c_z)
        return denoiser.times(ts, x), values(c_x), values(c_eps), c_z

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, c_x, c_eps, c_z = state
        x_next = (x * c_x[i]).add_(denoiser.predict(x, t[i]).eps, alpha=c_eps[i])
        if c_z is not None:
            x_next = x_next.add_(noise(ts[i], ts[i + 1], x), alpha=c_z[i])
        return x_next, state
