r"""Solvers of the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6).

.. math:: dx = \left[f(t)\,x - g(t)^2 \nabla_x \log p_t(x)\right] dt + g(t)\, d\bar W_t,
          \qquad \nabla_x \log p_t = -\hat\epsilon / \sigma_t,

run from ``T`` down to ``t_min`` (``dt < 0``). The noise is additive (``g`` depends on ``t``
only), which raises Euler–Maruyama's strong order from 1/2 to 1 (Kloeden & Platen 1992,
Sec. 10.2): the Milstein correction ``g (dg/dx)`` vanishes, so Euler–Maruyama *is* Milstein.

Notation for one step from ``t = ts[i]`` to ``t_next = ts[i+1]``: ``h = lambda_(t_next) -
lambda_(t) > 0``; the forward transition ``x_t | x_{t_next}`` of the linear SDE has mean factor
``a = alpha_t / alpha_{t_next}`` and variance ``G^2 = sigma_t^2 - a^2 sigma_{t_next}^2 =
-sigma_t^2 expm1(-2h)`` (the ``expm1`` form keeps every digit when the step is small).
``reverse_diffusion`` and ``ancestral`` are built from ``(a, G)`` alone, so one formula serves
VP, sub-VP, VE and discrete schedules.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchsde
from torch import Tensor
from tqdm.auto import tqdm

from ..noise import BrownianNoise
from .base import AffineStep, GridSchedule, Sampler, StepInfo, run_callback

__all__ = ["EulerMaruyama", "ReverseDiffusion", "Ancestral", "TorchsdeSampler"]


def _transition(s: GridSchedule) -> tuple[Tensor, Tensor]:
    """Per step ``i``: the forward factor ``a = alpha(t_i) / alpha(t_{i+1})`` and variance
    ``G^2 = -sigma(t_i)^2 expm1(-2 h)`` of ``x_{t_i} | x_{t_{i+1}}``."""
    a = torch.exp(s.alpha[:-1].log() - s.alpha[1:].log())
    h = s.lambda_[1:] - s.lambda_[:-1]
    G2 = -(s.sigma[:-1] ** 2) * torch.expm1(-2.0 * h)
    return a, G2


class EulerMaruyama(AffineStep):
    r"""Euler–Maruyama on the reverse SDE.

    ``x_{i+1} = (1 + h f_i) x_i + h g2_i / sigma_i eps(x_i, t_i) + sqrt(-h g2_i) z_i`` with
    ``h = t_{i+1} - t_i < 0`` and ``z_i = (W(t_i) - W(t_{i+1})) / sqrt(-h)`` from the noise source.

    **Strong order** 1 (additive noise: the Milstein correction ``g g'`` in ``x`` vanishes, so
    EM coincides with Milstein). **Weak order** 1. **NFE per step** 1. **Stochastic** yes.
    **Reference** Song et al. 2021, eq. 6 and Appendix (Euler–Maruyama predictor).
    """

    name = "euler_maruyama"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "song2021sde"

    def coefficients(self, s):
        h = s.t[1:] - s.t[:-1]
        return 1.0 + h * s.f[:-1], h * s.g2[:-1] / s.sigma[:-1], (-h * s.g2[:-1]).sqrt()


class ReverseDiffusion(AffineStep):
    r"""Reverse diffusion: the forward chain's discretisation run backwards (score_sde's
    ``ReverseDiffusionPredictor``).

    ``x_{i+1} = (2 - a_i) x_i + G_i^2 score(x_i, t_i) + G_i z_i
    = (2 - a_i) x_i - (G_i^2 / sigma_i) eps(x_i, t_i) + G_i z_i``, with the forward transition
    ``(a_i, G_i^2)`` of the module docstring. For VP (``a^2 = 1 - beta``, ``G^2 = beta``) this is
    Song et al.'s ``x_i = (2 - sqrt(1 - beta_{i+1})) x_{i+1} + beta_{i+1} s + sqrt(beta_{i+1}) z``
    and for VE (``a = 1``) ``x_i = x_{i+1} + (sigma_{i+1}^2 - sigma_i^2) s + sqrt(sigma_{i+1}^2 -
    sigma_i^2) z``; sub-VP and discrete schedules use the same ``(a, G)``.

    **Strong order** 1: ``2 - a = 1 + h_t f + O(h_t^2)`` and ``G^2 = -h_t g^2 + O(h_t^2)`` (with
    ``h_t = t_{i+1} - t_i``), so each step is Euler–Maruyama's plus an ``O(h_t^2)`` drift change and
    an ``O(h_t^{3/2})`` mean-zero noise change, which keep EM's strong order 1 under additive
    noise. **Weak order** 1. **NFE per step** 1. **Stochastic** yes (one Brownian increment).
    **Reference** Song et al. 2021, Appendix E (reverse diffusion sampling, eq. 45).
    """

    name = "reverse_diffusion"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "song2021sde"

    def coefficients(self, s):
        a, G2 = _transition(s)
        return 2.0 - a, -G2 / s.sigma[:-1], G2.sqrt()


class Ancestral(AffineStep):
    r"""Ancestral sampling: DDPM's (VP-type) or NCSN's (VE-type) reverse Markov chain.

    The mean is the Gaussian posterior ``E[x_{t_{i+1}} | x_{t_i}, x0]`` with ``x0`` from the
    model, written with ``eps``:
    ``x_{i+1} = (x_i - (G_i^2 / sigma_i) eps(x_i, t_i)) / a_i + std_i z_i``, which is
    Ho et al.'s ``1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps)`` for VP
    (``a^2 = alpha_t``, ``G^2 = beta_t``) and NCSN's ``x_i + (sigma_i^2 - sigma_{i+1}^2) s`` for VE.
    The variance is chosen by the schedule's coefficients, never by its class:

    * ``alpha`` varies on the grid (VP, sub-VP, discrete): DDPM's ``std^2 = G^2`` (``beta_t``; Ho
      et al. 2020, Alg. 2 with ``sigma_t^2 = beta_t``, as in score_sde's ancestral predictor);
    * ``alpha`` constant (VE): NCSN's posterior variance
      ``std^2 = G^2 sigma_{i+1}^2 / sigma_i^2`` (Song et al. 2021, Appendix F).

    * the model has learned variance (``Denoiser(learned_variance=True)``; Nichol & Dhariwal 2021,
      eq. 15): ``std^2 = exp(w log G^2 + (1 - w) log G~^2)`` with ``w = (v + 1) / 2`` from the
      model's output ``v`` (``Prediction.var_interp``, per entry) between the posterior variance
      ``G~^2 = G^2 sigma_{i+1}^2 / sigma_i^2`` (DDPM's ``beta~_t``) and ``G^2`` (``beta_t``), as
      diffusers' ``DDPMScheduler(variance_type="learned_range")``.

    **Strong order** 1: ``1/a = 1 + h_t f + O(h_t^2)``, ``G^2 / sigma = -h_t g^2 / sigma +
    O(h_t^2)`` and ``std = sqrt(-h_t g^2) (1 + O(h_t))``, i.e. Euler–Maruyama up to the terms that
    leave its strong order 1 (additive noise). **Weak order** 1. **NFE per step** 1.
    **Stochastic** yes (one Brownian increment).
    **Reference** Ho et al. 2020, Alg. 2 (VP); Song et al. 2021, Appendix F (VE); Nichol &
    Dhariwal 2021, Sec. 3.1 (learned variance).
    """

    name = "ancestral"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "ho2020ddpm"

    def coefficients(self, s):
        a, G2 = _transition(s)
        alpha_constant = bool((s.alpha == s.alpha[0]).all())
        var = G2 * (s.sigma[1:] / s.sigma[:-1]) ** 2 if alpha_constant else G2
        return 1.0 / a, -G2 / (a * s.sigma[:-1]), var.sqrt()

    def init(self, denoiser, sde, ts, x):
        s = GridSchedule.of(sde, ts)
        _, G2 = _transition(s)
        # log G^2 and log G~^2 = log G^2 + 2 log(sigma_{i+1} / sigma_i): the learned-range ends
        log_max = G2.log()
        log_min = log_max + 2.0 * (s.sigma[1:].log() - s.sigma[:-1].log())
        cast = GridSchedule.cast
        return (*super().init(denoiser, sde, ts, x), cast(log_min, x), cast(log_max, x))

    def step(self, denoiser, sde, ts, i, x, state, noise):
        t, c_x, c_eps, c_z, log_min, log_max = state
        pred = denoiser.predict(x, t[i])
        std = c_z[i]
        if pred.var_interp is not None:
            w = 0.5 * (pred.var_interp + 1.0)
            std = torch.exp(0.5 * (w * log_max[i] + (1.0 - w) * log_min[i]))
        return c_x[i] * x + c_eps[i] * pred.eps + std * noise(ts[i], ts[i + 1], x), state


# -------------------------------------------------------------------------------------------
# torchsde backend (Li et al. 2020; Kidger et al. 2021)

# method -> (strong order, weak order, network calls per step) for the reverse SDE's additive
# noise. Milstein's correction vanishes (it is Euler–Maruyama); SRK is Rößler's SRID2 (strong
# order 1.5); its 4 drift stages are 3 distinct evaluations (the 4th stage sits at (t0, y0)).
TORCHSDE_METHODS = {"euler": (1, 1, 1), "milstein": (1, 1, 1), "srk": (1.5, 1.5, 3)}


class _ReverseSDEModule(torch.nn.Module):
    """The reverse SDE in forward time ``s = -t`` on flattened ``(batch, d)`` states:
    ``dy = -[f(t) y + g(t)^2 / sigma(t) eps(y, t)] ds + g(t) dW_s``.

    Drift evaluations are memoised per step by ``(s, y)``: torchsde's contract check evaluates
    the drift at the initial state and its SRK method re-evaluates earlier stages, and neither
    may cost a network call of its own.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, denoiser, sde, shape):
        super().__init__()
        self.denoiser, self.sde, self.shape = denoiser, sde, shape
        self._memo: list[tuple[float, Tensor, Tensor]] = []

    def clear(self) -> None:
        self._memo.clear()

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        key = float(s)
        for s_c, y_c, out in self._memo:
            if s_c == key and (y_c is y or torch.equal(y_c, y)):
                return out
        t = -s.to(torch.float64)
        sde = self.sde
        eps = self.denoiser.predict(y.reshape(self.shape), t).eps.reshape(y.shape)
        f, c = sde.f(t).to(y), (sde.g2(t) / sde.sigma(t)).to(y)
        out = -(f * y + c * eps)
        self._memo.append((key, y, out))
        return out

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        return self.sde.diffusion(-s.to(torch.float64)).to(y).expand(y.shape)


