r"""Adaptive-step reverse-SDE solver of Jolicoeur-Martineau et al. (2021), "Gotta Go Fast".

Each attempt from ``t`` with step ``h > 0`` (towards ``t - h``) takes an Euler–Maruyama step and
an improved-Euler step that share one Gaussian draw ``z``,

.. math:: x' = x + h\,b(x, t) + \sqrt{h\,g^2(t)}\,z, \qquad
          \tilde x = x + h\,b(x', t - h) + \sqrt{h\,g^2(t - h)}\,z, \qquad
          x'' = (x' + \tilde x) / 2,

with the reverse drift ``b(x, t) = -f(t) x - g^2(t) eps(x, t) / sigma(t)`` (``dt < 0`` written
as ``-h``), and measures their difference against the mixed tolerance
``delta = max(abs_tol, rel_tol max(|x'|, |x'_prev|))`` in the dimension-scaled l2 norm. The step
is accepted when ``E <= 1``, keeping the improved-Euler value ``x''`` (extrapolation); either way
``h <- min(t - t_end, theta h E^{-r})`` (their Algorithm 1).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..utils import check_int, check_real
from .base import Sampler, StepInfo, run_callback

__all__ = ["AdaptiveSDE", "tolerance_floor"]


def tolerance_floor(dtype: torch.dtype) -> float:
    """The smallest tolerance a state of ``dtype`` can meet: ``4 eps`` of the dtype. ``x'`` and
    ``x''`` each carry a few roundings of ``eps |x|``, so their difference cannot be resolved
    below that (``4 eps``: 3.9e-3 in float16, 3.1e-2 in bfloat16, 4.8e-7 in float32)."""
    return 4.0 * torch.finfo(dtype).eps


class AdaptiveSDE(Sampler):
    r"""Adaptive Euler–Maruyama / improved-Euler pair on the reverse SDE, with the mixed
    tolerance and extrapolation of Jolicoeur-Martineau et al. (2021), Algorithm 1.

    From ``x`` at ``t``, with ``b(x, t) = -f(t) x - g^2(t) eps(x, t) / sigma(t)``::

        x'  = x + h b(x, t)       + sqrt(h g2(t)) z
        x~  = x + h b(x', t - h)  + sqrt(h g2(t - h)) z
        x'' = (x' + x~) / 2
        E   = max over the batch of  || (x' - x'') / delta ||_2 / sqrt(d),
              delta = max(abs_tol, rel_tol max(|x'|, |x'_prev|))   (elementwise)

    accept if ``E <= 1`` (``x <- x''``, ``x'_prev <- x'``, ``t <- t - h``), then
    ``h <- min(t - t_end, theta h E^{-r})``. One step size serves the whole batch (``E`` is the
    batch maximum, as in DPM-Solver's adaptive solver), so a sample's path depends on its batch.
    The grid's times are output times: the solver lands on each (trajectory and callback) and
    its step size carries over; ``n_steps=1`` is the paper's solver.

    Noise: ``z = noise(t, t - h)``. With :class:`~scoresde.BrownianNoise` it is the increment of
    one Brownian path over the attempted interval, so a retried step sees the same path (no bias
    from rejection). With the default :class:`~scoresde.GaussianNoise` a rejected attempt's draw
    is discarded and the retry draws afresh, as in the paper; since rejection depends on ``z``,
    this biases the law slightly at loose tolerances (use ``BrownianNoise`` to avoid it).
    ``eps(x, t)`` is kept across a rejection (same ``x`` and ``t``), so a rejected attempt costs
    one network call and an accepted one two.

    Termination in every dtype: a ``rel_tol`` or ``abs_tol`` below :func:`tolerance_floor` of the
    state's dtype is raised to it with a warning naming the option and the dtype; a step size
    that falls below ``h_min`` after a rejection, a run that would spend more than ``max_nfe``
    network calls, or a non-finite error estimate end the run with a ``FloatingPointError``
    naming ``t``, the step size and the NFE spent. A rejection never proposes a step below
    ``h_min`` (one large ``E`` would otherwise jump far below the step that meets the
    tolerance): the run fails only when a step of size ``h_min`` is itself rejected.

    **Order** 1 (strong: additive noise, so the Euler–Maruyama/improved-Euler pair is strong
    order 1 at a fixed step; with adaptive steps it is measured against NFE: the strong error
    falls like ``NFE^-p``, ``p`` = 1.00 / 0.78 / 0.85 on VP / VE / DDPM-linear as ``rel_tol`` goes
    from 0.1 to 0.01). **Weak order** 1, declared from the Euler–Maruyama member of the pair and
    not fitted (the error in law is documented against the tolerance in
    ``docs/samplers-stochastic.md``).
    **NFE per step** adaptive (``nfe_per_step = None``; measured by the Denoiser; ``stats``
    reports ``accepted_steps``, ``rejected_steps`` and the tolerances used). **Stochastic** yes.
    **Reference** Jolicoeur-Martineau, Li, Piché-Taillefer, Kachman & Mitliagkas 2021, "Gotta Go
    Fast When Generating Data with Score-Based Models" (arXiv:2105.14080), Algorithm 1; defaults
    from the paper (``rel_tol = 0.05``, ``abs_tol = 0.0078`` for data in ``[-1, 1]``,
    ``h_init = 0.01``, ``theta = 0.9``, ``r = 0.9``).

    Args:
        rel_tol: relative tolerance ``epsilon_rel`` (> 0).
        abs_tol: absolute tolerance ``epsilon_abs`` (> 0), in the units of the data.
        h_init: first step size in ``t`` (> 0).
        theta: safety factor in ``(0, 1]``.
        r: exponent of the step-size update in ``(0, 1]`` (the paper uses 0.5-1).
        h_min: smallest step size; a rejected step of this size abandons the run (> 0). On a
            DDPM schedule ``g`` jumps between train steps and the error of a step across a jump
            falls only like ``sqrt(h)``: the cosine schedule's last jump needs ``h ~ 1e-7``.
        max_nfe: network calls after which the run is abandoned (>= 2).
    """

    name = "adaptive_sde"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = None
    reference = "jolicoeur2021gottagofast"

    def __init__(
        self,
        *,
        rel_tol: float = 0.05,
        abs_tol: float = 0.0078,
        h_init: float = 0.01,
        theta: float = 0.9,
        r: float = 0.9,
        h_min: float = 1e-8,
        max_nfe: int = 10_000,
    ):
        self.rel_tol = check_real("rel_tol", rel_tol, low=0.0, low_open=True)
        self.abs_tol = check_real("abs_tol", abs_tol, low=0.0, low_open=True)
        self.h_init = check_real("h_init", h_init, low=0.0, low_open=True)
        self.theta = check_real("theta", theta, low=0.0, high=1.0, low_open=True)
        self.r = check_real("r", r, low=0.0, high=1.0, low_open=True)
        self.h_min = check_real("h_min", h_min, low=0.0, low_open=True)
        self.max_nfe = check_int("max_nfe", max_nfe, low=2)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError("adaptive_sde chooses its own steps; use run()")

    def tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """``(rel_tol, abs_tol)`` for a state of ``dtype``, raised to its floor with a warning."""
        floor = tolerance_floor(dtype)
        out = []
        for name, value in (("rel_tol", self.rel_tol), ("abs_tol", self.abs_tol)):
            if value < floor:
                warnings.warn(
                    f"{name}={value:g} is below what {dtype} can resolve in adaptive_sde (4 eps "
                    f"= {floor:.3g}); raised to {floor:.3g}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                value = floor
            out.append(value)
        return out[0], out[1]

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        rel_tol, abs_tol = self._tols = self.tolerances(x.dtype)
        grid = ts.tolist()
        trajectory = [x] if save_trajectory else None
        x_prev = x  # x' of the last accepted step (the paper starts it at x)
        h = self.h_init
        accepted = rejected = 0
        bar = tqdm(total=len(grid) - 1, desc=self.name, disable=not progress, leave=False)
        for k in range(len(grid) - 1):
            t, t_end = grid[k], grid[k + 1]
            drift = None  # b(x, t), kept across rejections
            while t != t_end:
                lands = h >= t - t_end
                h_try = t - t_end if lands else h
                t_next = t_end if lands else t - h_try
                if denoiser.nfe + (1 if drift is not None else 2) > self.max_nfe:
                    self._fail(f"it would exceed max_nfe={self.max_nfe}", t, h_try, denoiser)
                if drift is None:
                    drift = self._drift(denoiser, sde, x, t)
                z = noise(t, t_next, x)
                x1 = x + h_try * drift + math.sqrt(h_try * float(sde.g2(t))) * z
                drift1 = self._drift(denoiser, sde, x1, t_next)
                x2 = 0.5 * (x1 + x + h_try * drift1 + math.sqrt(h_try * float(sde.g2(t_next))) * z)
                delta = torch.maximum(x1.abs(), x_prev.abs()).mul(rel_tol).clamp_min(abs_tol)
                err = float(((x1 - x2) / delta).flatten(1).pow(2).mean(1).sqrt().max())
                if not math.isfinite(err):
                    self._fail("the error estimate is not finite", t, h_try, denoiser)
                h = self.theta * h_try * err ** (-self.r) if err > 0 else math.inf
                if err <= 1.0:
                    accepted += 1
                    x, x_prev, t, drift = x2, x1, t_next, None
                    continue
                rejected += 1
                if h_try <= self.h_min:
                    why = f"a step of the minimum size h_min={self.h_min:g} was rejected"
                    self._fail(f"{why} (E={err:.3g})", t, h_try, denoiser)
                h = max(h, self.h_min)  # try the minimum step before giving up
            stop = False
            if callback is not None:  # may replace the state or stop (the driver's rules)
                x_cb, stop = run_callback(callback, StepInfo(k, grid[k], grid[k + 1], x, None),
                                          self.name)  # fmt: skip
                x = x_cb  # x_prev, the tolerance's scale, stays the last accepted x'
            if trajectory is not None:
                trajectory.append(x)
            bar.update()
            if stop:
                break
        bar.close()
        traj = None if trajectory is None else torch.stack(trajectory)
        stats = {"accepted_steps": accepted, "rejected_steps": rejected, "rel_tol": rel_tol,
                 "abs_tol": abs_tol}  # fmt: skip
        return x, traj, stats if not stop else {**stats, "interrupted_at": k}

    @staticmethod
    def _drift(denoiser, sde, x: Tensor, t: float) -> Tensor:
        """The reverse-time drift per unit of ``-dt``: ``-f(t) x - g^2(t) eps / sigma(t)``."""
        tt = torch.tensor(t, dtype=torch.float64)
        eps = denoiser.predict(x, tt.to(x.device)).eps
        return -float(sde.f(tt)) * x - float(sde.g2(tt) / sde.sigma(tt)) * eps

    def _fail(self, why: str, t: float, h: float, denoiser) -> None:
        raise FloatingPointError(
            f"adaptive_sde could not reach its tolerance (rel_tol={self._tols[0]:g}, "
            f"abs_tol={self._tols[1]:g}): {why}, at t={t:.6g} with step size h={h:.3g} after "
            f"{denoiser.nfe} NFE"
        )
