"""Discrete DDPM schedules in continuous time, including zero terminal SNR."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..utils import as_time, check_int, check_real, interp
from .base import SDE

__all__ = ["DiscreteVPSDE", "rescale_zero_terminal_snr"]

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

    ``rescale_betas_zero_snr=True`` rescales the betas to zero terminal SNR first
    (:func:`rescale_zero_terminal_snr`; a last beta of exactly 1 does the same): then
    ``alpha(T) = 0``, ``alpha`` is linear on the last interval ``[t_{N-2}, 1]`` (so ``alpha'``
    stays finite) and only ``x0``-, ``v``- or ``flow``-prediction models are defined at ``T``.
    """

    def __init__(self, betas, *, name: str = "custom", rescale_betas_zero_snr: bool = False):
        try:
            betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"betas must be a 1-D sequence of floats in (0, 1); got {betas!r}"
            ) from err
        if betas.ndim != 1:
            raise ValueError(f"betas must be 1-D (one beta per train step); got shape "
                             f"{tuple(betas.shape)}")  # fmt: skip
        if betas.numel() < 2:
            raise ValueError(f"betas must hold at least 2 values; got {betas.numel()}")
        if not isinstance(rescale_betas_zero_snr, bool):
            raise ValueError(
                f"rescale_betas_zero_snr must be a bool; got {rescale_betas_zero_snr!r}"
            )
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        # a last beta of exactly 1 is a zero-terminal-SNR schedule (alpha(T) = 0)
        ok = torch.isfinite(betas) & (betas > 0) & (betas < 1)
        ok[-1] = ok[-1] | (betas[-1] == 1.0)
        if not bool(ok.all()):
            bad = betas[~ok][0].item()
            raise ValueError(
                f"betas must all lie in the open interval (0, 1), the last one in (0, 1]; "
                f"found {bad!r}"
            )
        self.betas = betas
        self.name = name
        self.N = betas.numel()
        self.T = 1.0
        self.t_min = 1.0 / self.N
        self._t = torch.arange(1, self.N + 1, dtype=torch.float64) / self.N
        self._log_alpha = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
        self._zero_snr = bool(betas[-1] == 1.0)
        # Interpolation tables stay finite: with zero terminal SNR the last node (-inf) is replaced
        # by a placeholder, and the last interval is handled in closed form (see _last_interval).
        table = self._log_alpha.clone()
        if self._zero_snr:
            table[-1] = table[-2] - 1.0
        self._table = table
        self._f = torch.diff(table) * self.N  # slope on [t_n, t_{n+1}]
        self._tables: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        # one copy of the tables per device, so that evaluating on a GPU copies nothing per call
        if device not in self._tables:
            self._tables[device] = (
                self._t.to(device),
                self._table.to(device),
                self._f.to(device),
            )
        return self._tables[device]

    def _last_interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Zero terminal SNR: on the last interval ``[t_{N-2}, 1]`` ``alpha`` is linear in ``t``,
        ``alpha = alpha_{N-2} w`` with ``w = (1 - t) N``, so that ``alpha(1) = 0`` exactly with a
        finite ``alpha'`` (``log alpha`` is -inf at ``T``, and linear interpolation of it is
        undefined). Returns ``(in_last, w)``."""
        return t >= float(self._t[-2]), ((1.0 - t) * self.N).clamp(max=1.0)

    @classmethod
    def linear(
        cls,
        n: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        *,
        rescale_betas_zero_snr: bool = False,
    ) -> DiscreteVPSDE:
        """DDPM's linear betas (Ho et al. 2020, Sec. 4)."""
        n, beta_start, beta_end = _check_linear_args(n, beta_start, beta_end)
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        return cls(betas, name="linear", rescale_betas_zero_snr=rescale_betas_zero_snr)

    @classmethod
    def scaled_linear(
        cls,
        n: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        *,
        rescale_betas_zero_snr: bool = False,
    ) -> DiscreteVPSDE:
        """Latent-diffusion's betas, linear in ``sqrt(beta)`` (diffusers' ``scaled_linear``)."""
        n, beta_start, beta_end = _check_linear_args(n, beta_start, beta_end)
        b = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        return cls(b, name="scaled_linear", rescale_betas_zero_snr=rescale_betas_zero_snr)

    @classmethod
    def cosine(
        cls,
        n: int = 1000,
        s: float = 0.008,
        max_beta: float = 0.999,
        *,
        rescale_betas_zero_snr: bool = False,
    ) -> DiscreteVPSDE:
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
        return cls(betas, name="cosine", rescale_betas_zero_snr=rescale_betas_zero_snr)

    def _repr_args(self):
        extra = {"zero_terminal_snr": True} if self._zero_snr else {}
        return {"name": self.name, "N": self.N, **extra}

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
        out = interp(t, ts, log_alpha)
        if self._zero_snr:
            last, w = self._last_interval(t)
            out = torch.where(last, log_alpha[-2] + torch.log(w), out)
        return out

    def sigma(self, t):
        return (-torch.expm1(2.0 * self.log_alpha(t))).sqrt()

    def f(self, t):
        t = as_time(t)
        ts, _, f = self._on(t.device)
        k = torch.searchsorted(ts, t.contiguous(), right=True).clamp(1, self.N - 1)
        out = f[k - 1]
        if self._zero_snr:
            last, _ = self._last_interval(t)
            out = torch.where(last, -1.0 / (1.0 - t), out)
        return out

    def g2(self, t):
        return -2.0 * self.f(t)

    def d_alpha(self, t):
        t = as_time(t)
        out = self.f(t) * self.alpha(t)
        if self._zero_snr:
            last, _ = self._last_interval(t)
            alpha_last = math.exp(float(self._log_alpha[-2]))
            out = torch.where(last, torch.full_like(out, -self.N * alpha_last), out)
        return out

    def d_sigma(self, t):
        # alpha^2 + sigma^2 = 1  =>  sigma' = -alpha alpha' / sigma (finite at T, where sigma = 1)
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def inverse_lambda(self, lam):
        lam = as_time(lam)
        ts, log_alpha_table, _ = self._on(lam.device)
        log_alpha = -0.5 * torch.nn.functional.softplus(-2.0 * lam)
        # log alpha is decreasing in t: interpolate t over the reversed (increasing) table
        out = interp(log_alpha, log_alpha_table.flip(0), ts.flip(0))
        if self._zero_snr:
            # invert alpha = alpha_{N-2} (1 - u) on the last interval; exact at lambda = -inf
            a_last = log_alpha_table[-2]
            w = torch.exp(log_alpha - a_last)
            out = torch.where(log_alpha < a_last, 1.0 - w / self.N, out)
        return out

    @property
    def prior_std(self) -> float:
        return 1.0


def rescale_zero_terminal_snr(betas) -> Tensor:
    """Rescale DDPM betas to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Algorithm 1; diffusers' ``rescale_betas_zero_snr=True``): shift
    ``sqrt(alpha_bar)`` so its last value is 0 and scale it so its first is unchanged. The last
    beta becomes exactly 1, so ``alpha(T) = 0``."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    sqrt_abar = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def _check_linear_args(n, beta_start, beta_end) -> tuple[int, float, float]:
    """``n >= 2`` steps and ``0 < beta_start <= beta_end < 1``, shared by the linear schedules."""
    n = check_int("n", n, low=2)
    beta_start = check_real(
        "beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True
    )
    beta_end = check_real("beta_end", beta_end, low=beta_start, high=1.0, high_open=True)
    return n, beta_start, beta_end
