r"""Peers in the steps-vs-FID table: diffusers' schedulers and k-diffusion's samplers, run through
their own code on the same checkpoint, from the same prior draws, with the same ending and the
same NFE count as the scoresde cells (:mod:`benchmarks.fid_vs_steps`).

A peer is named ``<library>:<method>`` (:data:`PEERS`). What each one sees:

- **diffusers** (``DPMSolverMultistepScheduler``, ``UniPCMultistepScheduler``,
  ``DEISMultistepScheduler``, ``EulerAncestralDiscreteScheduler``, each with its default options
  and ``timestep_spacing="linspace"``): the discrete form of the model's process, 1000 train steps
  whose ``alphas_cumprod[n]`` is ``1 / (1 + s(t_n)^2)`` (``s = sigma / alpha``) at
  ``t_n = t_min + (T - t_min) n / 999`` (:func:`discrete_betas`; for a ``DiscreteVPSDE`` model its
  own betas), given as ``trained_betas``, so train step 999 is ``T`` and train step 0 is
  ``t_min``. The scheduler's own loop runs (``set_timesteps``, then per timestep
  ``scale_model_input``, one model call, ``step``); the model returns ``v_prediction`` at the noise
  level the scheduler assigns to that timestep (its ``sigmas`` entry), evaluated at the continuous
  time with that level (``sde.inverse_lambda``), which is well conditioned at both ends.
- **k-diffusion** (``sample_dpmpp_2m``, ``sample_dpmpp_2m_sde``, ``sample_euler_ancestral``,
  ``sample_heun`` from the installed ``k_diffusion/sampling.py``, loaded as
  :func:`benchmarks.peers.load_k_diffusion_sampling` does): the model as a denoiser
  ``D(y; sigma)`` in the VE variable ``y = x / alpha``, on Karras et al.'s noise levels
  (``get_sigmas_karras``, ``rho = 7``) from ``s(T)`` to ``s(t_min)``, the usual k-diffusion call.

Prior draws: the same ``x_T`` as the scoresde cells, mapped to each library's state (the VP
state ``x / alpha * alpha_vp`` for diffusers' VP schedulers, ``x / alpha`` for Euler ancestral's
and k-diffusion's VE state). Stochastic peers draw their noise from the batch's generator
(diffusers' ``step(generator=...)``; k-diffusion's ``noise_sampler``, a standard normal per
step instead of ``dpmpp_2m_sde``'s default Brownian tree, whose seed is random), so every cell
is reproducible.

Endings, as in the scoresde cells:

- ``denoise_final`` (the model's ``x0`` at ``t_min``, its model call paid from the budget):
  k-diffusion's own last step to ``sigma = 0`` (``get_sigmas_karras`` appends it), which for all
  four samplers returns the denoiser's output at ``s(t_min)``; diffusers' Euler ancestral's own
  last step to ``sigma = 0`` from train step 0 (its ``linspace`` timesteps end at 0), which also
  returns ``x0`` at ``t_min``. The multistep schedulers run their loop to ``t_min``
  (``final_sigmas_type="sigma_min"``; DEIS always ends there) and one more model call gives ``x0``
  there, as the scoresde driver's ``denoise_final`` does. Their own ``final_sigmas_type="zero"``
  is not used: with ``linspace`` its ``x0`` would be taken at the last timestep (train step
  ``round(999 / n)``), not at ``t_min``.
- ``t_min``: the state at ``t_min`` with its residual noise (k-diffusion without the appended 0;
  diffusers with ``final_sigmas_type="sigma_min"``). Euler ancestral's scheduler cannot end there
  and has no such cell.

NFE is the number of model calls, counted at the model, within the cell's budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

import scoresde as S
from scoresde.utils import expand_to

__all__ = ["PEERS", "Peer", "discrete_betas", "peer_steps", "peer_grid", "peer_run"]

N_TRAIN = 1000
KARRAS_RHO = 7.0


@dataclass(frozen=True)
class Peer:
    """A peer method: its library, its class (diffusers) or ``sample_<name>`` (k-diffusion),
    the options it is given beyond the library's defaults, its model calls per step, and
    whether it draws noise."""

    family: str
    method: str
    options: dict = field(default_factory=dict)
    calls_per_step: int = 1
    stochastic: bool = False


PEERS: dict[str, Peer] = {
    # euler_at_final: its default ending (final_sigmas_type="zero") takes a first-order last
    # step; ending at sigma_min drops that from 15 steps (MNIST FID 48.9 at 20 NFE, 38.3 at
    # 10), so the option keeps the last step first order, as ours (39.0 at 20 NFE)
    "diffusers:dpmpp_2m": Peer("diffusers", "DPMSolverMultistepScheduler",
                               {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                "euler_at_final": True}),
    "diffusers:unipc": Peer("diffusers", "UniPCMultistepScheduler"),
    "diffusers:deis": Peer("diffusers", "DEISMultistepScheduler"),
    "diffusers:euler_ancestral": Peer("diffusers", "EulerAncestralDiscreteScheduler",
                                      stochastic=True),
    "k-diffusion:dpmpp_2m": Peer("k-diffusion", "dpmpp_2m"),
    "k-diffusion:dpmpp_2m_sde": Peer("k-diffusion", "dpmpp_2m_sde", stochastic=True),
    "k-diffusion:euler_ancestral": Peer("k-diffusion", "euler_ancestral", stochastic=True),
    "k-diffusion:heun": Peer("k-diffusion", "heun", calls_per_step=2),
}  # fmt: skip
# diffusers schedulers whose own loop ends at sigma = 0 from train step 0 (x0 at t_min)
_ENDS_AT_ZERO = {"EulerAncestralDiscreteScheduler"}


def check_peers(keys) -> list[str]:
    """``keys`` as a list, after checking each is a peer whose library is installed."""
    from benchmarks.peers import diffusers_available, k_diffusion_available

    unknown = sorted(set(keys) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; expected some of {sorted(PEERS)}")
    installed = {"diffusers": diffusers_available(), "k-diffusion": k_diffusion_available()}
    missing = sorted({PEERS[k].family for k in keys} - {f for f, ok in installed.items() if ok})
    if missing:
        raise ValueError(f"peers {list(keys)} need {missing} installed")
    return list(keys)


def peer_grid(key: str) -> str:
    """The grid column of a peer's rows."""
    return "linspace" if PEERS[key].family == "diffusers" else f"karras(rho={KARRAS_RHO:g})"


