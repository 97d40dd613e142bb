r"""Forward diffusion processes: linear SDEs with scalar coefficients.

Every process here has the form (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 5)

.. math::  dx = f(t)\,x\,dt + g(t)\,dW_t,

whose marginals are Gaussian, :math:`x_t = \alpha_t x_0 + \sigma_t z`. A subclass gives the
primitives ``log_alpha(t)``, ``sigma(t)``, ``f(t)``, ``g2(t)``, ``inverse_lambda(lam)`` and the
prior scale; everything else (``lambda_``, ``drift``, ``marginal``, ``perturb``, priors) is derived
here. The primitives obey :math:`f = d\log\alpha/dt` and
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

from .utils import as_time, check_int, check_real, expand_to, interp

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE"]


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

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` together (a schedule may share work between them)."""
        return self.alpha(t), self.sigma(t)

    def lambda_(self, t: Tensor | float) -> Tensor:
        """Half log-SNR, ``lambda = log(alpha / sigma)`` (DPM-Solver's lambda, Lu et al. 2022)."""
        return self.log_alpha(t) - self.sigma(t).log()

    def log_snr(self, t: Tensor | float) -> Tensor:
        """``log(alpha^2 / sigma^2) = 2 lambda``."""
        return 2.0 * self.lambda_(t)

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


# -------------------------------------------------------------------------------------------
# Continuous VP family (Song et al. 2021, eqs. 11 and 33)


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


# -------------------------------------------------------------------------------------------
# Discrete DDPM schedules (Ho et al. 2020; Nichol & Dhariwal 2021) in continuous time


class DiscreteVPSDE(SDE):
    r"""A DDPM schedule ``betas[0..N-1]`` as a continuous-time VP SDE.

    Train step ``n`` sits at ``t_n = (n + 1) / N`` with
    ``log alpha(t_n) = 1/2 sum_{m<=n} log(1 - beta_m)``, and ``log alpha`` is interpolated
    piecewise-linearly in between (Lu et al. 2022, DPM-Solver, Appendix; their
    ``NoiseScheduleVP('discrete')``). Hence ``T = 1`` and ``t_min = 1/N`` (train step 0), and
    ``f = d log alpha/dt`` is piecewise constant with ``g^2 = -2 f`` (from ``alpha^2 + sigma^2 = 1``).
    ``t_to_index`` / ``index_to_t`` convert with this schedule's own ``N``.
    """

    def __init__(self, betas, *, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() < 2:
            raise ValueError(f"betas must hold at least 2 values; got {betas.numel()}")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            bad = betas[~(torch.isfinite(betas) & (betas > 0) & (betas < 1))][0].item()
            raise ValueError(f"betas must all lie in the open interval (0, 1); found {bad!r}")
        self.betas = betas
        self.name = name
        self.N = betas.numel()
        self.T = 1.0
        self.t_min = 1.0 / self.N
        self._t = torch.arange(1, self.N + 1, dtype=torch.float64) / self.N
        self._log_alpha = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
        self._f = torch.diff(self._log_alpha) * self.N  # slope on [t_n, t_{n+1}]
        self._tables: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        # one copy of the tables per device, so that evaluating on a GPU copies nothing per call
        if device not in self._tables:
            self._tables[device] = (
                self._t.to(device),
                self._log_alpha.to(device),
                self._f.to(device),
            )
        return self._tables[device]

    @classmethod
    def linear(
        cls, n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> DiscreteVPSDE:
        """DDPM's linear betas (Ho et al. 2020, Sec. 4)."""
        n = check_int("n", n, low=2)
        beta_start = check_real(
            "beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        beta_end = check_real("beta_end", beta_end, low=beta_start, high=1.0, high_open=True)
        return cls(torch.linspace(beta_start, beta_end, n, dtype=torch.float64), name="linear")

    @classmethod
    def scaled_linear(
        cls, n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> DiscreteVPSDE:
        """Latent-diffusion's betas, linear in ``sqrt(beta)`` (diffusers' ``scaled_linear``)."""
        n = check_int("n", n, low=2)
        beta_start = check_real(
            "beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        beta_end = check_real("beta_end", beta_end, low=beta_start, high=1.0, high_open=True)
        b = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        return cls(b, name="scaled_linear")

    @classmethod
    def cosine(cls, n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteVPSDE:
        """Cosine schedule ``alpha_bar(t) = cos^2((t/N + s)/(1 + s) pi/2)`` (Nichol & Dhariwal
        2021, eq. 17), betas clipped at ``max_beta``."""
        n = check_int("n", n, low=2)
        s = check_real("s", s, low=0.0)
        max_beta = check_real(
            "max_beta", max_beta, low=0.0, high=1.0, low_open=True, high_open=True
        )
        u = torch.arange(n + 1, dtype=torch.float64) / n
        abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    def _repr_args(self):
        return {"name": self.name, "N": self.N}

    def t_to_index(self, t: Tensor | float) -> Tensor:
        """Continuous ``t`` to the (fractional) train step ``n = t N - 1`` of this schedule."""
        return as_time(t) * self.N - 1.0

    def index_to_t(self, n: Tensor | float) -> Tensor:
        return (as_time(n) + 1.0) / self.N

    @property
    def alphas_cumprod(self) -> Tensor:
        """DDPM's ``alpha_bar_n`` (= ``alpha(t_n)^2``) for each train step."""
        return torch.exp(2.0 * self._log_alpha)

    def log_alpha(self, t):
        t = as_time(t)
        ts, log_alpha, _ = self._on(t.device)
        return interp(t, ts, log_alpha)

    def sigma(self, t):
        return (-torch.expm1(2.0 * self.log_alpha(t))).sqrt()

    def alpha_sigma(self, t):
        log_alpha = self.log_alpha(t)  # one table lookup for both
        return log_alpha.exp(), (-torch.expm1(2.0 * log_alpha)).sqrt()

    def f(self, t):
        t = as_time(t)
        ts, _, f = self._on(t.device)
        k = torch.searchsorted(ts, t.contiguous(), right=True).clamp(1, self.N - 1)
        return f[k - 1]

    def g2(self, t):
        return -2.0 * self.f(t)

    def inverse_lambda(self, lam):
        lam = as_time(lam)
        ts, log_alpha_table, _ = self._on(lam.device)
        log_alpha = -0.5 * torch.nn.functional.softplus(-2.0 * lam)
        # log alpha is decreasing in t: interpolate t over the reversed (increasing) table
        return interp(log_alpha, log_alpha_table.flip(0), ts.flip(0))

    @property
    def prior_std(self) -> float:
        return 1.0