class _FlatBrownian(torchsde.BaseBrownian):
    """A view of a Brownian interval of shape ``(batch, *dims)`` as ``(batch, d)`` increments."""

    def __init__(self, bm: torchsde.BrownianInterval):
        self._bm = bm
        self._shape = (bm.shape[0], math.prod(bm.shape[1:]))

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self._bm(ta, tb, return_U=return_U, return_A=return_A)
        if isinstance(out, tuple):
            return tuple(o.reshape(self._shape) for o in out)
        return out.reshape(self._shape)

    def __repr__(self):
        return f"_FlatBrownian({self._bm!r})"

    @property
    def dtype(self):
        return self._bm.dtype

    @property
    def device(self):
        return self._bm.device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return self._bm.levy_area_approximation


def _brownian_path(noise, ts: Tensor, x: Tensor, levy_area: bool) -> torchsde.BaseBrownian:
    """The noise source's Brownian path; any other source seeds one from an auxiliary draw, so a
    seeded ``GaussianNoise`` still gives reproducible samples (a per-sample source seeds one path
    per sample from that sample's own draw)."""
    if isinstance(noise, BrownianNoise):
        if levy_area and not noise.levy_area:
            raise ValueError(
                "method 'srk' needs the space-time Levy area of the Brownian path; got "
                f"{noise!r}, expected BrownianNoise(seed, levy_area=True)"
            )
        return noise.brownian()
    rows = x.shape[0] if noise.per_sample else 1
    z = noise.extra(torch.empty(rows, 2, dtype=torch.float64)).cpu().numpy()
    seeds = [int.from_bytes(row.tobytes(), "little") % 2**63 for row in z]
    path = BrownianNoise(seed=seeds if noise.per_sample else seeds[0], levy_area=levy_area)
    path.bind(ts, x)
    return path.brownian()


