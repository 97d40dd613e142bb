"""A score_sde-style score function ``score_fn(x, t)`` as a Denoiser."""

from __future__ import annotations

from ..denoiser import Denoiser, TimeInput
from ..parameterization import Parameterization
from ..sde import SDE

__all__ = ["from_score_fn"]


def from_score_fn(score_fn, sde: SDE, *, time_input: TimeInput | str = "t") -> Denoiser:
    """Wrap ``score_fn(x, t) -> grad log p_t(x)`` (Song et al. 2021's ``get_score_fn``) trained
    under ``sde``; ``time_input`` is what ``score_fn`` receives (continuous ``t`` by default)."""
    if not callable(score_fn):
        raise TypeError(
            f"score_fn must be callable as score_fn(x, t); got {type(score_fn).__name__}"
        )
    return Denoiser(score_fn, sde, Parameterization.SCORE, time_input=time_input)
