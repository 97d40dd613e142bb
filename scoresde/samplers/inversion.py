r"""Inversion: a deterministic sampler run forwards in time, from the data towards ``T``.

DDIM inversion (Song, Meng & Ermon 2021, Sec. 4.3; Dhariwal & Nichol 2021, Appendix F) and its
higher-order versions integrate the probability-flow ODE from ``t_min`` up to ``T``: the map
``x_{t_min} -> x_T`` that sampling inverts. It is the same driver loop on an increasing grid. The
exponential integrators are exact integrals of a polynomial model output in ``lambda_`` and hold
for ``h = lambda_{i+1} - lambda_i < 0`` unchanged; the Runge–Kutta solvers of the PF-ODE in
``t`` hold for ``t_{i+1} - t_i > 0``. Stochastic samplers have no inverse (their noise is not a
function of the state), and a few deterministic ones are built for a decreasing grid only; both
are refused (:data:`NOT_INVERTIBLE` says why).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..grids import Explicit, TimeGrid, UniformTime
from ..noise import GaussianNoise
from ..sde import SDE
from ..utils import check_int, describe
from .base import Sampler, SampleResult

__all__ = ["invert", "NOT_INVERTIBLE"]

# deterministic samplers that cannot run on an increasing grid, and why
NOT_INVERTIBLE = {
    "dpm_solver_adaptive": "its step-size control walks towards t_min (a decreasing grid only)",
}


def invert(
    sampler: Sampler | str,
    denoiser: Denoiser,
    x0: Tensor,
    *,
    grid: TimeGrid | Tensor | None = None,
    n_steps: int | None = None,
    sde: SDE | None = None,
    save_trajectory: bool = False,
    progress: bool = True,
) -> SampleResult:
    """Map data ``x0`` (the state at the grid's first time, ``t_min`` by default) to ``T``.

    Args:
        sampler: a deterministic :class:`Sampler` or its registry key.
        denoiser: the model.
        x0: the data, ``(batch, *dims)``, taken as the state at the first (smallest) time.
        grid: a :class:`~scoresde.TimeGrid`, whose :meth:`~scoresde.TimeGrid.increasing` grid
            (its sampling grid reversed) is run (default ``UniformTime()``); or a strictly
            increasing 1-D tensor of times in ``[t_min, T]``.
        n_steps: number of intervals; ``None`` only with an ``Explicit`` grid or a tensor.
        sde: the process; defaults to ``denoiser.sde``.
        save_trajectory, progress: as in :func:`scoresde.sample`.

    Returns:
        a :class:`SampleResult` whose ``x`` is the state at the last (largest) time and ``ts`` the
        increasing grid. Sampling with the same sampler on ``ts.flip(0)`` from ``x`` inverts it up
        to the sampler's discretisation error (``O(h^order)``).
    """
    from . import get_sampler

    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a Sampler or a registry name; got {describe(sampler)}")
    if sampler.stochastic:
        raise ValueError(
            f"sampler must be deterministic to invert (a stochastic sampler's noise is not a "
            f"function of the state, so no inverse map exists); got {sampler!r}, e.g. use 'ddim' "
            "or 'dpm_solver_pp_2m'"
        )
    if sampler.name in NOT_INVERTIBLE:
        raise ValueError(
            f"sampler {sampler.name!r} cannot invert: {NOT_INVERTIBLE[sampler.name]}; use 'ddim', "
            "a DPM-Solver, DEIS, UniPC or a PF-ODE Runge-Kutta solver"
        )
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a scoresde.Denoiser; got {describe(denoiser)}")
    sde = denoiser.process(sde)
    ts = _increasing_grid(sde, grid, n_steps)
    if float(sde.alpha(ts[-1])) == 0.0 and not (sampler.zero_snr_start or sampler.name == "ddim"):
        # lambda_ = -inf at the end: the exponential integrators' coefficients and the
        # multistep extrapolation degenerate on the last step (only DDIM's limit is finite)
        raise ValueError(
            f"sampler {sampler.name!r} cannot invert up to alpha = 0 ({sde!r} has zero terminal "
            "SNR); use 'ddim', 'pf_euler' or 'pf_heun', or end the grid below T "
            "(e.g. grid=UniformTime(t_start=0.999))"
        )
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        got = (
            f"a {x0.dtype} tensor of shape {tuple(x0.shape)}"
            if isinstance(x0, Tensor)
            else describe(x0)
        )
        raise TypeError(f"x0 must be a floating-point tensor (batch, *dims); got {got}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(
            f"x0 holds {int((~torch.isfinite(x0)).sum())} NaN or infinite values; expected "
            "finite data"
        )

    denoiser.reset_nfe()
    start = time.perf_counter()
    with torch.inference_mode():
        x, trajectory, stats = sampler.run(
            denoiser, sde, ts, x0, noise=GaussianNoise(), progress=progress,
            save_trajectory=save_trajectory,
        )  # fmt: skip
    stats = {"n_steps": ts.numel() - 1, "time_s": time.perf_counter() - start, **stats}
    return SampleResult(x=x, nfe=denoiser.nfe, ts=ts, trajectory=trajectory, stats=stats)


def _increasing_grid(sde: SDE, grid, n_steps) -> Tensor:
    if grid is None or isinstance(grid, TimeGrid):
        grid = UniformTime() if grid is None else grid
        if n_steps is None and not isinstance(grid, Explicit):
            raise ValueError(f"n_steps must be an int >= 1 for grid {grid!r}; got None")
        if n_steps is not None:
            check_int("n_steps", n_steps, low=1)
        ts = grid.increasing(sde, n_steps)
        if not bool((ts[1:] > ts[:-1]).all()):
            raise ValueError(
                f"{grid!r}.increasing() returned a grid that is not strictly increasing"
            )
        return ts
    if not isinstance(grid, Tensor):
        raise TypeError(
            f"grid must be a TimeGrid or an increasing tensor of times; got {type(grid).__name__}"
        )
    ts = grid.detach().to("cpu", torch.float64).flatten()
    if ts.numel() < 2 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(
            "grid must be strictly increasing for inversion (it runs from the data towards T); "
            f"got {ts.tolist()}"
        )
    if n_steps is not None and n_steps != ts.numel() - 1:
        raise ValueError(
            f"n_steps must be None or {ts.numel() - 1} for a grid of {ts.numel()} times; "
            f"got {n_steps!r}"
        )
    if ts[0] < sde.t_min or ts[-1] > sde.T:
        raise ValueError(
            f"grid must lie in [t_min, T] = [{sde.t_min}, {sde.T}]; got "
            f"[{ts[0].item()}, {ts[-1].item()}]"
        )
    return ts
