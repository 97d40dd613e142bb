r"""Predictor–corrector sampling (Song et al. 2021, Sec. 4.2 and Algorithms 1–5).

Each step first moves ``x`` from ``t_i`` to ``t_{i+1}`` with a *predictor* (any step-based
sampler in the registry), then runs a *corrector*: ``n_steps`` Langevin MCMC steps that target
``p_{t_{i+1}}`` (Algorithm 1, the general form: predict, then correct at the new time, so the last
correction happens at ``t_min``).

The Langevin step (Algorithms 4 and 5) is

.. math:: x \leftarrow x + \epsilon\, s(x, t) + \sqrt{2\epsilon}\, z, \qquad
          \epsilon = 2 a_i \left(r \frac{\overline{\|z\|}}{\overline{\|s\|}}\right)^2,

with ``s = -eps / sigma_t`` the score, ``r`` the signal-to-noise ratio ``snr``, and
``a_i = (alpha(t_i) / alpha(t_{i+1}))^2`` the squared mean factor of the forward step just taken:
DDPM's ``alpha_i = 1 - beta_i`` of Algorithm 5 for VP-type schedules and exactly 1 for VE
(Algorithm 4), chosen by the schedule's coefficients. The norms are per-sample L2 norms averaged
over the batch (the reference implementation, score_sde's ``LangevinCorrector``); the paper's
per-sample ratio is a ratio of Gaussians in low dimension, whose square has no mean, so its step
sizes are unusable on 1-D or 2-D problems.

The corrector's ``z`` is not an increment of the reverse SDE's Brownian motion: it is drawn with
``noise.extra(x)``, one auxiliary draw per Langevin step, after the predictor's draw (for
``BrownianNoise`` from its separate seeded stream, so one seed still fixes the run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..utils import check_int, check_real, expand_to
from .base import GridSchedule, Sampler

__all__ = ["LangevinCorrector", "PredictorCorrector"]


class LangevinCorrector:
    r"""Langevin MCMC corrector of Song et al. 2021 (Algorithms 4 and 5); see the module docstring.

    Args:
        snr: the signal-to-noise ratio ``r`` that sets the step size (> 0; 0.16 is the paper's
            value for CIFAR-10 with the VE SDE).
        n_steps: Langevin steps per grid time (>= 0; 0 leaves the predictor's result unchanged).
        norms: ``"batch"`` (the reference's norms averaged over the batch, which couples the
            samples of a batch) or ``"sample"`` (the paper's per-sample ratio: each sample's step
            depends on that sample alone, so per-sample seeds reproduce it in any batch; suited
            to high-dimensional data, see the module docstring).
    """

    def __init__(self, *, snr: float = 0.16, n_steps: int = 1, norms: str = "batch"):
        self.snr = check_real("snr", snr, low=0.0, low_open=True)
        self.n_steps = check_int("n_steps", n_steps, low=0)
        if norms not in ("batch", "sample"):
            raise ValueError(f"norms must be 'batch' or 'sample'; got {norms!r}")
        self.norms = norms

    def __repr__(self) -> str:
        return (
            f"LangevinCorrector(snr={self.snr!r}, n_steps={self.n_steps!r}, norms={self.norms!r})"
        )

    def to_config(self) -> dict:
        """``{"snr": ..., "n_steps": ...}``; ``PredictorCorrector(corrector=config)`` rebuilds it."""
        return {"snr": self.snr, "n_steps": self.n_steps}

    def init(self, sde, ts, x) -> tuple:
        s = GridSchedule.of(sde, ts)
        a = torch.exp(2.0 * (s.alpha[:-1].log() - s.alpha[1:].log()))
        # epsilon = 2 a r^2 (mean|z| / mean|s|)^2 = k (mean|z| / mean|eps|)^2 (|s| = |eps| / sigma)
        k = 2.0 * a * (self.snr * s.sigma[1:]) ** 2
        cast = GridSchedule.cast
        return GridSchedule.times(s.t[1:], x), cast(s.sigma[1:], x), cast(k, x)

    def correct(self, denoiser, ts, i, x, state, noise):
        """``n_steps`` Langevin steps at ``ts[i + 1]``."""
        t, sigma, k = state
        for _ in range(self.n_steps):
            eps = denoiser.predict(x, t[i]).eps
            z = noise.extra(x)
            z_norm, eps_norm = z.flatten(1).norm(dim=1), eps.flatten(1).norm(dim=1)
            if self.norms == "batch":
                ratio = z_norm.mean() / eps_norm.mean()
            else:
                ratio = expand_to(z_norm / eps_norm, x)
            step = k[i] * ratio**2
            x = x - (step / sigma[i]) * eps + (2.0 * step).sqrt() * z
        return x


class PredictorCorrector(Sampler):
    r"""Predictor–corrector sampler: any step-based predictor, then Langevin correction.

    ``x' = predictor(x_i, t_i -> t_{i+1})``, then ``n_steps`` times
    ``x' <- x' + epsilon s(x', t_{i+1}) + sqrt(2 epsilon) z`` (module docstring), giving
    ``x_{i+1}``.
    With ``corrector="none"`` (or ``n_steps=0``) each step *is* the predictor's step, bit for bit.

    **Order** the predictor's (strong order 1 for the default ``reverse_diffusion``) when there is
    no corrector; with Langevin correction there is no strong convergence
    (``strong_convergence = False``): the corrector's noise is not the reverse SDE's path.
    **Weak order** the predictor's, down to a floor: the Langevin step size is set by ``snr``, not
    by the grid, so the corrector's unadjusted-Langevin bias does not shrink with ``n_steps``. On
    a Gaussian target of variance ``v`` the batch-norm rule gives ``epsilon = 2 a snr^2 v^2 / V``
    for a current variance ``V``, and the fixed point of ``V <- (1 - epsilon / v)^2 V + 2 epsilon``
    is ``V = v (1 + a snr^2)``: a relative variance bias of ``snr^2`` (2.6% at 0.16) as
    ``n_steps -> infinity`` (measured in ``tests/convergence/test_sde_weak_order.py``).
    **NFE per step** the predictor's plus ``n_steps`` (2 by default). **Stochastic** yes.
    The instance's ``order``, ``weak_order``, ``stochastic``, ``nfe_per_step`` and
    ``strong_convergence`` follow its predictor and corrector; the class attributes describe the
    default (``reverse_diffusion`` + ``LangevinCorrector(snr=0.16, n_steps=1)``, the paper's PC
    sampler for the VE SDE, Table 1).
    **Reference** Song et al. 2021, Algorithms 1–5 and Sec. 4.2.

    Args:
        predictor: a step-based sampler, its registry key or its config (not a backend that
            overrides ``run``).
        corrector: ``"langevin"`` (``LangevinCorrector()``), ``"none"``/``None``, a
            :class:`LangevinCorrector` with its own ``snr`` and ``n_steps``, or its config.
    """

    name = "pc"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 2
    strong_convergence = False
    reference = "song2021sde"

    def __init__(
        self,
        *,
        predictor: Sampler | str = "reverse_diffusion",
        corrector: LangevinCorrector | str | None = "langevin",
    ):
        from . import get_sampler  # the registry imports this module

        if isinstance(predictor, (str, Mapping)):
            try:
                predictor = get_sampler(predictor)
            except ValueError as err:
                raise ValueError(f"predictor: {err}") from None
        if not isinstance(predictor, Sampler):
            raise ValueError(
                "predictor must be a Sampler or a registry name; "
                f"got {predictor!r} ({type(predictor).__name__})"
            )
        if type(predictor).run is not Sampler.run:
            raise ValueError(
                f"predictor must be a step-based sampler; {predictor.name!r} integrates the whole "
                "grid in its own run() and has no step to interleave with a corrector"
            )
        if isinstance(corrector, Mapping):
            corrector = LangevinCorrector(**corrector)
        elif corrector == "langevin":
            corrector = LangevinCorrector()
        elif corrector is None or corrector == "none":
            corrector = None
        elif not isinstance(corrector, LangevinCorrector):
            raise ValueError(
                "corrector must be 'langevin', 'none', None or a LangevinCorrector; "
                f"got {corrector!r}"
            )
        if corrector is not None and corrector.n_steps == 0:
            corrector = None
        self.predictor = predictor
        self.corrector = corrector
        m = 0 if corrector is None else corrector.n_steps
        self.order = predictor.order
        self.weak_order = (
            predictor.weak_order if predictor.weak_order is not None else predictor.order
        )
        self.stochastic = predictor.stochastic or m > 0
        self.strong_convergence = m == 0 and getattr(predictor, "strong_convergence", True)
        self.nfe_per_step = None if predictor.nfe_per_step is None else predictor.nfe_per_step + m
        self._m = m

    def options(self) -> dict[str, Any]:
        return {"predictor": self.predictor, "corrector": self.corrector}

    def nfe(self, n_steps: int) -> int | None:
        n = self.predictor.nfe(n_steps)
        return None if n is None else n + self._m * n_steps

    def init(self, denoiser, sde, ts, x):
        corrector = None if self.corrector is None else self.corrector.init(sde, ts, x)
        return self.predictor.init(denoiser, sde, ts, x), corrector

    def replace_state(self, x, state):
        p_state, c_state = state
        return self.predictor.replace_state(x, p_state), c_state

    def step(self, denoiser, sde, ts, i, x, state, noise):
        p_state, c_state = state
        x, p_state = self.predictor.step(denoiser, sde, ts, i, x, p_state, noise)
        if self.corrector is not None:
            x = self.corrector.correct(denoiser, ts, i, x, c_state, noise)
        return x, (p_state, c_state)
