"""Time grids: where a sampler steps.

``grid.grid(sde, n_steps)`` returns a float64 tensor of ``n_steps + 1`` strictly decreasing times
from ``t_start`` (default ``sde.T``) to ``t_end`` (default ``sde.t_min``). Grids know nothing about
samplers; a sampler never chooses its own grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from .sde import SDE
from .utils import check_int, check_real, describe

__all__ = [
    "TimeGrid",
    "UniformTime",
    "UniformLambda",
    "Karras",
    "Quadratic",
    "Explicit",
    "DiscreteSpacing",
    "FlowMatchShift",
    "GRIDS",
    "grid_from_config",
]


def _check_sde(sde) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE; got {describe(sde)}")


class TimeGrid:
    """Base class. Subclasses implement :meth:`_make` on the resolved endpoints and name
    themselves with a ``name`` (the key in :data:`GRIDS`)."""

    name: str

    def __init__(self, *, t_start: float | None = None, t_end: float | None = None):
        self.t_start = (
            None if t_start is None else check_real("t_start", t_start, low=0.0, low_open=True)
        )
        self.t_end = None if t_end is None else check_real("t_end", t_end, low=0.0, low_open=True)
        if self.t_start is not None and self.t_end is not None and self.t_end >= self.t_start:
            raise ValueError(f"t_end must be < t_start={self.t_start}; got t_end={self.t_end}")

    def endpoints(self, sde: SDE) -> tuple[float, float]:
        t_start = sde.T if self.t_start is None else self.t_start
        t_end = sde.t_min if self.t_end is None else self.t_end
        if not (sde.t_min <= t_end < t_start <= sde.T):
            raise ValueError(
                f"grid endpoints must satisfy t_min={sde.t_min} <= t_end < t_start <= T={sde.T}; "
                f"got t_start={t_start}, t_end={t_end}"
            )
        return t_start, t_end

    def grid(self, sde: SDE, n_steps: int) -> Tensor:
        _check_sde(sde)
        n_steps = check_int("n_steps", n_steps, low=1)
        t_start, t_end = self.endpoints(sde)
        ts = self._make(sde, n_steps, t_start, t_end).to(torch.float64)
        # pin the endpoints exactly: inverse maps round-trip only to ~1e-15
        ts[0], ts[-1] = t_start, t_end
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(
                f"{self!r} produced a grid that is not strictly decreasing for n_steps={n_steps}; "
                "the schedule's resolution is too coarse for this many steps"
            )
        return ts

    def _make(self, sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
        raise NotImplementedError

    def increasing(self, sde: SDE, n_steps: int | None) -> Tensor:
        """The strictly increasing grid inversion runs on (:func:`scoresde.invert`): this grid
        reversed, from ``t_end`` up to ``t_start``."""
        return self.grid(sde, n_steps).flip(0)

    def options(self) -> dict:
        """The constructor options (what :meth:`to_config` saves)."""
        return dict(vars(self))

    def to_config(self) -> dict:
        """``{"name": key in GRIDS, "options": {...}}``, plain JSON; :func:`grid_from_config`
        rebuilds the grid."""
        return {"name": self.name, "options": self.options()}

    def __repr__(self) -> str:
        args = {k: v for k, v in vars(self).items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _check_finite_lambda(grid: TimeGrid, sde: SDE, t_start: float) -> None:
    if not math.isfinite(float(sde.lambda_(t_start))):
        raise ValueError(
            f"{grid!r} spaces times in lambda (log-SNR), which is -inf at t_start={t_start} of "
            f"{sde!r} (alpha = 0: zero terminal SNR); expected t_start < T, or a grid in t "
            "(UniformTime, FlowMatchShift, DiscreteSpacing)"
        )


class UniformTime(TimeGrid):
    """Equally spaced in ``t`` (score_sde's default)."""

    name = "uniform_time"

    def _make(self, sde, n, t_start, t_end):
        return torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)


class UniformLambda(TimeGrid):
    """Equally spaced in half log-SNR ``lambda_`` (DPM-Solver's ``logSNR`` skip type,
    Lu et al. 2022, Sec. 3.3)."""

    name = "uniform_lambda"

    def _make(self, sde, n, t_start, t_end):
        _check_finite_lambda(self, sde, t_start)
        lam = torch.linspace(float(sde.lambda_(t_start)), float(sde.lambda_(t_end)), n + 1,
                             dtype=torch.float64)  # fmt: skip
        return sde.inverse_lambda(lam)


