"""Samplers: the registry, ``get_sampler`` and the public ``sample`` entry point.

``SAMPLERS`` maps each stable registry key to its class. To add a sampler, write the class in its
family module, declare ``name``, ``order``, ``stochastic`` and ``nfe_per_step``, and list it
below; the registry-wide contract and convergence tests pick it up.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Mapping
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..grids import Explicit, TimeGrid
from ..noise import GaussianNoise, NoiseSource, check_generator
from ..sde import SDE
from ..utils import check_bool, check_device, check_int, describe
from .adams import IPNDM, LMS
from .adaptive_sde import AdaptiveSDE
from .backends import ScipySampler, TorchdiffeqFixedSampler, TorchdiffeqSampler
from .base import (
    AffineStep,
    GridSchedule,
    Interrupt,
    Sampler,
    SampleResult,
    StepInfo,
    all_finite,
    option_from_config,
    run_callback,
)
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
from .inversion import invert
from .langevin import AnnealedLangevin
from .ode import PFRK4, EDMHeun, PFEuler, PFHeun
from .pc import LangevinCorrector, PredictorCorrector
from .restart import Restart
from .reverse_sde import Ancestral, EulerMaruyama, ReverseDiffusion, TorchsdeSampler
from .sa_solver import SASolver
from .sde_dpm_solver import SDEDPMSolver1, SDEDPMSolverPP2M, SDEDPMSolverPP3M
from .sde_dpm_solver_singlestep import DPM2Ancestral, DPMSolverPP2SAncestral, DPMSolverPPSDE
from .unipc import PLMS, PNDM, UniPC
from .zero_snr import shifted_callback, zero_snr_first_step, zero_snr_run_times

__all__ = [
    "SAMPLERS",
    "get_sampler",
    "sample",
    "invert",
    "Sampler",
    "AffineStep",
    "SampleResult",
    "StepInfo",
    "Interrupt",
    "GridSchedule",
    "zero_snr_first_step",
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
    "SDEDPMSolverPP3M",
    "DPMSolverPPSDE",
    "DPMSolverPP2SAncestral",
    "DPM2Ancestral",
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
        SDEDPMSolverPP3M,
        DPMSolverPPSDE,
        DPMSolverPP2SAncestral,
        DPM2Ancestral,
        EDMStochastic,
        ERSDE,
        Restart,
        SASolver,
        AdaptiveSDE,
    )
}


def get_sampler(name: str | Mapping[str, Any], **options) -> Sampler:
    """Instantiate the sampler registered as ``name`` with keyword-only ``options``.

    ``name`` may also be a config from :meth:`Sampler.to_config` (``{"name": ..., "options":
    {...}}``, e.g. read back from JSON); keyword ``options`` then override the config's."""
    if isinstance(name, Mapping):
        config = name
        if set(config) - {"name", "options"} or "name" not in config:
            raise ValueError(
                "a sampler config must be {'name': registry key, 'options': {...}}; "
                f"got keys {sorted(config)}"
            )
        saved = config.get("options") or {}
        if not isinstance(saved, Mapping):
            raise ValueError(f"a sampler config's options must be a mapping; got {saved!r}")
        options = {k: option_from_config(v) for k, v in saved.items()} | options
        name = config["name"]
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid names are {sorted(SAMPLERS)}")
    cls = SAMPLERS[name]
    # a sampler without options inherits object.__init__, whose signature is (*args, **kwargs)
    init = cls.__init__
    params = (
        [] if init is object.__init__ else list(inspect.signature(init).parameters.values())[1:]
    )
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    valid = [p.name for p in params if p.kind in kinds]
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    unknown = [] if open_ended else sorted(set(options) - set(valid))
    if unknown:  # a typo would otherwise surface as Python's bare "unexpected keyword argument"
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for sampler {name!r}; its options are {valid}"
        )
    return cls(**options)


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
    generator: torch.Generator | list[torch.Generator] | None = None,
    denoise_final: bool = False,
    save_trajectory: bool = False,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
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
        grid: a :class:`~scoresde.grids.TimeGrid` (default: the sampler's ``default_grid``).
        n_steps: number of intervals (not NFE); ``None`` only with an ``Explicit`` grid or an
            adaptive sampler (``sampler.nfe(1) is None``), which then outputs ``t_max -> t_min``
            in one interval and picks its own steps.
        noise: noise source of stochastic samplers (default ``GaussianNoise(generator)``).
        generator: RNG for the prior draw and the default noise: one ``torch.Generator``, or a
            list of them, one per sample, so that sample ``i`` depends on ``generator[i]`` only
            (not on the batch size or the other samples).
        denoise_final: replace the final state by the model's ``x0`` at ``ts[-1]`` (+1 NFE).
        save_trajectory: keep the state at every grid time in ``result.trajectory``.
        callback: called with a :class:`StepInfo` after every step; it may return a tensor that
            replaces the state the run continues from, or return (or raise)
            :class:`~scoresde.Interrupt` to stop: the result then holds the state reached, with
            ``stats["interrupted_at"]`` the last step taken (``denoise_final`` is not applied).
        progress: show a tqdm bar.
        device, dtype: of the prior draw (``x_T`` is moved to ``device``; a ``dtype`` that
            differs from ``x_T``'s is an error). The state must have the network's dtype and
            device (checked before the first call when the network is an ``nn.Module``).
    """
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a Sampler or a registry name; got {describe(sampler)}")
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a scoresde.Denoiser; got {describe(denoiser)}")
    sde = denoiser.process(sde)
    grid = sampler.default_grid if grid is None else grid
    if not isinstance(grid, TimeGrid):
        raise TypeError(f"grid must be a TimeGrid (e.g. UniformTime()); got {describe(grid)}")
    denoise_final = check_bool("denoise_final", denoise_final)
    save_trajectory = check_bool("save_trajectory", save_trajectory)
    progress = check_bool("progress", progress)
    if device is not None:
        device = check_device("device", device)
    if n_steps is None and not isinstance(grid, Explicit) and sampler.nfe(1) is None:
        n_steps = 1  # an adaptive solver picks its own steps; the grid only sets output times
    if n_steps is None and not isinstance(grid, Explicit):
        raise ValueError(f"n_steps must be an int >= 1 for grid {grid!r}; got None")
    if n_steps is not None:
        n_steps = check_int("n_steps", n_steps, low=1)
        _check_memory("n_steps", n_steps, _TABLE_BYTES_PER_STEP, "the grid's coefficient tables")
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be callable as callback(StepInfo) or None; got {callback!r} "
            f"({type(callback).__name__})"
        )
    ts = grid.grid(sde, n_steps)

    generator = check_generator(generator)
    x = _initial_state(sde, shape, x_T, generator, device, dtype)
    if save_trajectory:
        _check_memory("n_steps", ts.numel() - 1, x.nbytes, "save_trajectory=True")
    denoiser.check_placement(x)
    noise = GaussianNoise(generator) if noise is None else noise
    if not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be a NoiseSource; got {describe(noise)}")
    noise.bind(ts, x)

    denoiser.reset_nfe()
    start = time.perf_counter()
    with torch.inference_mode():
        # alpha = 0 at the first time (zero terminal SNR, rectified flow): samplers whose step
        # is not finite there start with the lambda -> -inf limit of a first-order step
        first, stop, run_ts = None, False, ts
        if not sampler.zero_snr_start and float(sde.alpha(ts[0])) == 0.0:
            run_ts = zero_snr_run_times(sampler, sde, ts)
            first = zero_snr_first_step(sampler, denoiser, sde, run_ts, x, noise)
            if callback is not None and run_ts is ts:
                info = StepInfo(0, float(ts[0]), float(ts[1]), first, denoiser.last.x0)
                first, stop = run_callback(callback, info, sampler.name)
        # an adaptive sampler's first output interval continues from the inserted time, so its
        # steps are not shifted and the limit step's state is not an output
        inner = int(run_ts is not ts)
        if first is None:
            x, trajectory, stats = sampler.run(
                denoiser, sde, ts, x, noise=noise, callback=callback, progress=progress,
                save_trajectory=save_trajectory,
            )  # fmt: skip
        elif stop or run_ts.numel() == 2:
            trajectory = torch.stack([x, first]) if save_trajectory else None
            x, stats = first, {"interrupted_at": 0} if stop else {}
        else:
            x_T = x
            x, trajectory, stats = sampler.run(
                denoiser, sde, run_ts[1:], first, noise=noise, progress=progress,
                save_trajectory=save_trajectory,
                callback=None if callback is None else shifted_callback(callback, inner, float(ts[0])),
            )  # fmt: skip
            if trajectory is not None:
                trajectory = torch.cat([x_T[None], trajectory[inner:]])
            if "interrupted_at" in stats:  # counted from ts[1]
                stats["interrupted_at"] += 1 - inner
        if first is not None:
            stats = {"zero_snr_start": "ancestral" if sampler.stochastic else "ddim", **stats}
        if denoise_final and "interrupted_at" not in stats:
            x = denoiser.predict(x, ts[-1].to(x.device)).x0
            if not all_finite(x):
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
        dtype = dtype or torch.float32
        if isinstance(generator, list):
            # one (1, *dims) draw per sample from its own generator, as diffusers' randn_tensor
            check_generator(generator, shape[0])
            draws = [sde.prior_sample((1, *shape[1:]), generator=g, dtype=dtype) for g in generator]
            x = torch.cat([z.to(draws[0].device) for z in draws])
        else:
            gen_device = generator.device if generator is not None else device
            x = sde.prior_sample(shape, generator=generator, dtype=dtype, device=gen_device)
        return x.to(device) if device is not None else x
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point():
        got = f"a {x_T.dtype} tensor" if isinstance(x_T, Tensor) else type(x_T).__name__
        raise TypeError(f"x_T must be a floating-point tensor; got {got}")
    if x_T.ndim < 1:
        raise ValueError("x_T must have shape (batch, *dims); got a 0-d tensor")
    if dtype is not None and dtype != x_T.dtype:
        raise ValueError(
            f"x_T is {x_T.dtype} but dtype={dtype} was given; give one of them (or x_T.to(dtype))"
        )
    if shape is not None and tuple(shape) != tuple(x_T.shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)} was given")
    if not all_finite(x_T):
        raise ValueError("x_T must be finite; it holds NaN or inf")
    if isinstance(generator, list):
        check_generator(generator, x_T.shape[0])
    return x_T if device is None else x_T.to(device)
