"""Continuous-time VP, sub-VP and VE processes (Song et al. 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import as_time, check_real
from .base import SDE, _check_t_range

__all__ = ["VPSDE", "SubVPSDE", "VESDE"]

# -------------------------------------------------------------------------------------------
# Continuous VP family (Song et al. 2021, eqs. 11 and 33)


# log alpha(T) >= -700 keeps alpha, alpha^2 and their ratios finite in float64 (exp(-745) = 0)
_MAX_DECAY = 350.0


class VPSDE(SDE):
    r"""Variance-preserving SDE, ``beta(t) = beta_min + t (beta_max - beta_min)``.

    ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``;
    ``log alpha(t) = -t^2 (beta_max - beta_min)/4 - t beta_min/2``, ``sigma = sqrt(1 - alpha^2)``.
    (Song et al. 2021, eq. 11; DDPM's continuous limit.)
    """

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, *, T: float = 1.0, t_min: float = 1e-3
    ):
        self.beta_min = check_real("beta_min", beta_min, low=0.0, low_open=True)
        self.beta_max = check_real("beta_max", beta_max, low=self.beta_min)
        self.t_min, self.T = _check_t_range(t_min, T)
        decay = self.T**2 * (self.beta_max - self.beta_min) / 4 + self.T * self.beta_min / 2
        if decay > _MAX_DECAY:
            # alpha(T) = exp(-decay) would underflow: lambda(T) = -inf, every sampler degenerate
            raise ValueError(
                f"beta_max={beta_max!r} (with beta_min={beta_min!r}, T={self.T!r}) makes "
                f"alpha(T) = exp(-{decay:.4g}), whose square underflows in float64; expected "
                f"T^2 (beta_max - beta_min)/4 + T beta_min/2 <= {_MAX_DECAY}"
            )

    def _repr_args(self):
        return {
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "T": self.T,
            "t_min": self.t_min,
        }

    def beta(self, t):
        return self.beta_min + as_time(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        t = as_time(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sigma(self, t):
        # -expm1: 1 - alpha^2 loses all digits in float arithmetic as t -> 0
        return (-torch.expm1(2.0 * self.log_alpha(t))).sqrt()

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def _t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Root of (b1-b0)/4 t^2 + b0/2 t - u = 0 (u = -log alpha), rationalised so that
        # beta_max == beta_min needs no special case.
        u = -log_alpha
        b0, d = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * u / (0.5 * b0 + torch.sqrt(0.25 * b0**2 + d * u))

    def inverse_lambda(self, lam):
        lam = as_time(lam)
        # alpha^2 = sigmoid(2 lam) for VP
        return self._t_from_log_alpha(-0.5 * torch.nn.functional.softplus(-2.0 * lam))

    @property
    def prior_std(self) -> float:
        return 1.0


class SubVPSDE(VPSDE):
    r"""Sub-VP SDE (Song et al. 2021, eq. 33): same drift and ``alpha`` as VP,
    ``sigma(t) = 1 - alpha(t)^2`` and ``g^2(t) = beta(t) (1 - alpha(t)^4)``.

    Its marginal variance is below VP's at every t; ``alpha^2 + sigma^2 != 1``.
    """

    def sigma(self, t):
        return -torch.expm1(2.0 * self.log_alpha(t))

    def g2(self, t):
        return self.beta(t) * (-torch.expm1(4.0 * self.log_alpha(t)))

    def inverse_lambda(self, lam):
        lam = as_time(lam)
        # e^lam (1 - a^2) = a  =>  a = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam}))
        e = lam.exp()
        a = 2.0 * e / (1.0 + torch.sqrt(1.0 + 4.0 * e**2))
        return self._t_from_log_alpha(a.log())


# -------------------------------------------------------------------------------------------
# Variance exploding (Song et al. 2021, eq. 9; NCSN's geometric sigmas)


class VESDE(SDE):
    r"""Variance-exploding SDE, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``alpha = 1``.

    ``dx = sqrt(d sigma^2/dt) dW`` with ``g^2 = 2 sigma^2 log(sigma_max / sigma_min)``
    (Song et al. 2021, eq. 9). The prior is ``N(0, sigma_max^2 I)``.
    """

    def __init__(
        self,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        *,
        T: float = 1.0,
        t_min: float = 1e-5,
    ):
        self.sigma_min = check_real("sigma_min", sigma_min, low=0.0, low_open=True)
        self.sigma_max = check_real("sigma_max", sigma_max, low=self.sigma_min, low_open=True)
        self.t_min, self.T = _check_t_range(t_min, T)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _repr_args(self):
        return {
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "T": self.T,
            "t_min": self.t_min,
        }

    def log_alpha(self, t):
        return 0.0 * as_time(t)  # keeps t's graph, so autograd sees d log alpha/dt = 0

    def sigma(self, t):
        return self.sigma_min * torch.exp(as_time(t) * self._log_ratio)

    def f(self, t):
        return torch.zeros_like(as_time(t))

    def g2(self, t):
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    def inverse_lambda(self, lam):
        return (-as_time(lam) - math.log(self.sigma_min)) / self._log_ratio

    @property
    def prior_std(self) -> float:
        return float(self.sigma(self.T))