class Karras(TimeGrid):
    """Karras et al. 2022 (EDM, eq. 5): ``sigma_i = (s_max^(1/rho) + i/n (s_min^(1/rho) -
    s_max^(1/rho)))^rho`` in the VE-equivalent noise level ``s = sigma/alpha = exp(-lambda_)``,
    mapped back to ``t`` through ``inverse_lambda``."""

    name = "karras"

    def __init__(self, rho: float = 7.0, *, t_start=None, t_end=None):
        super().__init__(t_start=t_start, t_end=t_end)
        self.rho = check_real("rho", rho, low=0.0, low_open=True)

    def _make(self, sde, n, t_start, t_end):
        _check_finite_lambda(self, sde, t_start)
        s_max = torch.exp(-sde.lambda_(t_start))
        s_min = torch.exp(-sde.lambda_(t_end))
        u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        inv = 1.0 / self.rho
        s = (s_max**inv + u * (s_min**inv - s_max**inv)) ** self.rho
        return sde.inverse_lambda(-s.log())


class Quadratic(TimeGrid):
    """Equally spaced in ``sqrt(t)`` (DPM-Solver's ``time_quadratic``; DDIM's quadratic skip)."""

    name = "quadratic"

    def _make(self, sde, n, t_start, t_end):
        return torch.linspace(t_start**0.5, t_end**0.5, n + 1, dtype=torch.float64) ** 2


class Explicit(TimeGrid):
    """A user-given grid ``ts``, validated: strictly decreasing, inside ``[t_min, T]``."""

    name = "explicit"

    def __init__(self, ts):
        try:
            ts = torch.as_tensor(ts, dtype=torch.float64).flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"ts must be a sequence or tensor of real times; got {describe(ts)}"
            ) from None
        if ts.numel() < 2:
            raise ValueError(f"ts must hold at least 2 times; got {ts.numel()}")
        if not bool(torch.isfinite(ts).all()):
            raise ValueError(f"ts must be finite; got {ts.tolist()}")
        if not bool((ts[1:] < ts[:-1]).all()):
            i = int(torch.nonzero(ts[1:] >= ts[:-1])[0])
            raise ValueError(
                f"ts must be strictly decreasing (sampling runs from T towards t_min); "
                f"ts[{i}]={ts[i].item()} is followed by ts[{i + 1}]={ts[i + 1].item()}"
            )
        super().__init__()
        self.ts = ts

    def grid(self, sde: SDE, n_steps: int | None = None) -> Tensor:
        _check_sde(sde)
        n = self.ts.numel() - 1
        if n_steps is not None and n_steps != n:
            raise ValueError(
                f"n_steps must be None or {n} for an Explicit grid of {n + 1} times; got {n_steps!r}"
            )
        if self.ts[0] > sde.T or self.ts[-1] < sde.t_min:
            raise ValueError(
                f"ts must lie in [t_min, T] = [{sde.t_min}, {sde.T}]; got [{self.ts[-1].item()}, "
                f"{self.ts[0].item()}]"
            )
        return self.ts.clone()

    def save(self, path) -> None:
        """Write the grid as a ``.pt`` file (reload with :meth:`load`)."""
        torch.save({"ts": self.ts}, path)

    @classmethod
    def load(cls, path) -> Explicit:
        return cls(torch.load(path, weights_only=True)["ts"])

    def options(self) -> dict:
        # float64 -> Python float -> JSON (repr) is exact, so the times round-trip bit for bit
        return {"ts": self.ts.tolist()}

    def __repr__(self) -> str:
        return f"Explicit(n_steps={self.ts.numel() - 1}, t_start={self.ts[0].item():.6g}, t_end={self.ts[-1].item():.6g})"


# -------------------------------------------------------------------------------------------
# diffusers' train-step spacings of a discrete DDPM schedule