class TorchsdeSampler(Sampler):
    r"""The reverse SDE solved by ``torchsde.sdeint`` on exactly the sampling grid.

    The reverse SDE (module docstring) in forward time ``s = -t``, as an Itô SDE with
    ``noise_type="diagonal"``: drift ``-[f(t) y + g(t)^2 / sigma(t) eps(y, t)]``, diffusion ``g(t)``
    on states flattened to ``(batch, d)`` inside the adapter. Each grid interval
    ``[s_i, s_{i+1}] = [-t_i, -t_{i+1}]`` is one fixed step of ``method``, driven by the noise
    source's Brownian path (``BrownianNoise.brownian()``, indexed by ``s``), so ``euler`` on a
    grid is our ``euler_maruyama`` on that grid and path, to rounding; ``srk`` needs
    ``BrownianNoise(seed, levy_area=True)``. A non-Brownian noise source seeds a fresh Brownian
    path from one auxiliary draw. The instance's ``order``, ``weak_order``
    and ``nfe_per_step`` are the method's (``TORCHSDE_METHODS``); the class attributes describe
    the default ``euler``.

    **Strong order** 1 for ``euler`` and ``milstein`` (additive noise: Milstein's correction is
    zero, computed derivative-free, so the two coincide), 1.5 for ``srk`` (Rößler 2010, SRID2).
    **Weak order** 1 (``euler``, ``milstein``), 1.5 (``srk``; at least its strong order).
    **NFE per step** 1 (``euler``, ``milstein``), 3 (``srk``), measured by the Denoiser.
    **Stochastic** yes. The loop over intervals reads tensors on the host (torchsde's own stepping
    does), so this backend makes host syncs; ``callback`` receives ``x0 = None``.
    **Reference** Li et al. 2020 and Kidger et al. 2021 (torchsde); Rößler 2010 (SRK).

    Args:
        method: ``"euler"``, ``"milstein"`` or ``"srk"``.
    """

    name = "torchsde"
    order = 1
    weak_order = 1
    stochastic = True
    nfe_per_step = 1
    reference = "li2020torchsde"

    def __init__(self, *, method: str = "euler"):
        if method not in TORCHSDE_METHODS:
            raise ValueError(
                f"method must be one of {sorted(TORCHSDE_METHODS)} for torchsde; got {method!r}"
            )
        self.method = method
        self.order, self.weak_order, self.nfe_per_step = TORCHSDE_METHODS[method]

    def options(self) -> dict[str, Any]:
        return {"method": self.method}

    def step(self, denoiser, sde, ts, i, x, state, noise):
        raise NotImplementedError(f"{self.name} integrates the grid with torchsde in run()")

    def run(
        self, denoiser, sde, ts, x, *, noise, callback=None, progress=True, save_trajectory=False
    ):
        module = _ReverseSDEModule(denoiser, sde, x.shape)
        bm = _FlatBrownian(_brownian_path(noise, ts, x, levy_area=self.method == "srk"))
        s = -ts.to("cpu", torch.float64)
        # derivative-free Milstein: g does not depend on x, so its correction is exactly zero
        # and no autograd graph is built for it
        options = {"grad_free": True} if self.method == "milstein" else None
        y = x.reshape(x.shape[0], -1)
        trajectory = [x] if save_trajectory else None
        grid = ts.tolist()
        stats: dict[str, Any] = {"method": self.method}
        for i in tqdm(range(len(grid) - 1), desc=self.name, disable=not progress, leave=False):
            module.clear()
            # dt above the interval: torchsde clips a step at the end time, so it takes exactly
            # one step and lands on the grid time
            dt = 2.0 * float(s[i + 1] - s[i])
            y = torchsde.sdeint(module, y, s[i : i + 2], bm=bm, method=self.method, dt=dt,
                                options=options)[-1]  # fmt: skip
            x_i = y.reshape(x.shape)
            if not bool(torch.isfinite(x_i).all()):
                raise FloatingPointError(
                    f"non-finite sample at step {i} (t={grid[i]:.6g} -> t_next={grid[i + 1]:.6g}) "
                    f"in {self.name!r} (method {self.method!r})"
                )
            stop = False
            if callback is not None:
                x_i, stop = run_callback(callback, StepInfo(i, grid[i], grid[i + 1], x_i, None),
                                         self.name)  # fmt: skip
                y = x_i.reshape(y.shape)
            if trajectory is not None:
                trajectory.append(x_i)
            if stop:
                stats["interrupted_at"] = i
                break
        traj = None if trajectory is None else torch.stack(trajectory)
        return y.reshape(x.shape), traj, stats
