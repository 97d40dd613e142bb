"""Time grids: where a sampler steps.

``grid.grid(sde, n_steps)`` returns a float64 tensor of ``n_steps + 1`` strictly decreasing times
from ``t_start`` (default ``sde.T``) to ``t_end`` (default ``sde.t_min``). Grids know nothing about
samplers; a sampler never chooses its own grid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .sde import SDE
from .utils import check_int, check_real

__all__ = [
    "TimeGrid",
    "UniformTime",
    "UniformLambda",
    "Karras",
    "Quadratic",
    "Explicit",
    "DiscreteSpacing",
]


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

    def train_steps(self, N: int, m: int) -> np.ndarray:
        """diffusers' model train steps for ``num_inference_steps = m`` (decreasing)."""
        if self.kind == "linspace":
            return np.linspace(0, N - 1, m + 1).round()[::-1][:-1].astype(np.int64)
        if self.kind == "leading":
            steps = (np.arange(0, m + 1) * (N // (m + 1))).round()[::-1][:-1].astype(np.int64)
            return steps + self.steps_offset
        return np.arange(N, 0, -N / m).round().astype(np.int64) - 1

    def grid(self, sde: SDE, n_steps: int) -> Tensor:
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
