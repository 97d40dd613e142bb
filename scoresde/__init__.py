"""scoresde: SDE/ODE solvers for score-based diffusion models, verified against exact solutions.

The five pieces: an :class:`SDE` (the process), a :class:`Denoiser` (the model and what it
predicts), a :class:`~scoresde.grids.TimeGrid` (where to step), a
:class:`~scoresde.noise.NoiseSource` (which randomness) and a :class:`Sampler` (how to step),
joined by :func:`sample`.
"""

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
    DiscreteSpacing,
    Explicit,
    Karras,
    Quadratic,
    TimeGrid,
    UniformLambda,
    UniformTime,
)
from .noise import BrownianNoise, GaussianNoise, NoiseSource
from .parameterization import Parameterization
from .samplers import SAMPLERS, Sampler, SampleResult, StepInfo, get_sampler, sample
from .sde import SDE, VESDE, VPSDE, DiscreteVPSDE, SubVPSDE
from .tuning import Optimized

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "Parameterization",
    "Denoiser",
    "ClassifierFreeGuidance",
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
    "Optimized",
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
    "SAMPLERS",
    "get_sampler",
    "sample",
    "__version__",
]
