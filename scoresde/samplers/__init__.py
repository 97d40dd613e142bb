"""Samplers: the registry, ``get_sampler`` and the public ``sample`` entry point.

``SAMPLERS`` maps each stable registry key to its class. To add a sampler, write the class in its
family module, declare ``name``, ``order``, ``stochastic`` and ``nfe_per_step``, and list it
below; the registry-wide contract and convergence tests pick it up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from numbers import Integral

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..grids import Explicit, TimeGrid, UniformTime
from ..noise import GaussianNoise, NoiseSource
from ..sde import SDE
from ..utils import check_int
from .adams import IPNDM, LMS
from .adaptive_sde import AdaptiveSDE
from .backends import ScipySampler, TorchdiffeqFixedSampler, TorchdiffeqSampler
from .base import AffineStep, GridSchedule, Sampler, SampleResult, StepInfo
from .dpm_solver_multistep import (
    DDIM,
    DPMSolver1,
    DPMSolver2M,
    DPMSolver3M,
    DPMSolverPP1,
    DPMSolverPP2M,
    DPMSolverPP3M,
    StochasticDDIM,
)
from .dpm_solver_singlestep import DPMSolver2S, DPMSolver3S, DPMSolverAdaptive, DPMSolverPP2S
from .edm import EDMStochastic
from .er_sde import ERSDE
from .exponential import DEIS1, DEIS2, DEIS3
from .langevin import AnnealedLangevin
from .ode import PFRK4, EDMHeun, PFEuler, PFHeun
from .pc import LangevinCorrector, PredictorCorrector
from .restart import Restart
from .reverse_sde import Ancestral, EulerMaruyama, ReverseDiffusion, TorchsdeSampler
from .sa_solver import SASolver
from .sde_dpm_solver import SDEDPMSolver1, SDEDPMSolverPP2M
from .unipc import PLMS, PNDM, UniPC

__all__ = [
    "SAMPLERS",
    "get_sampler",
    "sample",
    "Sampler",
    "AffineStep",
    "SampleResult",
    "StepInfo",
    "GridSchedule",
    "PFEuler",
    "PFHeun",
    "PFRK4",
    "EDMHeun",
    "DDIM",
    "StochasticDDIM",
    "DPMSolver1",
    "DPMSolverPP1",
    "DPMSolver2S",
    "DPMSolver3S",
    "DPMSolverPP2S",
    "DPMSolver2M",
    "DPMSolver3M",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "DPMSolverAdaptive",
    "TorchdiffeqSampler",
    "TorchdiffeqFixedSampler",
    "ScipySampler",
    "EulerMaruyama",
    "DEIS1",
    "DEIS2",
    "DEIS3",
    "UniPC",
    "PNDM",
    "PLMS",
    "IPNDM",
    "LMS",
    "ReverseDiffusion",
    "Ancestral",
    "TorchsdeSampler",
    "PredictorCorrector",
    "LangevinCorrector",
    "AnnealedLangevin",
    "SDEDPMSolver1",
    "SDEDPMSolverPP2M",
    "EDMStochastic",
    "ERSDE",
    "Restart",
    "SASolver",
    "AdaptiveSDE",
]

SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        PFEuler,
        PFHeun,
        PFRK4,
        EDMHeun,
        DDIM,
        StochasticDDIM,
        DPMSolver1,
        DPMSolverPP1,
        DPMSolver2S,
        DPMSolver3S,
        DPMSolverPP2S,
        DPMSolver2M,
        DPMSolver3M,
        DPMSolverPP2M,
        DPMSolverPP3M,
        DPMSolverAdaptive,
        TorchdiffeqSampler,
        TorchdiffeqFixedSampler,
        ScipySampler,
        EulerMaruyama,
        DEIS1,
        DEIS2,
        DEIS3,
        UniPC,
        PNDM,
        PLMS,
        IPNDM,
        LMS,
        ReverseDiffusion,
        Ancestral,
        TorchsdeSampler,
        PredictorCorrector,
        AnnealedLangevin,
        SDEDPMSolver1,
        SDEDPMSolverPP2M,
        EDMStochastic,
        ERSDE,
        Restart,
        SASolver,
        AdaptiveSDE,
    )
}


def get_sampler(name: str, **options) -> Sampler:
    """Instantiate the sampler registered as ``name`` with keyword-only ``options``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid names are {sorted(SAMPLERS)}")
    return SAMPLERS[name](**options)


