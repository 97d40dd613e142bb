"""Run a diffusers scheduler and the matching scoresde sampler on the same exact model.

diffusers' loop is
``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample``, with
``model(x, t)`` a network conditioned on the integer train step ``t``. Here ``model`` is the
closed-form ``eps`` of an exact Gaussian mixture under the schedule the scheduler itself uses, at
continuous time ``t = (step + 1) / N`` (``DiscreteVPSDE.index_to_t``), which is exactly where the
scoresde sampler evaluates the same model: both sides see identical model outputs at identical
states, and only the solver arithmetic can differ.

Imported only by tests that have already checked diffusers is installed.
"""

from __future__ import annotations

import numpy as np
import torch

import scoresde as S

__all__ = ["schedule_of", "run_diffusers", "run_scoresde", "model_times", "upcast"]


def schedule_of(scheduler) -> S.DiscreteVPSDE:
    """The DDPM schedule a diffusers scheduler uses: its (float32) ``alphas_cumprod`` read in
    float64, as betas ``1 - abar_n / abar_{n-1}``, so that ``alpha(t_n)^2`` equals its
    ``alphas_cumprod[n]`` to float64 rounding."""
    abar = scheduler.alphas_cumprod.to(torch.float64)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return S.DiscreteVPSDE(1.0 - abar / prev)


def upcast(scheduler) -> None:
    """Replace the float32 schedule tables diffusers computes in ``set_timesteps`` by the same
    values in float64 (same ``alphas_cumprod``, same formulas), so that its solver arithmetic runs
    in float64 like ours. Call after ``set_timesteps``."""
    abar = scheduler.alphas_cumprod.to(torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):  # DDIM, PNDM: tables of alphas_cumprod
        one = bool(scheduler.final_alpha_cumprod == 1.0)
        scheduler.alphas_cumprod = abar
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if one else abar[0]
        return
    # DPM-Solver family: sigmas = sqrt((1 - abar) / abar) at the timesteps, then the final one
    sigma = ((1.0 - abar) / abar).sqrt()
    final = torch.zeros(1, dtype=torch.float64) if float(scheduler.sigmas[-1]) == 0 else sigma[:1]
    scheduler.sigmas = torch.cat([sigma[scheduler.timesteps], final])


def model_times(sde: S.DiscreteVPSDE, steps) -> torch.Tensor:
    """Continuous times of integer train steps."""
    return sde.index_to_t(torch.as_tensor(np.asarray(steps), dtype=torch.float64))


def run_diffusers(
    scheduler, data, sde, x: torch.Tensor, num_inference_steps: int, *, float64: bool
):
    """diffusers' sampling loop on the exact ``eps`` model; returns ``(x, nfe)``."""
    scheduler.set_timesteps(num_inference_steps)
    if float64:
        upcast(scheduler)
    den = data.denoiser(sde, "eps")
    for t in scheduler.timesteps:
        eps = den.eps(x, sde.index_to_t(float(t)))
        x = scheduler.step(eps, t, x).prev_sample
    return x, len(scheduler.timesteps)


def run_scoresde(key: str, options: dict, data, sde, x: torch.Tensor, ts, *, denoise_final: bool):
    """Our sampler ``key`` on the explicit grid ``ts``; returns ``(x, nfe)``."""
    den = data.denoiser(sde, "eps")
    res = S.sample(S.get_sampler(key, **options), den, x_T=x, grid=S.Explicit(ts),
                   denoise_final=denoise_final, progress=False)  # fmt: skip
    return res.x, res.nfe
