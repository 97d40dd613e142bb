r"""Peers on the same exact problem and the same prior draw: diffusers' schedulers and
k-diffusion's samplers, driven by a closed-form model.

Every sampler here solves the probability-flow ODE of a Gaussian mixture. Written in the
VE-equivalent variables ``y = x / alpha`` and ``s = sigma / alpha = exp(-lambda_)`` (Karras et al.
2022, eq. 4), that ODE is ``dy/ds = (y - D(y; s)) / s`` with ``D`` the ideal denoiser, whatever
the schedule: a run is fully described by the prior draw and the noise levels it starts and ends
at. Each peer therefore reports the ``s`` it started from and ended at (read from the scheduler
itself, float32 values included), and its output is compared with the reference solution between
exactly those levels (:func:`reference_between`).

- **diffusers** (:func:`run_diffusers`): the scheduler's own loop (``set_timesteps``, then for
  each timestep ``scale_model_input``, one model call, ``step``) on the DDPM-linear schedule, with
  an exact ``eps`` model. The model receives only the timestep, as a real UNet does; it returns
  ``eps`` at the noise level the scheduler assigns to that timestep (its ``sigmas`` entry where it
  keeps one, so Karras-spaced runs are exact too, else its own ``alphas_cumprod`` row). Options
  that make a scheduler start at ``T`` and stop at train step 0 are set where the scheduler has
  them; Heun and LMS always stop at ``s = 0`` and are compared with a reference that does too.
- **k-diffusion** (:func:`run_k_diffusion`): ``k_diffusion/sampling.py`` of the installed
  package, loaded by path under a stub parent package (the package's ``__init__`` imports
  training dependencies that are not installed), on the noise levels of a scoresde time grid,
  with the ideal denoiser ``D(y; s)``.

Nothing here is imported by ``scoresde``; diffusers and k-diffusion are optional benchmark
dependencies.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scoresde import VESDE, GaussianMixture, reference_solution

__all__ = [
    "PeerRun",
    "DIFFUSERS_METHODS",
    "DIFFUSERS_SPACINGS",
    "K_DIFFUSION_FIXED",
    "K_DIFFUSION_OWN_GRID",
    "load_k_diffusion_sampling",
    "run_diffusers",
    "run_k_diffusion",
    "reference_between",
    "diffusers_available",
    "k_diffusion_available",
]

# lambda_ at which a run "to s = 0" is ended in the reference: the remaining change of y is
# int s^2 dlambda ~ s^2 / 2 < 1e-25 (D(y; s) - y = O(s^2) for a mixture with positive stds).
_LAMBDA_FOR_S0 = 30.0


@dataclass
class PeerRun:
    """One peer run: final states in the VP variable of the problem's end level, measured NFE,
    and the VE noise levels ``s_start`` and ``s_end`` it integrated between."""

    x: Tensor
    nfe: int
    s_start: float
    s_end: float


def reference_between(
    data: GaussianMixture, y_start: Tensor, s_start: float, s_end: float
) -> Tensor:
    """The reference PF-ODE solution in ``y = x / alpha`` from noise level ``s_start`` to
    ``s_end`` (``0`` allowed), by ``scoresde.reference_solution`` (scipy DOP853 at
    rtol = atol = 1e-10, in ``lambda_``) on the VE SDE with exactly these endpoint levels (the
    ODE in ``(y, lambda_)`` depends on the schedule only through them)."""
    s_stop = s_end if s_end > 0 else math.exp(-_LAMBDA_FOR_S0)
    ve = VESDE(sigma_min=s_stop, sigma_max=s_start)
    return reference_solution(data, ve, y_start, t_start=1.0, t_end=0.0).x


# -------------------------------------------------------------------------------------------
# diffusers


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


# label -> (scheduler class name, options, state variable: "vp" = x, "ve" = x / alpha)
DIFFUSERS_METHODS: dict[str, tuple[str, dict, str]] = {
    "DPMSolverMultistep++(2M)": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        "vp",
    ),
    "DPMSolverMultistep++(3M)": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 3},
        "vp",
    ),
    "DPMSolverMultistep(2M)": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver", "solver_order": 2},
        "vp",
    ),
    "DPMSolverSinglestep++(2S)": (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        "vp",
    ),
    "DPMSolverSinglestep++(3S)": (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 3},
        "vp",
    ),
    "UniPC(bh2,2)": ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 2}, "vp"),
    "UniPC(bh1,3)": ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}, "vp"),
    "UniPC(bh2,3)": ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 3}, "vp"),
    "DEIS(2)": ("DEISMultistepScheduler", {"solver_order": 2}, "vp"),
    "DEIS(3)": ("DEISMultistepScheduler", {"solver_order": 3}, "vp"),
    "DDIM": ("DDIMScheduler", {}, "vp"),
    "PNDM(PLMS)": ("PNDMScheduler", {"skip_prk_steps": True}, "vp"),
    "Euler": ("EulerDiscreteScheduler", {}, "ve"),
    "Heun": ("HeunDiscreteScheduler", {}, "ve"),
    "LMS": ("LMSDiscreteScheduler", {}, "ve"),
}

# spacing label -> (the option that defines it, all its options). "leading" is left out: it
# starts below T (e.g. at train step 900 for 10 steps), i.e. from a state that is not the prior
# draw, which is another problem.
DIFFUSERS_SPACINGS: dict[str, tuple[str, dict]] = {
    "trailing": ("timestep_spacing", {"timestep_spacing": "trailing"}),
    "linspace": ("timestep_spacing", {"timestep_spacing": "linspace"}),
    "karras": ("use_karras_sigmas", {"timestep_spacing": "linspace", "use_karras_sigmas": True}),
    "lu_lambdas": ("use_lu_lambdas", {"timestep_spacing": "linspace", "use_lu_lambdas": True}),
}
# schedulers without a timestep_spacing option whose fixed spacing is "linspace"'s
_LINSPACE_ONLY = {"DPMSolverSinglestepScheduler"}
# options that put the ends where the exact problem has them and leave the ODE unaltered (no
# clipping of the predicted x0 to [-1, 1], which DDIM does by default), set where a scheduler
# has them
_DIFFUSERS_FIXED = {
    "final_sigmas_type": "sigma_min",
    "set_alpha_to_one": False,
    "thresholding": False,
    "clip_sample": False,
}


def _scheduler(method: str, spacing: str, betas: Tensor):
    """A configured scheduler, or ``None`` when it lacks the option that defines ``spacing``."""
    import diffusers

    # diffusers logs config adjustments (e.g. "Changing scheduler ... lower_order_final") per run
    diffusers.utils.logging.set_verbosity_error()
    cls_name, options, _ = DIFFUSERS_METHODS[method]
    cls = getattr(diffusers, cls_name)
    params = inspect.signature(cls.__init__).parameters
    defining, wanted = DIFFUSERS_SPACINGS[spacing]
    if defining not in params and not (spacing == "linspace" and cls_name in _LINSPACE_ONLY):
        return None
    kwargs = {
        "num_train_timesteps": len(betas),
        "trained_betas": betas.numpy(),
        "prediction_type": "epsilon",
        **{k: v for k, v in {**_DIFFUSERS_FIXED, **wanted}.items() if k in params},
        **options,
    }
    return cls(**kwargs)


def _timestep_sigmas(sched) -> dict[float, float]:
    """The VE noise level the scheduler assigns to each of its timesteps."""
    ts = [float(t) for t in sched.timesteps]
    sigmas = getattr(sched, "sigmas", None)
    if sigmas is not None and len(sigmas) >= len(ts):
        return {t: float(s) for t, s in zip(ts, sigmas, strict=False)}
    ac = sched.alphas_cumprod.double()
    return {t: float(((1 - ac[int(t)]) / ac[int(t)]).sqrt()) for t in ts}


def _end_levels(sched, method: str) -> tuple[float, float]:
    """``(s_start, s_end)``: the levels the scheduler's first state and last output sit at."""
    sigmas = getattr(sched, "sigmas", None)
    if sigmas is not None:
        return float(sigmas[0]), float(sigmas[-1])
    ac = sched.alphas_cumprod.double()
    a0 = ac[int(sched.timesteps[0])]
    a1 = sched.final_alpha_cumprod.double()
    return float(((1 - a0) / a0).sqrt()), float(((1 - a1) / a1).sqrt())