def sample(
    sampler: Sampler | str,
    denoiser: Denoiser,
    sde: SDE | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    x_T: Tensor | None = None,
    grid: TimeGrid | None = None,
    n_steps: int | None = None,
    noise: NoiseSource | None = None,
    generator: torch.Generator | None = None,
    denoise_final: bool = False,
    save_trajectory: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SampleResult:
    """Draw samples by integrating the reverse process from ``T`` to ``t_min``.

    Args:
        sampler: a :class:`Sampler` or a registry key (see ``SAMPLERS``).
        denoiser: the model, as a :class:`~scoresde.Denoiser`.
        sde: the process; defaults to ``denoiser.sde``.
        shape: ``(batch, *dims)`` of the samples, when ``x_T`` is not given.
        x_T: the starting state at ``grid``'s first time (default: a prior draw).
        grid: a :class:`~scoresde.grids.TimeGrid` (default ``UniformTime()``).
        n_steps: number of intervals (not NFE); ``None`` only with an ``Explicit`` grid.
        noise: noise source of stochastic samplers (default ``GaussianNoise(generator)``).
        generator: RNG for the prior draw and the default noise.
        denoise_final: replace the final state by the model's ``x0`` at ``ts[-1]`` (+1 NFE).
        save_trajectory: keep the state at every grid time in ``result.trajectory``.
        callback: called with a :class:`StepInfo` after every step.
        progress: show a tqdm bar.
        device, dtype: of the prior draw (ignored when ``x_T`` is given).
    """
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a Sampler or a registry name; got {type(sampler).__name__}"
        )
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a scoresde.Denoiser; got {type(denoiser).__name__}")
    sde = denoiser.process(sde)
    grid = UniformTime() if grid is None else grid
    if not isinstance(grid, TimeGrid):
        raise TypeError(f"grid must be a TimeGrid (e.g. UniformTime()); got {type(grid).__name__}")
    if n_steps is None and not isinstance(grid, Explicit):
        raise ValueError(f"n_steps must be an int >= 1 for grid {grid!r}; got None")
    if n_steps is not None:
        n_steps = check_int("n_steps", n_steps, low=1)
        _check_memory("n_steps", n_steps, _TABLE_BYTES_PER_STEP, "the grid's coefficient tables")
    ts = grid.grid(sde, n_steps)

    x = _initial_state(sde, shape, x_T, generator, device, dtype)
    if save_trajectory:
        _check_memory("n_steps", ts.numel() - 1, x.nbytes, "save_trajectory=True")
    noise = GaussianNoise(generator) if noise is None else noise
    if not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be a NoiseSource; got {type(noise).__name__}")
    noise.bind(ts, x)

    denoiser.reset_nfe()
    start = time.perf_counter()
    with torch.inference_mode():
        x, trajectory, stats = sampler.run(
            denoiser, sde, ts, x, noise=noise, callback=callback, progress=progress,
            save_trajectory=save_trajectory,
        )  # fmt: skip
        if denoise_final:
            x = denoiser.predict(x, ts[-1].to(x.device)).x0
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError(
                    f"non-finite sample from the final denoising step (denoise_final=True, "
                    f"t={float(ts[-1]):.6g}) in {sampler.name!r}: the network's x0 holds NaN or inf"
                )
    stats = {"n_steps": ts.numel() - 1, "time_s": time.perf_counter() - start, **stats}
    return SampleResult(x=x, nfe=denoiser.nfe, ts=ts, trajectory=trajectory, stats=stats)


# float64 entries per step that init may precompute (times, schedule and solver coefficients)
_TABLE_BYTES_PER_STEP = 16 * 8


def _check_memory(name: str, n_steps: int, bytes_per_step: int, what: str) -> None:
    """Refuse a request whose per-step memory alone exceeds the machine's RAM, naming it, rather
    than failing inside the allocator."""
    need = n_steps * bytes_per_step
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > ram:
        raise ValueError(
            f"{name}={n_steps} needs about {need / 2**30:.3g} GiB for {what} "
            f"({bytes_per_step} bytes per step), more than this machine's "
            f"{ram / 2**30:.3g} GiB of memory; use fewer steps"
        )


def _initial_state(sde, shape, x_T, generator, device, dtype) -> Tensor:
    if x_T is None:
        if shape is None:
            raise ValueError("give either shape=(batch, *dims) or x_T; got neither")
        if (
            not isinstance(shape, (tuple, list, torch.Size))
            or not shape
            or not all(
                isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in shape
            )
        ):
            raise ValueError(
                f"shape must be a tuple of positive ints (batch, *dims); got {shape!r}"
            )
        shape = tuple(int(s) for s in shape)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(
                f"dtype must be a floating-point torch.dtype (e.g. torch.float32); got {dtype!r}"
            )
        gen_device = generator.device if generator is not None else device
        x = sde.prior_sample(
            shape, generator=generator, dtype=dtype or torch.float32, device=gen_device
        )
        return x.to(device) if device is not None else x
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point():
        raise TypeError(f"x_T must be a floating-point tensor; got {type(x_T).__name__}")
    if x_T.ndim < 1:
        raise ValueError("x_T must have shape (batch, *dims); got a 0-d tensor")
    if shape is not None and tuple(shape) != tuple(x_T.shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)} was given")
    if not bool(torch.isfinite(x_T).all()):
        raise ValueError("x_T must be finite; it holds NaN or inf")
    return x_T if device is None else x_T.to(device)
