"""The sampler contract and the one driver loop every sampler runs in.

A :class:`Sampler` only steps: :meth:`Sampler.init` precomputes every coefficient for the grid
(float64, cast once), and :meth:`Sampler.step` is tensor arithmetic indexed by the integer step
``i``. The loop, the progress bar, the callback, the trajectory and the non-finite check live in
:meth:`Sampler.run`, once (diffrax's ``init``/``step`` split). Backends that integrate the whole
interval themselves (torchdiffeq, scipy, torchsde) override :meth:`Sampler.run` instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from ..noise import NoiseSource
from ..sde import SDE

__all__ = ["Sampler", "AffineStep", "SampleResult", "StepInfo", "GridSchedule"]

# the driver checks the state for NaN / inf every this many steps (and after the last): a NaN or
# inf, once in the state, stays there through the affine updates of every sampler, so a check
# per window finds it; the window's states are kept to name the first bad step
FINITE_CHECK_EVERY = 8


@dataclass
class StepInfo:
    """What a per-step ``callback`` receives: the state after step ``i`` (from ``t`` to
    ``t_next``) and the last ``x0`` prediction (``None`` if the step made no network call)."""

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
    """

    name: ClassVar[str]
    order: ClassVar[float]
    weak_order: ClassVar[float | None] = None
    stochastic: ClassVar[bool]
    nfe_per_step: ClassVar[int | None] = 1
    reference: ClassVar[str] = ""

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

    def options(self) -> dict[str, Any]:
        """The sampler's constructor options, for ``repr`` and result tables."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def run(
        self,
        denoiser: Denoiser,
        sde: SDE,
        ts: Tensor,
        x: Tensor,
        *,
        noise: NoiseSource,
        callback: Callable[[StepInfo], None] | None = None,
        progress: bool = True,
        save_trajectory: bool = False,
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """The driver loop: ``init``, then ``step`` for every interval of ``ts``.

        Non-finite states: the state is checked every ``FINITE_CHECK_EVERY`` steps and after the
        last (one pass and one host sync per check, not per step). The states since the last
        check are kept, so a failed check finds the first non-finite one and names its step;
        a diverging run stops within ``FINITE_CHECK_EVERY`` steps instead of spending the rest.
        """
        n = ts.numel() - 1
        state = self.init(denoiser, sde, ts, x)
        grid = ts.tolist()
        trajectory = [x] if save_trajectory else None
        window: list[Tensor] = []  # states since the last finite check
        denoiser.last = None
        steps = tqdm(range(n), desc=self.name, leave=False) if progress else range(n)
        for i in steps:
            x, state = self.step(denoiser, sde, grid, i, x, state, noise)
            window.append(x)
            if len(window) == FINITE_CHECK_EVERY or i == n - 1:
                if not bool(torch.isfinite(x).all()):
                    first = next(j for j, w in enumerate(window) if not torch.isfinite(w).all())
                    k = i + 1 - len(window) + first  # window[j]: the state after step i+1-len+j
                    raise FloatingPointError(
                        f"non-finite sample at step {k} (t={grid[k]:.6g} -> t_next="
                        f"{grid[k + 1]:.6g}) in {self.name!r}; the first non-finite value "
                        "appeared in this step's update"
                    )
                window.clear()
            if trajectory is not None:
                trajectory.append(x)
            if callback is not None:
                last = denoiser.last
                callback(StepInfo(i, grid[i], grid[i + 1], x, None if last is None else last.x0))
        traj = None if trajectory is None else torch.stack(trajectory)
        return x, traj, {}


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
        cast = GridSchedule.cast
        # times stay float64: they feed the schedule inside the Denoiser
        return s.t.to(x.device), cast(c_x, x), cast(c_eps, x), None if c_z is None else cast(c_z, x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, c_x, c_eps, c_z = state
        x_next = c_x[i] * x + c_eps[i] * denoiser.predict(x, t[i]).eps
        if c_z is not None:
            x_next = x_next + c_z[i] * noise(ts[i], ts[i + 1], x)
        return x_next, state