def diffusers_steps_for_nfe(method: str, spacing: str, betas: Tensor, nfe: int) -> int | None:
    """The largest ``num_inference_steps`` whose loop makes at most ``nfe`` model calls (one per
    timestep), or ``None`` when even 1 step needs more, or the spacing is not available."""
    for n in range(nfe, 0, -1):
        sched = _scheduler(method, spacing, betas)
        if sched is None:
            return None
        try:
            sched.set_timesteps(n)
        except ValueError:
            continue
        if len(sched.timesteps) <= nfe:
            return n
    return None


def run_diffusers(
    method: str,
    spacing: str,
    betas: Tensor,
    data: GaussianMixture,
    x_T: Tensor,
    num_inference_steps: int,
) -> PeerRun | None:
    """Run one diffusers scheduler from the VP prior draw ``x_T`` with an exact ``eps`` model.
    Returns ``None`` when the scheduler lacks the options of ``spacing``."""
    sched = _scheduler(method, spacing, betas)
    if sched is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers warns about deprecated config keys
        sched.set_timesteps(num_inference_steps)
    state_kind = DIFFUSERS_METHODS[method][2]
    level = _timestep_sigmas(sched)
    s_start, s_end = _end_levels(sched, method)
    nfe = 0

    def eps_model(x_vp: Tensor, t) -> Tensor:
        nonlocal nfe
        nfe += 1
        s = level[float(t)]
        alpha = 1.0 / math.sqrt(1.0 + s * s)
        sigma = s * alpha
        one = torch.ones((), dtype=torch.float64)
        x0 = data.posterior_mean(x_vp, one * alpha, one * sigma)
        return (x_vp - alpha * x0) / sigma

    x = x_T.clone() if state_kind == "vp" else x_T * math.sqrt(1.0 + s_start**2)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        x = sched.step(eps_model(x_in, t), t, x).prev_sample
    if state_kind == "ve":
        x = x / math.sqrt(1.0 + s_end**2)
    return PeerRun(x=x, nfe=nfe, s_start=s_start, s_end=s_end)


