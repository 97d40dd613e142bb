r"""Rectified flow / flow matching: the straight interpolant ``x_t = (1 - t) x0 + t eps``."""

from __future__ import annotations

import torch

from ..utils import as_time, check_real
from .base import SDE

__all__ = ["RectifiedFlow"]


class RectifiedFlow(SDE):
    r"""The linear interpolant of rectified flow and flow matching: ``alpha(t) = 1 - t``,
    ``sigma(t) = t`` on ``[t_min, 1]`` (Liu et al. 2023, "Flow Straight and Fast"; Lipman et al.
    2023, "Flow Matching for Generative Modeling", conditional OT path with ``sigma_min = 0``;
    the schedule of Stable Diffusion 3 and Flux).

    As a linear SDE (Albergo & Vanden-Eijnden 2023, stochastic interpolants) it has
    ``f = d log alpha/dt = -1/(1 - t)`` and ``g^2 = d sigma^2/dt - 2 f sigma^2 = 2t/(1 - t)``, so
    its reverse SDE and probability-flow ODE have these marginals; the ODE is
    ``dx/dt = alpha' x0 + sigma' eps = eps - x0``, the velocity flow models predict.

    Endpoints: ``T = 1`` exactly, where ``alpha = 0`` (``lambda = -inf``): the prior is pure
    noise ``N(0, I)`` and only ``x0``-, ``v``- or ``flow``-prediction models are defined there
    (samplers start with the model's ``x0``; see ``docs/bring-your-own-model.md``). ``t_min > 0``
    is the cut-off at the data end, where ``sigma = 0``.
    """

    T = 1.0

    def __init__(self, *, t_min: float = 1e-3):
        self.t_min = check_real("t_min", t_min, low=0.0, high=1.0, low_open=True, high_open=True)

    def _repr_args(self):
        return {"t_min": self.t_min}

    def log_alpha(self, t):
        return torch.log1p(-as_time(t))

    def alpha(self, t):
        return 1.0 - as_time(t)

    def sigma(self, t):
        return as_time(t).clone()

    def f(self, t):
        return -1.0 / (1.0 - as_time(t))

    def g2(self, t):
        t = as_time(t)
        return 2.0 * t / (1.0 - t)

    def d_alpha(self, t):
        return torch.full_like(as_time(t), -1.0)

    def d_sigma(self, t):
        return torch.ones_like(as_time(t))

    def inverse_lambda(self, lam):
        # lambda = log((1 - t) / t)  =>  t = sigmoid(-lambda); exact at lambda = -inf (t = 1)
        return torch.sigmoid(-as_time(lam))

    @property
    def prior_std(self) -> float:
        return 1.0
