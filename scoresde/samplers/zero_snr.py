"""The start from ``alpha = 0`` (zero terminal SNR, rectified flow): the limit of a first-order
step from ``lambda = -inf`` (:func:`zero_snr_first_step`), and how the driver runs a sampler
after it (:func:`zero_snr_run_times`, :func:`shifted_callback`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..noise import NoiseSource
from ..sde import SDE
from .base import Sampler, StepInfo

__all__ = ["zero_snr_first_step", "zero_snr_run_times", "shifted_callback"]


def zero_snr_first_step(
    sampler: Sampler, denoiser: Denoiser, sde: SDE, ts: Tensor, x: Tensor, noise: NoiseSource
) -> Tensor:
    r"""The first step from ``t_0`` with ``alpha(t_0) = 0`` (``lambda_0 = -inf``) to ``t_1``.

    There ``x`` is pure noise and the model's ``x0`` is its only information about the data.
    Every exponential integrator's step from ``lambda_s = -inf`` tends to the same limit: with
    ``h = inf`` the eps-form ``(alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps`` and the data-form
    ``(sigma_t/sigma_s) x_s - alpha_t (e^{-h} - 1) x0`` both become DDIM's
    ``x_1 = alpha_1 x0 + sigma_1 eps`` (``eps = x_0 / sigma_0``), and their multistep history
    points at ``lambda = -inf`` get zero weight (``h_prev / h = inf``). For a stochastic sampler
    the limit of the ancestral (DDPM posterior) step is ``x_1 = alpha_1 x0 + sigma_1 z`` with
    fresh noise ``z``: the posterior forgets ``x_0`` except through ``x0`` (Lin et al. 2024,
    Sec. 3.3, sample from the last timestep). One network call.
    """
    t0, t1 = ts[0].to(x.device), ts[1].to(x.device)
    pred = denoiser.predict(x, t0)
    alpha1 = sde.alpha(t1).to(x.dtype)
    sigma1 = sde.sigma(t1).to(x.dtype)
    if sampler.stochastic:
        ts_f = ts.tolist()
        return alpha1 * pred.x0 + sigma1 * noise(ts_f[0], ts_f[1], x)
    return alpha1 * pred.x0 + sigma1 * pred.eps


# alpha/sigma at which an adaptive sampler's zero-SNR limit step ends: that step's error is
# O((alpha/sigma)^2) = 1e-6 relative, below what the samplers' tolerances control
_ADAPTIVE_ZERO_SNR_END = 1e-3


def zero_snr_run_times(sampler: Sampler, sde: SDE, ts: Tensor) -> Tensor:
    """The times a run from ``alpha(ts[0]) = 0`` takes: ``ts``, whose first interval is the
    ``lambda -> -inf`` limit step; for an adaptive sampler, which controls its error only from
    where it starts (and by default has one output interval, ``T -> t_min``), ``ts`` with a time
    inserted where ``alpha/sigma = 1e-3``, so that the limit step is short and the sampler
    takes the rest of the first interval with its own steps."""
    lam = math.log(_ADAPTIVE_ZERO_SNR_END)
    if sampler.nfe(1) is not None or float(sde.lambda_(ts[1])) <= lam:
        return ts
    t_a = torch.as_tensor(sde.inverse_lambda(lam), dtype=ts.dtype).reshape(1)
    return torch.cat([ts[:1], t_a, ts[1:]])


def shifted_callback(callback, inner: int, t0: float):
    """The callback of a run after the zero-terminal-SNR limit step: that run's steps are the
    driver's steps from 1 on, or (``inner``: an adaptive sampler's run from a time inserted in
    the first interval) the driver's steps, the first reported from ``t0``."""

    def shifted(info: StepInfo):
        i, t = info.i + 1 - inner, t0 if inner and info.i == 0 else info.t
        return callback(StepInfo(i, t, info.t_next, info.x, info.x0))

    return shifted
