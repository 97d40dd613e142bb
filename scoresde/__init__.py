"""scoresde: SDE/ODE solvers for score-based diffusion models, verified against exact solutions.

The five pieces: an :class:`SDE` (the process), a :class:`Denoiser` (the model and what it
predicts), a :class:`~scoresde.grids.TimeGrid` (where to step), a
:class:`~scoresde.noise.NoiseSource` (which randomness) and a :class:`Sampler` (how to step),
joined by :func:`sample`.
"""

from .corrections import ClipX0, DynamicThreshold, X0Correction
from .denoiser import (
    ClassifierFreeGuidance,
    ContinuousTime,
    Denoiser,
    LogSigmaInput,
    Prediction,
    SigmaInput,
    TimeInput,
    TrainIndex,
)
from .exact import Gaussian, GaussianMixture, reference_solution, ring_mixture
from .grids import (
    GRIDS,
    DiscreteSpacing,
    Explicit,
    FlowMatchShift,
    Karras,
    Quadratic,
    TimeGrid,
    UniformLambda,
    UniformTime,
    grid_from_config,
)
from .noise import BrownianNoise, GaussianNoise, NoiseSource
from .parameterization import Parameterization
from .samplers import (
    SAMPLERS,
    Interrupt,
    Sampler,
    SampleResult,
    StepInfo,
    get_sampler,
    invert,
    sample,
)
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, RectifiedFlow, SubVPSDE
from .tuning import Optimized

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "RectifiedFlow",
    "DiscreteVPSDE",
    "Parameterization",
    "Denoiser",
    "ClassifierFreeGuidance",
    "X0Correction",
    "ClipX0",
    "DynamicThreshold",
    "Prediction",
    "TimeInput",
    "ContinuousTime",
    "TrainIndex",
    "SigmaInput",
    "LogSigmaInput",
    "TimeGrid",
    "UniformTime",
    "UniformLambda",
    "Karras",
    "Quadratic",
    "Explicit",
    "DiscreteSpacing",
    "FlowMatchShift",
    "Optimized",
    "GRIDS",
    "grid_from_config",
    "NoiseSource",
    "GaussianNoise",
    "BrownianNoise",
    "GaussianMixture",
    "Gaussian",
    "ring_mixture",
    "reference_solution",
    "Sampler",
    "SampleResult",
    "StepInfo",
    "Interrupt",
    "SAMPLERS",
    "get_sampler",
    "sample",
    "invert",
    "__version__",
]