def discrete_betas(sde: S.SDE, n_train: int = N_TRAIN) -> Tensor:
    """The DDPM betas of the discrete form of ``sde`` handed to diffusers: ``n_train`` train steps
    at ``t_n = t_min + (T - t_min) n / (n_train - 1)`` with ``alphas_cumprod[n] =
    sigmoid(2 lambda_(t_n)) = 1 / (1 + s(t_n)^2)``; a ``DiscreteVPSDE``'s own betas."""
    if isinstance(sde, S.DiscreteVPSDE):
        return sde.betas
    t = torch.linspace(sde.t_min, sde.T, n_train, dtype=torch.float64)
    abar = torch.sigmoid(2.0 * sde.lambda_(t).to(torch.float64))
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return 1.0 - abar / prev


def peer_steps(key: str, budget: int, ending: str) -> int | None:
    """The largest step count whose model calls fit ``budget`` with ``ending``: diffusers'
    ``num_inference_steps``, or the number of k-diffusion Karras levels from ``s(T)`` to
    ``s(t_min)``; ``None`` when none fits or the peer cannot end that way."""
    peer = PEERS[key]
    for n in range(budget + 1, 0, -1):
        calls = _calls(peer, n, ending)
        if calls is not None and calls <= budget:
            return n
    return None


def _calls(peer: Peer, n: int, ending: str) -> int | None:
    final = ending == "denoise_final"
    if peer.family == "diffusers":
        if peer.method in _ENDS_AT_ZERO:
            return n if final and n >= 2 else None
        return n + final
    if n < 2:
        return None
    # n levels: n - 1 steps between s(T) and s(t_min), then (denoise_final) the step to 0, one
    # call for every sampler here (Heun's last step to 0 is an Euler step)
    return peer.calls_per_step * (n - 1) + final


def _level_time(sde: S.SDE, s: Tensor) -> Tensor:
    """The continuous time whose VE-equivalent level ``sigma / alpha`` is ``s`` (float64)."""
    t = sde.inverse_lambda(-torch.as_tensor(s, dtype=torch.float64).log())
    return t.clamp(sde.t_min, sde.T)