class DiscreteSpacing(TimeGrid):
    """The DDPM train steps diffusers' schedulers visit (``timestep_spacing``), as times of a
    :class:`~scoresde.sde.DiscreteVPSDE` (train step ``n`` at ``t = (n + 1) / N``).

    For ``num_inference_steps = m`` diffusers' DPM-Solver family (``DPMSolverMultistepScheduler``,
    ``DEISMultistepScheduler``, ``UniPCMultistepScheduler``) evaluates the model at the train
    steps

    - ``"linspace"``: ``round(linspace(0, N - 1, m + 1))[::-1][:-1]`` (from ``N - 1``),
    - ``"leading"``: ``(arange(m + 1) * (N // (m + 1)))[::-1][:-1] + steps_offset``,
    - ``"trailing"``: ``round(arange(N, 0, -N / m)) - 1`` (from ``N - 1``),

    and then steps to its final noise level: ``final_sigmas_type="sigma_min"`` is train step 0
    (``t_min``), ``"zero"`` is ``sigma = 0``, a jump to the model's ``x0`` (Lin et al. 2024,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2, for the spacings).
    ``grid(sde, n_steps)`` returns ``n_steps + 1`` times:

    - ``final="t_min"``: the ``m = n_steps`` model times, then ``t_min``;
    - ``final="zero"``: the ``m = n_steps + 1`` model times; the jump to ``sigma = 0`` is the
      driver's ``denoise_final=True`` (one more NFE, ``m`` in all, as in diffusers).

    ``DDIMScheduler`` and ``PNDMScheduler`` space ``m`` points including train step 0 (for
    ``"leading"`` and ``"linspace"``): that is ``final="t_min"`` with ``n_steps = m - 1``; see
    ``docs/samplers-multistep.md`` for every scheduler.

    Args:
        kind: ``"linspace"``, ``"leading"`` or ``"trailing"``.
        steps_offset: added to the model train steps of ``"leading"`` (Stable Diffusion uses 1).
        final: ``"t_min"`` or ``"zero"``, as above.
    """

    name = "discrete_spacing"
    KINDS = ("linspace", "leading", "trailing")

    def __init__(self, kind: str = "linspace", *, steps_offset: int = 0, final: str = "t_min"):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {list(self.KINDS)}; got {kind!r}")
        if final not in ("t_min", "zero"):
            raise ValueError(f"final must be 't_min' or 'zero'; got {final!r}")
        super().__init__()
        self.kind = kind
        self.steps_offset = check_int("steps_offset", steps_offset, low=0)
        self.final = final

    def options(self) -> dict:
        return {"kind": self.kind, "steps_offset": self.steps_offset, "final": self.final}

    def train_steps(self, N: int, m: int) -> np.ndarray:
        """diffusers' model train steps for ``num_inference_steps = m`` (decreasing)."""
        if self.kind == "linspace":
            return np.linspace(0, N - 1, m + 1).round()[::-1][:-1].astype(np.int64)
        if self.kind == "leading":
            steps = (np.arange(0, m + 1) * (N // (m + 1))).round()[::-1][:-1].astype(np.int64)
            return steps + self.steps_offset
        return np.arange(N, 0, -N / m).round().astype(np.int64) - 1

    def grid(self, sde: SDE, n_steps: int) -> Tensor:
        _check_sde(sde)
        n_steps = check_int("n_steps", n_steps, low=1)
        if not (hasattr(sde, "index_to_t") and hasattr(sde, "N")):
            raise ValueError(
                f"DiscreteSpacing needs a discrete schedule with N and index_to_t "
                f"(DiscreteVPSDE); got {sde!r}"
            )
        if self.final == "zero":
            steps = self.train_steps(sde.N, n_steps + 1)
        else:
            steps = np.concatenate([self.train_steps(sde.N, n_steps), [0]])
        if len(steps) != n_steps + 1 or not (np.diff(steps) < 0).all() or steps[0] > sde.N - 1:
            got = np.array2string(steps, threshold=12)
            raise ValueError(
                f"{self!r} has no strictly decreasing grid of {n_steps + 1} train steps within "
                f"[0, {sde.N - 1}] for n_steps={n_steps}; got {got}"
            )
        return sde.index_to_t(torch.from_numpy(steps).to(torch.float64))


# -------------------------------------------------------------------------------------------
# diffusers' shifted flow-matching grids (Stable Diffusion 3, Flux)


class FlowMatchShift(TimeGrid):
    r"""The noise levels diffusers' ``FlowMatchEulerDiscreteScheduler`` (and
    ``FlowMatchHeunDiscreteScheduler``) visits, as times of a
    :class:`~scoresde.sde.RectifiedFlow` (``t = sigma``).

    With ``N = num_train_timesteps`` and ``m`` model evaluations, ``s = linspace(1, s_min, m)``
    is shifted towards the noise end:

    - static ``shift`` (Esser et al. 2024, SD3, eq. 23):
      ``sigma = shift s / (1 + (shift - 1) s)``, with ``s_min = shift(1/N)`` (diffusers shifts the
      configured minimum, then the grid);
    - dynamic shifting (``mu`` given; Flux's resolution-dependent shift), ``s_min = 1/N``:
      ``sigma = e^mu / (e^mu + 1/s - 1)`` (``time_shift_type="exponential"``) or
      ``mu / (mu + 1/s - 1)`` (``"linear"``);
    - ``shift_terminal``: the shifted ``1 - sigma`` rescaled so the last sigma is
      ``shift_terminal``.

    The grid starts at ``T = 1`` (pure noise). ``grid(sde, n_steps)`` returns the
    ``m = n_steps + 1`` model times; diffusers' last step, to ``sigma = 0``, is the driver's
    ``denoise_final=True`` (``m`` NFE in all for Euler, ``2m - 1`` for Heun, as in diffusers).

    Args:
        shift: static shift (>0; 1 = no shift; SD3 uses 3).
        mu: the dynamic shift (any real); when given, ``shift`` is not used.
        time_shift_type: ``"exponential"`` or ``"linear"`` (dynamic shifting only).
        num_train_timesteps: ``N`` of the scheduler config.
        shift_terminal: final sigma of the stretched schedule, in ``(0, 1)``, or ``None``.
    """

    name = "flow_match_shift"

    TIME_SHIFT_TYPES = ("exponential", "linear")

    def __init__(
        self,
        shift: float = 1.0,
        *,
        mu: float | None = None,
        time_shift_type: str = "exponential",
        num_train_timesteps: int = 1000,
        shift_terminal: float | None = None,
    ):
        super().__init__()
        self.shift = check_real("shift", shift, low=0.0, low_open=True)
        self.mu = None if mu is None else check_real("mu", mu)
        if time_shift_type not in self.TIME_SHIFT_TYPES:
            raise ValueError(
                f"time_shift_type must be one of {list(self.TIME_SHIFT_TYPES)}; "
                f"got {time_shift_type!r}"
            )
        if mu is not None and time_shift_type == "linear" and self.mu <= 0:
            raise ValueError(f"mu must be > 0 with time_shift_type='linear'; got {mu!r}")
        self.time_shift_type = time_shift_type
        self.num_train_timesteps = check_int("num_train_timesteps", num_train_timesteps, low=2)
        self.shift_terminal = None if shift_terminal is None else check_real(
            "shift_terminal", shift_terminal, low=0.0, high=1.0, low_open=True, high_open=True
        )  # fmt: skip

    def options(self) -> dict:
        # its grid is diffusers' own from T to t_min: no t_start / t_end option
        return {k: v for k, v in vars(self).items() if k not in ("t_start", "t_end")}

    def _static(self, s: Tensor) -> Tensor:
        return self.shift * s / (1.0 + (self.shift - 1.0) * s)

    def sigmas(self, m: int) -> Tensor:
        """diffusers' ``m`` model noise levels (float64, decreasing from 1)."""
        m = check_int("m", m, low=1)
        n_train = self.num_train_timesteps
        one = torch.ones((), dtype=torch.float64)
        s_min = one / n_train if self.mu is not None else self._static(one / n_train)
        s = torch.linspace(1.0, float(s_min), m, dtype=torch.float64)
        if self.mu is None:
            sigma = self._static(s)
        else:
            a = math.exp(self.mu) if self.time_shift_type == "exponential" else self.mu
            sigma = a / (a + (1.0 / s - 1.0))
        if self.shift_terminal is not None:
            one_minus = 1.0 - sigma
            sigma = 1.0 - one_minus / (one_minus[-1] / (1.0 - self.shift_terminal))
        return sigma

    def grid(self, sde: SDE, n_steps: int) -> Tensor:
        _check_sde(sde)
        n_steps = check_int("n_steps", n_steps, low=1)
        ts = self.sigmas(n_steps + 1)
        if sde.T != 1.0 or float(ts[-1]) < sde.t_min:
            raise ValueError(
                f"{self!r} needs a flow schedule on [t_min, 1] with t_min <= {float(ts[-1]):.3g} "
                f"(t = sigma; e.g. RectifiedFlow(t_min=...)); got {sde!r}"
            )
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(f"{self!r} gives no strictly decreasing grid for n_steps={n_steps}")
        return ts


# -------------------------------------------------------------------------------------------
# Configs

GRIDS: dict[str, type[TimeGrid]] = {
    cls.name: cls
    for cls in (
        UniformTime,
        UniformLambda,
        Karras,
        Quadratic,
        Explicit,
        DiscreteSpacing,
        FlowMatchShift,
    )
}


def grid_from_config(config) -> TimeGrid:
    """Rebuild a grid from :meth:`TimeGrid.to_config` (``{"name": ..., "options": {...}}``), or
    make the default grid of a key in :data:`GRIDS` (e.g. ``"karras"``)."""
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, Mapping) or "name" not in config or set(config) - {"name", "options"}:
        raise ValueError(
            "a grid config must be {'name': key, 'options': {...}} or a key, with keys in "
            f"{sorted(GRIDS)}; got {config!r}"
        )
    if config["name"] not in GRIDS:
        raise ValueError(f"unknown grid {config['name']!r}; valid names are {sorted(GRIDS)}")
    return GRIDS[config["name"]](**(config.get("options") or {}))
