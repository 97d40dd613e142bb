r"""Exact problems: data whose score is closed-form under every SDE, and reference solutions.

A Gaussian mixture :math:`p_0 = \sum_k w_k N(\mu_k, s_k^2 I)` stays a mixture under
``x_t = alpha x0 + sigma z``:

.. math:: p_t = \sum_k w_k N(\alpha \mu_k, (\alpha^2 s_k^2 + \sigma^2) I),

so the score, the posterior mean ``E[x0 | x_t]`` (the ideal denoiser) and ``eps`` are closed-form
at every ``t``. With one component the probability-flow ODE is linear and its flow is closed-form
too: ``z = (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2)`` is constant along trajectories.

``reference_solution`` integrates the PF-ODE of any mixture with
``scipy.integrate.solve_ivp(method="DOP853")`` at ``rtol = atol = 1e-10``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .denoiser import Denoiser
from .parameterization import Parameterization, derivatives_for, from_x0_eps
from .sde import SDE
from .utils import as_time, check_real, expand_to

__all__ = ["GaussianMixture", "Gaussian", "ReferenceSolution", "reference_solution", "ring_mixture"]


class GaussianMixture:
    """Isotropic Gaussian mixture data with closed-form quantities under any :class:`SDE`.

    Args:
        means: ``(K, *event_shape)`` component means.
        stds: ``(K,)`` per-component isotropic standard deviations (or one float), > 0.
        weights: ``(K,)`` mixture weights (normalised here); uniform by default.
    """

    def __init__(self, means, stds=0.5, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim < 2:
            raise ValueError(
                f"means must have shape (K, *event_shape); got shape {tuple(means.shape)}"
            )
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64)
        stds = stds.expand(K).clone() if stds.ndim == 0 else stds
        if stds.shape != (K,) or not bool((stds > 0).all()):
            raise ValueError(
                f"stds must be a positive float or a ({K},) tensor of positives; got {stds}"
            )
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else (
            torch.as_tensor(weights, dtype=torch.float64))  # fmt: skip
        if weights.shape != (K,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be a ({K},) tensor of positives; got {weights}")
        self.means = means
        self.stds = stds
        self.weights = weights / weights.sum()
        self.event_shape = tuple(means.shape[1:])
        self.dim = int(np.prod(self.event_shape))

    def __repr__(self):
        return f"{type(self).__name__}(K={self.means.shape[0]}, event_shape={self.event_shape})"

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` float64 draws from the data distribution ``p_0``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=torch.float64)
        return self.means[k] + expand_to(self.stds[k], z) * z

    def sample_marginal(self, sde: SDE, t: float, n: int, *, generator=None) -> Tensor:
        """``n`` exact draws from ``p_t`` (e.g. the target of a sampler that stops at ``t_min``)."""
        x0 = self.sample(n, generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return sde.perturb(x0, t, noise)

    # ---- closed forms at time t ------------------------------------------------------------
    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        """Per-component log-weights, residuals ``x - alpha mu_k`` and variances, flattened."""
        xf = x.to(torch.float64).flatten(1)  # (B, d)
        alpha = alpha.to(x.device, torch.float64).reshape(-1, 1)  # (B|1, 1)
        sigma = sigma.to(x.device, torch.float64).reshape(-1, 1)
        mu = self.means.to(x.device).flatten(1)  # (K, d)
        var = alpha**2 * self.stds.to(x.device) ** 2 + sigma**2  # (B|1, K)
        resid = xf[:, None, :] - alpha[..., None] * mu  # (B, K, d)
        logw = (
            self.weights.to(x.device).log()
            - 0.5 * self.dim * torch.log(2 * math.pi * var)
            - 0.5 * resid.pow(2).sum(-1) / var
        )  # (B, K)
        return logw, resid, var, alpha

    def log_prob(self, x: Tensor, t, sde: SDE) -> Tensor:
        """``log p_t(x)``, shape ``(batch,)``."""
        t = as_time(t).to(x.device)
        logw, *_ = self._components(x, sde.alpha(t), sde.sigma(t))
        return torch.logsumexp(logw, dim=1)

    def score(self, x: Tensor, t, sde: SDE) -> Tensor:
        """``grad_x log p_t(x)`` in float64, shaped like ``x``."""
        t = as_time(t).to(x.device)
        logw, resid, var, _ = self._components(x, sde.alpha(t), sde.sigma(t))
        r = torch.softmax(logw, dim=1)[..., None]  # posterior responsibilities
        return (-(r * resid / var[..., None]).sum(1)).reshape(x.shape)

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        r"""``E[x0 | alpha x0 + sigma z = x]``:
        ``sum_k r_k (mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x - alpha mu_k))``."""
        logw, resid, var, alpha = self._components(x, alpha, sigma)
        r = torch.softmax(logw, dim=1)[..., None]
        gain = (alpha * self.stds.to(x.device) ** 2 / var)[..., None]  # (B|1, K, 1)
        mu = self.means.to(x.device).flatten(1)
        return (r * (mu + gain * resid)).sum(1).reshape(x.shape)

    def x0(self, x: Tensor, t, sde: SDE) -> Tensor:
        """The ideal denoiser ``E[x0 | x_t = x]`` under ``sde`` at time ``t``."""
        t = as_time(t).to(x.device)
        return self.posterior_mean(x, sde.alpha(t), sde.sigma(t))

    def denoiser(self, sde: SDE, parameterization: Parameterization | str = "x0") -> Denoiser:
        """A ready :class:`Denoiser` whose "network" is this closed form, in the requested
        parameterization, conditioned on continuous ``t``. It returns ``x.dtype``."""
        p = Parameterization.parse(parameterization)
        return Denoiser(_ExactNet(self, sde, p), sde, p, time_input="t")

    # ---- reference probability-flow ODE ----------------------------------------------------
    def pf_ode_rhs(self, x: Tensor, t, sde: SDE) -> Tensor:
        """``dx/dt = f(t) x - g(t)^2 / 2 * score(x, t)`` (Song et al. 2021, eq. 13)."""
        t = as_time(t)
        return expand_to(sde.f(t), x) * x - 0.5 * expand_to(sde.g2(t), x) * self.score(x, t, sde)


class Gaussian(GaussianMixture):
    """One isotropic Gaussian ``N(mean, std^2 I)``: its PF-ODE flow is closed-form."""

    def __init__(self, mean, std: float = 1.0):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        super().__init__(mean[None], check_real("std", std, low=0.0, low_open=True))

    def flow(self, x: Tensor, t, t_next, sde: SDE) -> Tensor:
        """Exact PF-ODE transport of ``x`` from ``t`` to ``t_next``: the standardised residual
        ``(x - alpha mu) / sqrt(alpha^2 s^2 + sigma^2)`` is invariant."""
        mu = self.means[0].to(x.device, torch.float64)
        s2 = float(self.stds[0]) ** 2

        def scale_and_mean(tau):
            a, sg = sde.alpha(tau), sde.sigma(tau)
            return (a**2 * s2 + sg**2).sqrt(), a

        std0, a0 = scale_and_mean(t)
        std1, a1 = scale_and_mean(t_next)
        x = x.to(torch.float64)
        z = (x - expand_to(a0, x) * mu) / expand_to(std0, x)
        return expand_to(a1, x) * mu + expand_to(std1, x) * z


class _ExactNet:
    """The closed-form denoiser posing as a network ``net(x, t)`` (continuous-t conditioning)."""

    def __init__(self, data: GaussianMixture, sde: SDE, parameterization: Parameterization):
        self.data, self.sde, self.parameterization = data, sde, parameterization

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != tuple(self.data.event_shape):
            raise ValueError(
                f"this exact denoiser is for data of shape {tuple(self.data.event_shape)}; got x "
                f"of shape {tuple(x.shape)}, expected (batch, *{tuple(self.data.event_shape)})"
            )
        x0 = self.data.x0(x, t, self.sde)
        x64 = x.to(torch.float64)
        alpha = expand_to(self.sde.alpha(t), x64)
        sigma = expand_to(self.sde.sigma(t), x64)
        eps = (x64 - alpha * x0) / sigma
        p, d = self.parameterization, derivatives_for(self.parameterization, self.sde, t, x64)
        return from_x0_eps(x0, eps, alpha, sigma, p, *d).to(x.dtype)


def ring_mixture(
    k: int = 8, radius: float = 2.0, std: float = 0.3, dim: int = 2
) -> GaussianMixture:
    """``k`` equal components on a circle of ``radius`` in the first two of ``dim`` coordinates."""
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = torch.zeros(k, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
    return GaussianMixture(means, std)


# -------------------------------------------------------------------------------------------


@dataclass
class ReferenceSolution:
    """The reference PF-ODE solution: final states, the scipy result and its RHS evaluations."""

    x: Tensor
    nfe: int
    success: bool
    message: str


def reference_solution(
    data: GaussianMixture,
    sde: SDE,
    x_T: Tensor,
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    method: str = "DOP853",
) -> ReferenceSolution:
    r"""Integrate the PF-ODE of ``data`` under ``sde`` from ``t_start`` (``T``) to ``t_end``
    (``t_min``) with ``scipy.integrate.solve_ivp`` at tight tolerances, in float64.

    The ODE is solved in the exactly equivalent scaled form (Karras et al. 2022, eq. 4; Song,
    Meng & Ermon 2021, eq. 14): with ``y = x / alpha`` and ``lambda_ = log(alpha / sigma)``,

    .. math:: \frac{dy}{d\lambda} = D(y;\, e^{-\lambda}) - y,

    where ``D(y; s) = E[x0 | x0 + s z = y]``. Its right-hand side depends on the schedule only
    through the endpoints, so it is smooth even where the schedule is not (the piecewise-linear
    ``log alpha`` of a discrete DDPM schedule has a kink at every train step, which costs a
    t-parameterised solve ~10^5 evaluations). All samples are one system: the error control is
    over the whole batch.
    """
    t_start = sde.T if t_start is None else float(t_start)
    t_end = sde.t_min if t_end is None else float(t_end)
    shape = x_T.shape
    lam0, lam1 = float(sde.lambda_(t_start)), float(sde.lambda_(t_end))
    one = torch.ones((), dtype=torch.float64)
    x_start = x_T.detach().to("cpu", torch.float64)
    nfe = 0
    if lam0 == -math.inf:
        # alpha(t_start) = 0: y = x / alpha is infinite. In w = e^lambda = alpha/sigma and
        # zeta = x / sigma the ODE is d zeta / dw = E[x0 | w x0 + z = zeta], finite at w = 0
        # (Song, Meng & Ermon 2021, eq. 14 in the variable sigma/alpha inverted); integrate it to
        # w = min(1, e^lambda_end), then continue in lambda.
        w1 = min(1.0, math.exp(lam1))

        def rhs_w(w, z):
            z = torch.from_numpy(z).reshape(shape)
            return data.posterior_mean(z, one * w, one).flatten().numpy()

        z0 = (x_start / sde.sigma(t_start)).flatten().numpy()
        sol = solve_ivp(rhs_w, (0.0, w1), z0, method=method, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference PF-ODE solve failed: {sol.message}")
        nfe += int(sol.nfev)
        zeta = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)
        lam0 = math.log(w1)
        if lam0 >= lam1:
            x = zeta * sde.sigma(t_end)
            return ReferenceSolution(x=x, nfe=nfe, success=True, message=sol.message)
        y0 = (zeta / w1).flatten().numpy()
    else:
        y0 = (x_start / sde.alpha(t_start)).flatten().numpy()

    def rhs(lam, y):
        y = torch.from_numpy(y).reshape(shape)
        return (data.posterior_mean(y, one, one * math.exp(-lam)) - y).flatten().numpy()

    sol = solve_ivp(rhs, (lam0, lam1), y0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference PF-ODE solve failed: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape) * sde.alpha(t_end)
    return ReferenceSolution(x=x, nfe=nfe + int(sol.nfev), success=sol.success, message=sol.message)
