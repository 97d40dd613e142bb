"""Adapters: existing models as a ``(SDE, Denoiser)`` pair, with no change to the model.

None of these modules imports diffusers or k-diffusion: they read the objects they are given.
``ScoresdeScheduler`` (a diffusers scheduler backed by any fixed-grid sampler) imports diffusers
when it is first asked for.
"""

from .diffusers import (
    discrete_sde_from_config,
    flow_match_grid,
    from_diffusers,
    x0_correction_from_config,
)
from .k_diffusion import from_k_diffusion
from .score_fn import from_score_fn

__all__ = [
    "from_diffusers",
    "discrete_sde_from_config",
    "x0_correction_from_config",
    "flow_match_grid",
    "from_k_diffusion",
    "from_score_fn",
    "ScoresdeScheduler",
]


def __getattr__(name):
    # ScoresdeScheduler subclasses diffusers' classes: diffusers is imported on first use only
    if name == "ScoresdeScheduler":
        from .scheduler import ScoresdeScheduler

        return ScoresdeScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
