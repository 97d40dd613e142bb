"""Time grids: where a sampler steps.

``grid.grid(sde, n_steps)`` returns a float64 tensor of ``n_steps + 1`` strictly decreasing times
from ``t_start`` (default ``sde.T``) to ``t_end`` (default ``sde.t_min``). Grids know nothing about
samplers; a sampler never chooses its own grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sde import SDE
from .utils import check_int, check_real

__all__ = ["TimeGrid", "UniformTime", "UniformLambda", "Karras", "Quadratic", "Explicit"]


class TimeGrid:
    """Base class. Subclasses implement :meth:`_make` on the resolved endpoints."""

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

    def __repr__(self) -> str:
        args = {k: v for k, v in vars(self).items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


class UniformTime(TimeGrid):
    """Equally spaced in ``t`` (score_sde's default)."""

    def _make(self, sde, n, t_start, t_end):
        return torch.linspace(t_start, t_end, n + 1, dtype=torch.float64)


class UniformLambda(TimeGrid):
    """Equally spaced in half log-SNR ``lambda_`` (DPM-Solver's ``logSNR`` skip type,
    Lu et al. 2022, Sec. 3.3)."""

    def _make(self, sde, n, t_start, t_end):
        lam = torch.linspace(float(sde.lambda_(t_start)), float(sde.lambda_(t_end)), n + 1,
                             dtype=torch.float64)  # fmt: skip
        return sde.inverse_lambda(lam)


class Karras(TimeGrid):
    """Karras et al. 2022 (EDM, eq. 5): ``sigma_i = (s_max^(1/rho) + i/n (s_min^(1/rho) -
    s_max^(1/rho)))^rho`` in the VE-equivalent noise level ``s = sigma/alpha = exp(-lambda_)``,
    mapped back to ``t`` through ``inverse_lambda``."""

    def __init__(self, rho: float = 7.0, *, t_start=None, t_end=None):
        super().__init__(t_start=t_start, t_end=t_end)
        self.rho = check_real("rho", rho, low=0.0, low_open=True)

    def _make(self, sde, n, t_start, t_end):
        s_max = torch.exp(-sde.lambda_(t_start))
        s_min = torch.exp(-sde.lambda_(t_end))
        u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        inv = 1.0 / self.rho
        s = (s_max**inv + u * (s_min**inv - s_max**inv)) ** self.rho
        return sde.inverse_lambda(-s.log())


class Quadratic(TimeGrid):
    """Equally spaced in ``sqrt(t)`` (DPM-Solver's ``time_quadratic``; DDIM's quadratic skip)."""

    def _make(self, sde, n, t_start, t_end):
        return torch.linspace(t_start**0.5, t_end**0.5, n + 1, dtype=torch.float64) ** 2


class Explicit(TimeGrid):
    """A user-given grid ``ts``, validated: strictly decreasing, inside ``[t_min, T]``."""

    def __init__(self, ts):
        ts = torch.as_tensor(ts, dtype=torch.float64).flatten().cpu()
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

    def __repr__(self) -> str:
        return f"Explicit(n_steps={self.ts.numel() - 1}, t_start={self.ts[0].item():.6g}, t_end={self.ts[-1].item():.6g})"
