"""A k-diffusion denoiser ``D(x, sigma)`` as a ``(VESDE, Denoiser)`` pair.

k-diffusion's models (``VDenoiser``, ``CompVisDenoiser``, EDM-style ``Denoiser`` wrappers) take the
VE noise level ``sigma`` and return the denoised ``x0``. That is a variance-exploding process with
``alpha = 1``, so the adapter builds a :class:`~scoresde.sde.VESDE` whose ``sigma(t_min)`` and
``sigma(T)`` are exactly the model's ``sigma_min`` and ``sigma_max``, conditions the network on
``sigma`` (:class:`~scoresde.denoiser.SigmaInput`) and reads its output as ``x0``.
"""

from __future__ import annotations

import math

import torch

from ..denoiser import Denoiser, SigmaInput
from ..parameterization import Parameterization
from ..sde import VESDE
from ..utils import check_real

__all__ = ["from_k_diffusion"]

_T_MIN = 1e-5


def from_k_diffusion(
    denoiser,
    *,
    sigmas=None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    model_kwargs: dict | None = None,
    guidance=None,
) -> tuple[VESDE, Denoiser]:
    """Wrap a sigma-conditioned denoiser ``denoiser(x, sigma, **kwargs) -> x0``.

    The noise range comes from ``sigmas`` (its smallest positive and largest value, e.g. a
    k-diffusion ``get_sigmas_karras`` schedule or a discrete model's ``sigmas``), else from
    ``sigma_min``/``sigma_max``, else from the denoiser's own ``sigma_min``/``sigma_max``
    attributes (k-diffusion's discrete wrappers have them).
    """
    if not callable(denoiser):
        raise TypeError(
            f"denoiser must be callable as denoiser(x, sigma); got {type(denoiser).__name__}"
        )
    if sigmas is not None:
        try:
            s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"sigmas must be a sequence of noise levels (numbers >= 0); got {sigmas!r:.80}"
            ) from None
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            bad = s[~torch.isfinite(s) | (s < 0)]
            raise ValueError(
                f"sigmas must be finite noise levels >= 0; got {bad.numel()} other values "
                f"({bad[:3].tolist()}) in {sigmas!r:.80}"
            )
        s = s[s > 0]
        if s.numel() < 2:
            raise ValueError(f"sigmas must hold at least two positive values; got {sigmas!r}")
        sigma_min, sigma_max = float(s.min()), float(s.max())
    if sigma_min is None:
        sigma_min = getattr(denoiser, "sigma_min", None)
    if sigma_max is None:
        sigma_max = getattr(denoiser, "sigma_max", None)
    if sigma_min is None or sigma_max is None:
        raise ValueError(
            "give sigmas=, or sigma_min= and sigma_max=, for a denoiser without sigma_min/sigma_max "
            "attributes"
        )
    sigma_min = check_real("sigma_min", float(sigma_min), low=0.0, low_open=True)
    sigma_max = check_real("sigma_max", float(sigma_max), low=sigma_min, low_open=True)
    # sigma(t) = a b^t with sigma(t_min) = sigma_min and sigma(1) = sigma_max exactly
    log_b = (math.log(sigma_max) - math.log(sigma_min)) / (1.0 - _T_MIN)
    sde = VESDE(sigma_min=math.exp(math.log(sigma_max) - log_b), sigma_max=sigma_max, t_min=_T_MIN)
    den = Denoiser(denoiser, sde, Parameterization.X0, time_input=SigmaInput(),
                   model_kwargs=model_kwargs, guidance=guidance)  # fmt: skip
    return sde, den
