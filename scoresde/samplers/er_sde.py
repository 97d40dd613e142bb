r"""ER-SDE-Solver: solvers of the extended reverse-time SDEs (Cui et al. 2023).

Cui et al. ("Elucidating the solution space of extended reverse-time SDEs for diffusion
models", arXiv:2309.06169) write the family of reverse-time SDEs that share the marginals of a
diffusion in VE-equivalent coordinates ``y = x / alpha``, ``rho = sigma / alpha`` (their
``sigma``; k-diffusion's and EDM's noise level), and parameterise it by a *noise scale function*
``phi(rho)``. With the data prediction ``x0(y, rho)`` the exact solution from ``rho_s`` to
``rho_t < rho_s`` is (their Sec. 3-4, in the VE form)

.. math:: y_t = \frac{\phi(\rho_t)}{\phi(\rho_s)} y_s
          + \phi(\rho_t) \int_{\rho_t}^{\rho_s} \frac{\phi'(\rho)}{\phi(\rho)^2}\, x_0(\rho)\,d\rho
          + \sqrt{\rho_t^2 - \rho_s^2 \phi(\rho_t)^2 / \phi(\rho_s)^2}\; z.

``phi(rho) = rho`` is the probability-flow ODE (the noise vanishes: DDIM), ``phi(rho) = rho^2``
Song et al.'s reverse SDE; the noise is real only if ``phi(rho) / rho`` does not increase as
``rho`` falls. ER-SDE-Solver-k expands ``x0`` in a Taylor series in ``rho`` about ``rho_s``,
integrates by parts, and estimates the derivatives by backward divided differences of past
evaluations (their Algorithms 1-3, "Taylor method").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..utils import check_int, check_real
from .base import GridSchedule, Sampler

__all__ = ["ERSDE", "default_noise_scaler"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
# the ratio of noise levels a scale function is probed on at construction (data scale ~1)
_PROBE = torch.logspace(-4, 3, 64, dtype=torch.float64)


def default_noise_scaler(rho: torch.Tensor) -> torch.Tensor:
    """The paper's recommended noise scale function ``phi(rho) = rho (e^{rho^0.3} + 10)``
    (Cui et al. 2023, App. A.8, "SDE_5"; ComfyUI's ``sample_er_sde`` default)."""
    return rho * (torch.exp(rho**0.3) + 10.0)


def _log_rho_rule(rho_hi: float, rho_lo: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``rho`` and weights for ``int_{rho_lo}^{rho_hi} f(rho) d rho``: composite
    Gauss–Legendre in ``u = log rho`` (``d rho = rho du``), pieces at most 0.25 long. For the
    smooth scale functions of the paper the integrand is analytic in ``u`` on each piece, and 16
    nodes integrate it to float64 rounding."""
    a, b = math.log(rho_lo), math.log(rho_hi)
    m = max(1, math.ceil((b - a) / 0.25))
    edges = np.linspace(a, b, m + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    u = (0.5 * (hi - lo) * _GL_X + 0.5 * (hi + lo)).ravel()
    w = (0.5 * (hi - lo) * _GL_W).ravel()
    rho = np.exp(u)
    return torch.from_numpy(rho), torch.from_numpy(w * rho)


class ERSDE(Sampler):
    r"""ER-SDE-Solver-k (k = ``solver_order``, 1-3) with a noise scale function ``phi``.

    In ``y = x / alpha``, ``rho = sigma / alpha``, with ``r = phi(rho_{i+1}) / phi(rho_i)``,
    ``D_i = x0(x_i, t_i)``, ``dD_i = (D_i - D_{i-1}) / (rho_i - rho_{i-1})`` and
    ``ddD_i = 2 (dD_i - dD_{i-1}) / (rho_i - rho_{i-2})``::

        y_{i+1} = r y_i + (1 - r) D_i
                  + [(rho_{i+1} - rho_i) + phi(rho_{i+1}) I_1] dD_i                 (k >= 2)
                  + [(rho_{i+1} - rho_i)^2 / 2 + phi(rho_{i+1}) I_2] ddD_i          (k = 3)
                  + s_noise sqrt(rho_{i+1}^2 - rho_i^2 r^2) z_i,

    ``I_1 = int_{rho_{i+1}}^{rho_i} d rho / phi``, ``I_2 = int_{rho_{i+1}}^{rho_i} (rho - rho_i)
    / phi d rho`` (Cui et al. 2023, Algorithms 1-3, VE form; ``x_{i+1} = alpha_{i+1} y_{i+1}``
    makes it work for every SDE). Step ``i`` uses ``min(solver_order, i + 1)`` terms (warm-up).
    The integrals are computed once per grid in ``init`` by Gauss–Legendre quadrature exact to
    float64 rounding; the reference code and ComfyUI approximate them by 100- and 200-point
    Riemann sums, which differ from the integrals by ``O(1/100)`` relative.

    **Strong order** 1: the noise is additive and the linear part exact, so the scheme is an
    exponential Euler–Maruyama method whose drift error along a Brownian path is ``O(h^{3/2})``
    per step, whatever the Taylor terms (which only sharpen the drift).
    **Weak order** 1 for ``solver_order = 1``, 2 for 2 and 3 (measured on Gaussian data): the
    divided difference ``dD_i`` is a backward difference, an ``O(h)``-accurate estimate of the
    derivative at ``rho_i``, and the third-order term does not correct it, so ER-SDE-Solver-3
    has the order of ER-SDE-Solver-2 with a smaller error constant (the same holds for the ODE
    limit ``phi(rho) = rho``: orders 1, 2, 2).
    **NFE per step** 1. **Stochastic** yes.
    **Reference** Cui, Zhang, Lu, Tang & Wang 2023, "Elucidating the solution space of extended
    reverse-time SDEs for diffusion models", arXiv:2309.06169, Algorithms 1-3 and App. A.8.

    Args:
        solver_order: number of Taylor terms, 1-3 (default 3, the paper's recommendation and
            ComfyUI's ``max_stage``). The keyword is not ``order``, which names every sampler's
            declared (strong) convergence order.
        noise_scaler: the noise scale function ``phi``, a callable from a float64 tensor of
            noise levels ``rho`` to a tensor of the same shape (default
            :func:`default_noise_scaler`). It must be finite and positive, and ``phi(rho)/rho``
            must not decrease as ``rho`` falls (else the step's noise variance is negative);
            checked at construction on ``rho`` in ``[1e-4, 1e3]`` and again on each grid.
        s_noise: scale of the injected noise (>= 0; 1 is the method, k-diffusion's keyword).
    """

    name = "er_sde"
    order = 1
    weak_order = 2
    stochastic = True
    nfe_per_step = 1
    reference = "cui2023ersde"

    def __init__(
        self,
        *,
        solver_order: int = 3,
        noise_scaler: Callable[[torch.Tensor], torch.Tensor] | None = None,
        s_noise: float = 1.0,
    ):
        solver_order = check_int("solver_order", solver_order, low=1)
        if solver_order > 3:
            raise ValueError(
                f"solver_order must be an int in [1, 3] for sampler 'er_sde'; got {solver_order!r}"
            )
        self.solver_order = solver_order
        self.weak_order = 1 if solver_order == 1 else 2
        if noise_scaler is not None and not callable(noise_scaler):
            raise TypeError(
                f"noise_scaler must be a callable phi(rho) -> tensor; got {type(noise_scaler)}"
            )
        # None stands for the paper's default, so the sampler's config stays plain JSON
        self.noise_scaler = noise_scaler
        self._check_scaler(_PROBE)
        self.s_noise = check_real("s_noise", s_noise, low=0.0)

    def options(self):
        return {"solver_order": self.solver_order, "noise_scaler": self.noise_scaler,
                "s_noise": self.s_noise}  # fmt: skip

    def _phi(self, rho: torch.Tensor) -> torch.Tensor:
        try:
            out = (default_noise_scaler if self.noise_scaler is None else self.noise_scaler)(rho)
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. math.sqrt on a tensor
            raise ValueError(
                "noise_scaler must take a float64 tensor of noise levels rho and return phi(rho) "
                f"elementwise (torch operations); on a tensor of shape {tuple(rho.shape)} it "
                f"raised {type(err).__name__}: {err}"
            ) from err
        if not isinstance(out, torch.Tensor) or out.shape != rho.shape:
            raise ValueError(
                "noise_scaler must map a tensor of noise levels to a tensor of the same shape; "
                f"got {type(out).__name__} of shape {getattr(out, 'shape', None)} for "
                f"{tuple(rho.shape)}"
            )
        out = out.to(torch.float64)
        bad = ~(torch.isfinite(out) & (out > 0))
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"noise_scaler must return finite positive values; got phi({float(rho[k]):.6g}) "
                f"= {float(out[k])!r}"
            )
        return out

    def _check_scaler(self, rho: torch.Tensor) -> torch.Tensor:
        """``phi`` on decreasing levels ``rho``; raises if it is not positive and finite or if
        ``phi(rho)/rho`` decreases from one level to the next (negative noise variance)."""
        phi = self._phi(rho)
        ratio = phi / rho
        # phi(rho_next)/phi(rho) <= rho_next/rho up to rounding, for rho_next < rho
        hi, lo = (ratio[:-1], ratio[1:]) if rho[0] > rho[-1] else (ratio[1:], ratio[:-1])
        bad = lo > hi * (1.0 + 1e-12)
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                "noise_scaler phi must have phi(rho)/rho non-increasing as rho falls (else the "
                f"noise variance rho_t^2 - rho_s^2 phi_t^2/phi_s^2 is negative); between "
                f"rho = {float(rho[k]):.6g} and {float(rho[k + 1]):.6g} it goes from "
                f"{float(ratio[k]):.6g} to {float(ratio[k + 1]):.6g}"
            )
        return phi

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        rho = torch.exp(-s.lambda_)
        phi = self._check_scaler(rho)
        n = len(ts) - 1
        r = phi[1:] / phi[:-1]
        drho = rho[1:] - rho[:-1]  # < 0
        I1 = torch.zeros(n, dtype=torch.float64)
        I2 = torch.zeros(n, dtype=torch.float64)
        for i in range(n):
            nodes, w = _log_rho_rule(float(rho[i]), float(rho[i + 1]))
            inv_phi = 1.0 / self._phi(nodes)
            I1[i] = (w * inv_phi).sum()
            I2[i] = (w * (nodes - rho[i]) * inv_phi).sum()
        a = s.alpha[1:]
        c_x = a / s.alpha[:-1] * r
        c_x0 = a * (1.0 - r)
        c_d1 = a * (drho + phi[1:] * I1)
        c_d2 = a * (0.5 * drho**2 + phi[1:] * I2)
        var = rho[1:] ** 2 - (rho[:-1] * r) ** 2
        c_z = a * self.s_noise * var.clamp(min=0.0).sqrt()
        inv_d1 = torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 / (rho[1:-1] - rho[:-2])])
        inv_d2 = torch.zeros(n, dtype=torch.float64)
        inv_d2[2:] = 2.0 / (rho[2:-1] - rho[:-3])
        cast = GridSchedule.cast
        coefs = {k: cast(v, x) for k, v in dict(c_x=c_x, c_x0=c_x0, c_d1=c_d1, c_d2=c_d2,
                                                c_z=c_z, inv_d1=inv_d1, inv_d2=inv_d2).items()}  # fmt: skip
        return {"t": GridSchedule.times(s.t, x), **coefs, "x0": None, "d1": None}

    def step(self, denoiser, sde, ts, i, x, state, noise):
        x0 = denoiser.predict(x, state["t"][i]).x0
        stage = min(self.solver_order, i + 1)
        out = state["c_x"][i] * x + state["c_x0"][i] * x0
        d1 = None
        if stage >= 2:
            d1 = (x0 - state["x0"]) * state["inv_d1"][i]
            out = out + state["c_d1"][i] * d1
        if stage >= 3:
            out = out + state["c_d2"][i] * ((d1 - state["d1"]) * state["inv_d2"][i])
        out = out + state["c_z"][i] * noise(ts[i], ts[i + 1], x)
        state["x0"], state["d1"] = x0, d1
        return out, state