# -------------------------------------------------------------------------------------------
# k-diffusion


def k_diffusion_available() -> bool:
    return importlib.util.find_spec("k_diffusion") is not None


_KD_STUB = "_scoresde_bench_k_diffusion"


def load_k_diffusion_sampling() -> types.ModuleType:
    """``k_diffusion.sampling`` of the installed package, imported without the package's
    ``__init__`` (which needs PIL, safetensors, torchvision, ...). The module only uses
    ``utils.append_dims`` from its parent, which the stub provides."""
    if f"{_KD_STUB}.sampling" in sys.modules:
        return sys.modules[f"{_KD_STUB}.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "k-diffusion is not installed (pip install --no-deps k-diffusion)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    parent = types.ModuleType(_KD_STUB)
    parent.__path__ = [str(folder)]
    utils = types.ModuleType(f"{_KD_STUB}.utils")

    def append_dims(x: Tensor, target_dims: int) -> Tensor:
        missing = target_dims - x.ndim
        if missing < 0:
            raise ValueError(
                f"input has {x.ndim} dims but target_dims is {target_dims}, which is less"
            )
        return x[(...,) + (None,) * missing]

    utils.append_dims = append_dims
    parent.utils = utils
    sys.modules[_KD_STUB] = parent
    sys.modules[f"{_KD_STUB}.utils"] = utils
    sampling_spec = importlib.util.spec_from_file_location(
        f"{_KD_STUB}.sampling", folder / "sampling.py"
    )
    module = importlib.util.module_from_spec(sampling_spec)
    sys.modules[f"{_KD_STUB}.sampling"] = module
    sampling_spec.loader.exec_module(module)
    return module


# fixed-step samplers on given sigmas: name -> model calls per step (final level is not 0)
K_DIFFUSION_FIXED: dict[str, int] = {"euler": 1, "heun": 2, "lms": 1, "dpm_2": 2, "dpmpp_2m": 1}
# samplers that choose their own levels between sigma_max and sigma_min
K_DIFFUSION_OWN_GRID = ("dpm_fast", "dpm_adaptive")


def run_k_diffusion(
    name: str,
    data: GaussianMixture,
    y_T: Tensor,
    sigmas: Tensor | None = None,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    nfe: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> PeerRun:
    """Run k-diffusion's ``sample_<name>`` with the ideal denoiser ``D(y; s)`` from ``y_T`` (VE
    variable). Fixed-step samplers take ``sigmas`` (decreasing, last one > 0); ``dpm_fast``
    takes ``sigma_min``, ``sigma_max`` and ``nfe``; ``dpm_adaptive`` takes them and ``rtol``,
    ``atol``. The returned ``x`` is in the VE variable ``y``."""
    K = load_k_diffusion_sampling()
    count = 0

    def model(y: Tensor, s: Tensor) -> Tensor:
        nonlocal count
        count += 1
        return data.posterior_mean(y, torch.ones_like(s, dtype=torch.float64), s.to(torch.float64))

    if name in K_DIFFUSION_FIXED:
        y = getattr(K, f"sample_{name}")(model, y_T.clone(), sigmas, disable=True)
        s_start, s_end = float(sigmas[0]), float(sigmas[-1])
    elif name == "dpm_fast":
        y = K.sample_dpm_fast(model, y_T.clone(), sigma_min, sigma_max, nfe, disable=True)
        s_start, s_end = sigma_max, sigma_min
    elif name == "dpm_adaptive":
        y = K.sample_dpm_adaptive(
            model, y_T.clone(), sigma_min, sigma_max, rtol=rtol, atol=atol, disable=True
        )
        s_start, s_end = sigma_max, sigma_min
    else:
        raise ValueError(
            f"unknown k-diffusion sampler {name!r}; expected one of "
            f"{sorted(K_DIFFUSION_FIXED) + list(K_DIFFUSION_OWN_GRID)}"
        )
    return PeerRun(x=y, nfe=count, s_start=s_start, s_end=s_end)
