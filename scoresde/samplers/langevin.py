r"""Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Algorithm 1).

Langevin MCMC at a decreasing sequence of noise levels, each targeting the marginal ``p_t`` at
that level and started from the previous level's samples. Here the levels are the grid times
after the first: step ``i`` runs ``n_steps_each`` Langevin steps at ``t_{i+1}``, so the last
level is ``t_min``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..utils import check_int, check_real
from .base import GridSchedule, Sampler

__all__ = ["AnnealedLangevin"]


class AnnealedLangevin(Sampler):
    r"""Annealed Langevin dynamics at the grid's noise levels.

    At level ``t = t_{i+1}``, ``n_steps_each`` times:
    ``x <- x + epsilon_i s(x, t) + sqrt(2 epsilon_i) z = x - (epsilon_i / sigma_t) eps(x, t)
    + sqrt(2 epsilon_i) z`` with a step size fixed per level:

    * ``snr`` (default): ``epsilon_i = 2 a_i (snr * sigma_t)^2`` with
      ``a_i = (alpha(t_i) / alpha(t_{i+1}))^2`` (score_sde's ``AnnealedLangevinDynamics``
      corrector: Song et al. 2021's Langevin step with ``||z|| / ||s||`` replaced by its typical
      value ``sigma_t``; ``a_i = 1`` for VE);
    * ``step_lr`` (NCSN): ``2 epsilon_i = step_lr * sigma_t^2 / sigma_L^2`` (Algorithm 1's
      ``alpha_i``, ``sigma_L = sigma(t_min)``).

    Both keep ``epsilon_i / sigma_t^2`` fixed across levels; the ``snr`` rule fixes it
    independently of the schedule (``4 snr^2``), while NCSN's ``step_lr = 2e-5`` is calibrated to
    their ``sigma_L = 0.01`` (``2 epsilon / sigma^2 = 0.2``) and diverges on schedules with a far
    smaller ``sigma(t_min)`` (sub-VP's is about 1e-4), which is why ``snr`` is the default.

    ``z`` is an auxiliary draw, ``noise.extra(x)``, one per Langevin step: the dynamics have no
    reverse-SDE Brownian path.

    **Order** none in the strong sense (``strong_convergence = False``): Langevin MCMC does not
    follow a path, so ``order`` is set to the weak order. **Weak order** 1/2 in the number of
    levels with ``n_steps_each`` fixed. The chain lags the moving target: its variance error obeys
    ``de/dt = -kappa(t) e + dv/dt`` with relaxation rate ``kappa ~ n_steps * 4 snr^2 sigma_t^2 /
    v_t`` (``v_t`` the target's variance), so the error left at ``t_min`` is
    ``int (dv/dt) exp(-int kappa)``. Where ``sigma_t^2`` is geometric in ``t`` (VE) this is
    ``O(1 / n_steps)``; where ``sigma_t^2 ~ beta_min t`` near 0 (VP-type) it is a Gaussian
    integral, ``O(n_steps^-1/2)``, reached only for very large ``n_steps`` (about ``n^-2/3`` in
    practice, while ``sigma_t^2 ~ t^2``). The unadjusted-Langevin bias at the last level
    (relative variance bias ``epsilon_L / (2 v)``, about ``snr^2 sigma(t_min)^2 / v``) is below
    both. **NFE per step** ``n_steps_each`` (100 by default). **Stochastic** yes.
    **NFE per step** ``n_steps_each`` (100 by default). **Stochastic** yes.
    **Reference** Song & Ermon 2019, Algorithm 1 (``n_steps_each = 100``; their ``step_lr`` is
    2e-5); Song et al. 2021, Algorithms 4–5 (``snr``).

    Args:
        n_steps_each: Langevin steps per noise level (>= 1; NCSN's T = 100).
        step_lr: NCSN's step size at the last level (> 0); selects the ``step_lr`` rule.
        snr: signal-to-noise ratio of the ``snr`` rule (> 0; 0.16 when ``step_lr`` is not given).
            Give at most one of ``step_lr`` and ``snr``.
    """

    name = "annealed_langevin"
    order = 0.5
    weak_order = 0.5
    stochastic = True
    nfe_per_step = 100
    strong_convergence = False
    reference = "song2019ncsn"

    def __init__(
        self, *, n_steps_each: int = 100, step_lr: float | None = None, snr: float | None = None
    ):
        self.n_steps_each = check_int("n_steps_each", n_steps_each, low=1)
        if step_lr is not None and snr is not None:
            raise ValueError(
                "give at most one of step_lr and snr for annealed_langevin; "
                f"got step_lr={step_lr!r} and snr={snr!r}"
            )
        if step_lr is not None:
            self.step_lr = check_real("step_lr", step_lr, low=0.0, low_open=True)
            self.snr = None
        else:
            self.snr = check_real("snr", 0.16 if snr is None else snr, low=0.0, low_open=True)
            self.step_lr = None
        self.nfe_per_step = self.n_steps_each

    def options(self) -> dict[str, Any]:
        return {"n_steps_each": self.n_steps_each, "step_lr": self.step_lr, "snr": self.snr}

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        sigma = s.sigma[1:]
        if self.snr is None:
            step = 0.5 * self.step_lr * (sigma / sigma[-1]) ** 2
        else:
            a = torch.exp(2.0 * (s.alpha[:-1].log() - s.alpha[1:].log()))
            step = 2.0 * a * (self.snr * sigma) ** 2
        cast = GridSchedule.cast
        return GridSchedule.times(s.t[1:], x), cast(-step / sigma, x), cast((2.0 * step).sqrt(), x)

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, c_eps, c_z = state
        for _ in range(self.n_steps_each):
            eps = denoiser.predict(x, t[i]).eps
            x = x + c_eps[i] * eps + c_z[i] * noise.extra(x)
        return x, state