def peer_run(
    key: str, denoiser: S.Denoiser, n_steps: int, ending: str
) -> Callable[[Tensor, torch.Generator], tuple[Tensor, int]]:
    """``run(x_T, generator) -> (x, nfe)``: the peer from the prior draw ``x_T`` (state of
    ``denoiser.sde`` at ``T``) to the ending's output in the model's space, and its model calls."""
    if _calls(PEERS[key], n_steps, ending) is None:
        raise ValueError(f"peer {key!r} cannot run {n_steps} steps ending {ending!r}")
    run = _run_diffusers if PEERS[key].family == "diffusers" else _run_k_diffusion
    return lambda x_T, generator: run(PEERS[key], denoiser, n_steps, ending, x_T, generator)


def _scheduler(peer: Peer, sde: S.SDE):
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # config notes per construction
    betas = discrete_betas(sde)
    options = {"num_train_timesteps": len(betas), "trained_betas": betas.numpy(),
               "prediction_type": "v_prediction", **peer.options}  # fmt: skip
    if peer.method not in _ENDS_AT_ZERO | {"DEISMultistepScheduler"}:
        options["final_sigmas_type"] = "sigma_min"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers mixes torch tensors into numpy calls
        return getattr(diffusers, peer.method)(**options)


def _run_diffusers(peer, denoiser, n_steps, ending, x_T, generator):
    sde = denoiser.sde
    sched = _scheduler(peer, sde)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched.set_timesteps(n_steps, device=x_T.device)
    levels = sched.sigmas.to(torch.float64).cpu()
    times = _level_time(sde, levels.clamp_min(1e-30))
    alpha_T = sde.alpha(torch.tensor(sde.T, dtype=torch.float64))
    # the prior draw as the scheduler's state: VP (x / alpha * alpha_vp), or VE for Euler
    y_T = x_T / float(alpha_T)
    ve = peer.method in _ENDS_AT_ZERO
    x = y_T if ve else y_T / math.sqrt(1.0 + float(levels[0]) ** 2)
    calls = 0
    for i, t in enumerate(sched.timesteps):
        s = float(levels[i])
        x_in = sched.scale_model_input(x, t)  # the VP state for every scheduler here
        t_c = times[i]
        a_vp = 1.0 / math.sqrt(1.0 + s * s)
        pred = denoiser.predict(x_in / a_vp * float(sde.alpha(t_c)), t_c.to(x.device))
        calls += 1
        v = a_vp * pred.eps - s * a_vp * pred.x0
        kwargs = {"generator": generator} if peer.stochastic else {}
        x = sched.step(v, t, x, **kwargs).prev_sample
    s_end = float(levels[-1])
    if ve:  # its last step went to sigma = 0: x is the x0 of train step 0
        return x, calls
    t_end = times[-1]
    x_end = x * (math.sqrt(1.0 + s_end**2) * float(sde.alpha(t_end)))
    if ending == "denoise_final":
        return denoiser.x0(x_end, t_end.to(x.device)), calls + 1
    return x_end, calls


def _run_k_diffusion(peer, denoiser, n_steps, ending, x_T, generator):
    from benchmarks.peers import load_k_diffusion_sampling

    K = load_k_diffusion_sampling()
    sde = denoiser.sde
    t_ends = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    s_max, s_min = (float(v) for v in torch.exp(-sde.lambda_(t_ends)))
    sigmas = K.get_sigmas_karras(n_steps, s_min, s_max, rho=KARRAS_RHO, device=x_T.device)
    if ending == "t_min":
        sigmas = sigmas[:-1]
    calls = 0

    def model(y: Tensor, sigma: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        t_c = _level_time(sde, sigma.double().cpu()).to(y.device)
        return denoiser.x0(y * expand_to(sde.alpha(t_c), y), t_c)

    def noise(sigma, sigma_next):
        return torch.randn(x_T.shape, generator=generator, dtype=x_T.dtype).to(x_T.device)

    alpha_T = float(sde.alpha(torch.tensor(sde.T, dtype=torch.float64)))
    kwargs = {"noise_sampler": noise} if peer.stochastic else {}
    fn = getattr(K, f"sample_{peer.method}")
    y = fn(model, x_T / alpha_T, sigmas, disable=True, **kwargs)
    if ending == "denoise_final":
        return y, calls
    return y * float(sde.alpha(torch.tensor(sde.t_min, dtype=torch.float64))), calls
