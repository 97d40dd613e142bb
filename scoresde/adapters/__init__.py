"""Adapters: existing models as a ``(SDE, Denoiser)`` pair, with no change to the model.

None of these modules imports diffusers or k-diffusion: they read the objects they are given.
"""

from .diffusers import discrete_sde_from_config, flow_match_grid, from_diffusers
from .k_diffusion import from_k_diffusion
from .score_fn import from_score_fn

__all__ = [
    "from_diffusers",
    "discrete_sde_from_config",
    "flow_match_grid",
    "from_k_diffusion",
    "from_score_fn",
]
