r"""What a network predicts, and pure conversions between the four usual forms.

With ``x = alpha x0 + sigma eps`` (the marginal of every SDE in :mod:`scoresde.sde`):

- ``eps``   the noise,                         ``eps = (x - alpha x0) / sigma``
- ``x0``    the clean data (the denoiser ``D``), ``x0 = (x - sigma eps) / alpha``
- ``score`` ``grad log p_t(x) = -eps / sigma``  (Vincent 2011; Song et al. 2021)
- ``v``     ``v = alpha eps - sigma x0``        (Salimans & Ho 2022, Sec. 4)

The functions take ``alpha`` and ``sigma`` already broadcast to ``x`` (see
:func:`scoresde.utils.expand_to`) and assume nothing about ``alpha^2 + sigma^2``.
"""

from __future__ import annotations

from enum import Enum

from torch import Tensor

__all__ = ["Parameterization", "to_x0_eps", "from_x0_eps"]


class Parameterization(str, Enum):
    """The quantity a network outputs."""

    EPS = "eps"
    X0 = "x0"
    SCORE = "score"
    V = "v"

    @classmethod
    def parse(cls, value: Parameterization | str) -> Parameterization:
        """Accept the enum, its value, or a peer's spelling (diffusers' ``prediction_type``)."""
        if isinstance(value, cls):
            return value
        aliases = {
            "eps": cls.EPS, "epsilon": cls.EPS, "noise": cls.EPS,
            "x0": cls.X0, "sample": cls.X0, "x_start": cls.X0, "data": cls.X0,
            "score": cls.SCORE,
            "v": cls.V, "v_prediction": cls.V,
        }  # fmt: skip
        key = value.lower() if isinstance(value, str) else None
        if key not in aliases:
            raise ValueError(
                f"parameterization must be one of {[p.value for p in cls]} (or a diffusers "
                f"prediction_type: 'epsilon', 'sample', 'v_prediction'); got {value!r}"
            )
        return aliases[key]


def to_x0_eps(
    output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, parameterization: Parameterization
) -> tuple[Tensor, Tensor]:
    """Convert a network ``output`` at ``x`` into the pair ``(x0, eps)``.

    For ``v``, ``x = alpha x0 + sigma eps`` and ``v = alpha eps - sigma x0`` form a rotation
    scaled by ``alpha^2 + sigma^2``, inverted as
    ``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)``, ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``.
    """
    p = parameterization
    if p is Parameterization.EPS:
        eps = output
        return (x - sigma * eps) / alpha, eps
    if p is Parameterization.X0:
        x0 = output
        return x0, (x - alpha * x0) / sigma
    if p is Parameterization.SCORE:
        eps = -sigma * output
        return (x - sigma * eps) / alpha, eps
    if p is Parameterization.V:
        norm = alpha**2 + sigma**2
        return (alpha * x - sigma * output) / norm, (sigma * x + alpha * output) / norm
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")


def from_x0_eps(
    x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, parameterization: Parameterization
) -> Tensor:
    """The quantity ``parameterization`` names, from ``(x0, eps)``: the inverse of
    :func:`to_x0_eps`, and the regression target of :func:`scoresde.losses.dsm_loss`."""
    p = parameterization
    if p is Parameterization.EPS:
        return eps
    if p is Parameterization.X0:
        return x0
    if p is Parameterization.SCORE:
        return -eps / sigma
    if p is Parameterization.V:
        return alpha * eps - sigma * x0
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")
