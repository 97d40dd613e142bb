r"""Forward diffusion processes: linear SDEs with scalar coefficients.

Every process here has the form (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 5)

.. math::  dx = f(t)\,x\,dt + g(t)\,dW_t,

whose marginals are Gaussian, :math:`x_t = \alpha_t x_0 + \sigma_t z`. A subclass gives the
primitives ``log_alpha(t)``, ``sigma(t)``, ``f(t)``, ``g2(t)``, ``inverse_lambda(lam)`` and the
prior scale; everything else (``lambda_``, ``drift``, ``marginal``, ``perturb``, priors) is derived
here, including the time derivatives ``d_alpha``, ``d_sigma`` that the ``flow`` (velocity)
parameterization needs. The primitives obey :math:`f = d\log\alpha/dt` and
:math:`g^2 = d\sigma^2/dt - 2 f \sigma^2`, so the probability-flow ODE built from them transports
exactly these marginals (tested in ``tests/invariants/test_sde.py``).

All schedule arithmetic is in float64; ``t`` may be a Python float, a 0-d tensor or a ``(batch,)``
tensor.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..utils import check_real, expand_to

__all__ = ["SDE"]


class SDE(ABC):
    """Base class of linear forward SDEs ``dx = f(t) x dt + g(t) dW`` on ``[t_min, T]``."""

    T: float = 1.0
    t_min: float

    # ---- primitives (float64 in, float64 out) ----------------------------------------------
    @abstractmethod
    def log_alpha(self, t: Tensor | float) -> Tensor:
        """``log alpha(t)``: the log of the mean scale of the marginal."""

    @abstractmethod
    def sigma(self, t: Tensor | float) -> Tensor:
        """``sigma(t)``: the standard deviation of the marginal's noise."""

    @abstractmethod
    def f(self, t: Tensor | float) -> Tensor:
        """Drift coefficient ``f(t) = d log alpha / dt``."""

    @abstractmethod
    def g2(self, t: Tensor | float) -> Tensor:
        """Squared diffusion coefficient ``g(t)^2 = d sigma^2/dt - 2 f sigma^2``."""

    @abstractmethod
    def inverse_lambda(self, lam: Tensor | float) -> Tensor:
        """The time ``t`` at which ``lambda_(t) = lam``."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at ``T``."""

    # ---- derived ---------------------------------------------------------------------------
    def alpha(self, t: Tensor | float) -> Tensor:
        return self.log_alpha(t).exp()

    def lambda_(self, t: Tensor | float) -> Tensor:
        """Half log-SNR, ``lambda = log(alpha / sigma)`` (DPM-Solver's lambda, Lu et al. 2022)."""
        return self.log_alpha(t) - self.sigma(t).log()

    def log_snr(self, t: Tensor | float) -> Tensor:
        """``log(alpha^2 / sigma^2) = 2 lambda``."""
        return 2.0 * self.lambda_(t)

    def d_alpha(self, t: Tensor | float) -> Tensor:
        """``alpha'(t) = f(t) alpha(t)``; processes with ``alpha = 0`` somewhere override it."""
        return self.f(t) * self.alpha(t)

    def d_sigma(self, t: Tensor | float) -> Tensor:
        """``sigma'(t) = (g^2 + 2 f sigma^2) / (2 sigma)``, from ``g^2 = d sigma^2/dt - 2 f sigma^2``."""
        sigma = self.sigma(t)
        return (self.g2(t) + 2.0 * self.f(t) * sigma**2) / (2.0 * sigma)

    def velocity(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """``dx_t/dt = alpha' x0 + sigma' eps``: the probability-flow ODE's right-hand side written
        with the model's ``(x0, eps)``, finite where ``alpha = 0`` (``f x`` is not)."""
        return expand_to(self.d_alpha(t), x0) * x0 + expand_to(self.d_sigma(t), eps) * eps

    @property
    def zero_terminal_snr(self) -> bool:
        """Whether ``alpha(T) = 0``: the prior is pure noise at ``lambda = -inf`` (Lin et al. 2024).
        Only ``x0``-, ``v``- and ``flow``-prediction models are defined there."""
        return float(self.alpha(self.T)) == 0.0

    def diffusion(self, t: Tensor | float) -> Tensor:
        return self.g2(t).sqrt()

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return expand_to(self.f(t), x) * x

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_t | x_0``: ``(alpha x0, sigma)``."""
        return expand_to(self.alpha(t), x0) * x0, expand_to(self.sigma(t), x0)

    def perturb(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """``x_t = alpha(t) x0 + sigma(t) noise``."""
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}"
            )
        mean, std = self.marginal(x0, t)
        return mean + std * noise

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``x_T ~ N(0, prior_std^2 I)``."""
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior, summed over all but the batch dimension."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def _repr_args(self) -> dict:
        return {}


def _check_t_range(t_min: float, T: float) -> tuple[float, float]:
    T = check_real("T", T, low=0.0, low_open=True)
    t_min = check_real("t_min", t_min, low=0.0, high=T, low_open=True, high_open=True)
    return t_min, T
