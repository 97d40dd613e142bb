r"""What a network predicts, and pure conversions between the five usual forms.

With ``x = alpha x0 + sigma eps`` (the marginal of every SDE in :mod:`scoresde.sde`):

- ``eps``   the noise,                         ``eps = (x - alpha x0) / sigma``
- ``x0``    the clean data (the denoiser ``D``), ``x0 = (x - sigma eps) / alpha``
- ``score`` ``grad log p_t(x) = -eps / sigma``  (Vincent 2011; Song et al. 2021)
- ``v``     ``v = alpha eps - sigma x0``        (Salimans & Ho 2022, Sec. 4)
- ``flow``  the velocity ``u = dx_t/dt = alpha' x0 + sigma' eps`` (flow matching, Lipman et al.
  2023; rectified flow, Liu et al. 2023; diffusers' ``"flow_prediction"``): ``u = eps - x0``
  under :class:`~scoresde.sde.RectifiedFlow`

The functions take ``alpha``, ``sigma`` (and for ``flow`` the time derivatives ``d_alpha``,
``d_sigma``) already broadcast to ``x`` (see :func:`scoresde.utils.expand_to`) and assume nothing
about ``alpha^2 + sigma^2``. Where ``alpha = 0`` (the start of a zero-terminal-SNR schedule) the
``x0``, ``v`` and ``flow`` forms stay finite; ``eps`` and ``score`` cannot give ``x0`` there.
"""

from __future__ import annotations

from enum import Enum

from torch import Tensor

from .utils import expand_to

__all__ = ["Parameterization", "to_x0_eps", "to_x0", "to_eps", "from_x0_eps", "derivatives_for"]


class Parameterization(str, Enum):
    """The quantity a network outputs."""

    EPS = "eps"
    X0 = "x0"
    SCORE = "score"
    V = "v"
    FLOW = "flow"

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
            "flow": cls.FLOW, "flow_prediction": cls.FLOW, "velocity": cls.FLOW,
        }  # fmt: skip
        key = value.lower() if isinstance(value, str) else None
        if key not in aliases:
            raise ValueError(
                f"parameterization must be one of {[p.value for p in cls]} (or a diffusers "
                f"prediction_type: 'epsilon', 'sample', 'v_prediction', 'flow_prediction'); "
                f"got {value!r}"
            )
        return aliases[key]


def derivatives_for(parameterization: Parameterization, sde, t: Tensor, like: Tensor) -> tuple:
    """``(d_alpha, d_sigma)`` of ``sde`` at ``t`` broadcast to ``like`` when ``parameterization``
    needs them (``flow``), else ``(None, None)``: the extra arguments of the conversions."""
    if parameterization is not Parameterization.FLOW:
        return None, None
    return expand_to(sde.d_alpha(t), like), expand_to(sde.d_sigma(t), like)


def _need_derivatives(d_alpha, d_sigma) -> None:
    if d_alpha is None or d_sigma is None:
        raise ValueError(
            "the flow parameterization needs d_alpha and d_sigma (the schedule's alpha'(t) and "
            "sigma'(t), e.g. sde.d_alpha(t)); got None"
        )


def to_x0(
    output: Tensor,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    parameterization: Parameterization,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
) -> Tensor:
    """The ``x0`` of a network ``output`` at ``x`` (the first half of :func:`to_x0_eps`)."""
    p = parameterization
    if p is Parameterization.X0:
        return output
    if p is Parameterization.EPS or p is Parameterization.SCORE:
        return (x - sigma * to_eps(output, x, alpha, sigma, p)) / alpha
    if p is Parameterization.V:
        return (alpha * x - sigma * output) / (alpha**2 + sigma**2)
    if p is Parameterization.FLOW:
        _need_derivatives(d_alpha, d_sigma)
        return (d_sigma * x - sigma * output) / (alpha * d_sigma - sigma * d_alpha)
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")


def to_eps(
    output: Tensor,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    parameterization: Parameterization,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
) -> Tensor:
    """The ``eps`` of a network ``output`` at ``x`` (the second half of :func:`to_x0_eps`)."""
    p = parameterization
    if p is Parameterization.EPS:
        return output
    if p is Parameterization.X0:
        return (x - alpha * output) / sigma
    if p is Parameterization.SCORE:
        return -sigma * output
    if p is Parameterization.V:
        return (sigma * x + alpha * output) / (alpha**2 + sigma**2)
    if p is Parameterization.FLOW:
        _need_derivatives(d_alpha, d_sigma)
        return (alpha * output - d_alpha * x) / (alpha * d_sigma - sigma * d_alpha)
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")


def to_x0_eps(
    output: Tensor,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    parameterization: Parameterization,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Convert a network ``output`` at ``x`` into the pair ``(x0, eps)``.

    For ``v``, ``x = alpha x0 + sigma eps`` and ``v = alpha eps - sigma x0`` form a rotation
    scaled by ``alpha^2 + sigma^2``, inverted as
    ``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)``, ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``.

    For ``flow``, ``x = alpha x0 + sigma eps`` and ``u = alpha' x0 + sigma' eps`` are inverted with
    the determinant ``det = alpha sigma' - sigma alpha' = -alpha sigma lambda'`` (> 0 for every
    schedule whose log-SNR decreases, and 1 for rectified flow):
    ``x0 = (sigma' x - sigma u) / det``, ``eps = (alpha u - alpha' x) / det``.
    """
    args = (output, x, alpha, sigma, parameterization, d_alpha, d_sigma)
    return to_x0(*args), to_eps(*args)


def from_x0_eps(
    x0: Tensor,
    eps: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    parameterization: Parameterization,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
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
    if p is Parameterization.FLOW:
        _need_derivatives(d_alpha, d_sigma)
        return d_alpha * x0 + d_sigma * eps
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")
