r"""Log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

Along the PF-ODE ``dx/dt = F(x, t) = f(t) x + g(t)^2 / (2 sigma(t)) eps_theta(x, t)`` the
instantaneous change of variables (Chen et al. 2018, Thm. 1) gives

.. math::

    \log p_{t_{min}}(x) = \log p_T(x_T) + \int_{t_{min}}^{T} \nabla\!\cdot F(x_t, t)\,dt,

integrated jointly with ``x_t`` from ``t_min`` to ``T`` by ``torchdiffeq.odeint``.

The solve runs in the exactly equivalent scaled form (Karras et al. 2022, eq. 4; as in
:func:`scoresde.exact.reference_solution`): with ``y = x / alpha`` and
``lambda_ = log(alpha / sigma)``, ``dy/dlambda = G(y) = D(alpha y, t(lambda)) - y`` with ``D``
the model's ``x0``, and ``log p_x = log p_y - d log alpha``. Its right-hand side is smooth even
where the schedule is not: a discrete DDPM schedule's ``log alpha`` has a kink at each of its
``N`` steps, which an adaptive solver in ``t`` would have to resolve one by one.

The divergence is exact (``d`` vector-Jacobian products, for small ``d``) or the Hutchinson
estimate ``v^T (dG/dy) v`` with one Rademacher probe ``v`` held fixed along the solve (FFJORD,
Grathwohl et al. 2019), unbiased for ``log p``. ``log p_T`` is the SDE's prior density unless
``prior_logp`` is given.

Bits per dimension of 8-bit images (Ho et al. 2020, Sec. 4; Song et al. 2021, App. D.2): pixels
``u in {0..255}`` are dequantised uniformly, ``x = (u + U(-1/2, 1/2)) / 127.5 - 1``, so each
training value ``u / 127.5 - 1`` sits at the centre of its bin of width ``1/127.5`` and

.. math:: \text{bpd} = -\frac{\log p(x)}{d \ln 2} + \log_2 127.5,

an upper bound (in expectation over the dequantisation) on the discrete data's NLL in bits/dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from .data import images_to_float
from .denoiser import Denoiser
from .sde import SDE
from .utils import check_int, check_real
from .vlb import VLBResult, vlb  # the variational bound, the other likelihood figure

__all__ = [
    "LogProbResult", "NLLResult", "VLBResult", "log_prob", "image_nll_bpd", "vlb", "DIVERGENCES",
]  # fmt: skip

DIVERGENCES = ("auto", "exact", "hutchinson")
# "auto" takes the exact divergence up to this many dimensions (d vector-Jacobian products)
EXACT_MAX_DIM = 16


@dataclass
class LogProbResult:
    """``logp = prior_logp + delta_logp``, per sample (nats); ``z`` is ``x`` carried to ``T``;
    ``nfe`` the network calls of the solve."""

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int


def log_prob(
    denoiser: Denoiser,
    x: Tensor,
    *,
    sde: SDE | None = None,
    divergence: str = "auto",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
) -> LogProbResult:
    """``log p_{t_min}(x)`` under the model, per sample, through the PF-ODE.

    Args:
        denoiser: the model (its network is called with gradients w.r.t. ``x`` only).
        x: ``(batch, *dims)`` points at time ``sde.t_min``.
        sde: defaults to ``denoiser.sde``.
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact when
            ``prod(dims) <= 16``).
        method, rtol, atol: ``torchdiffeq.odeint`` solver and tolerances (score_sde uses
            RK45 at 1e-5).
        generator: RNG of the Hutchinson probe.
        prior_logp: ``log p_T(z)`` per sample; default ``sde.prior_logp``.
    """
    sde = denoiser.process(sde)
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {list(DIVERGENCES)}; got {divergence!r}")
    rtol = check_real("rtol", rtol, low=0.0, low_open=True)
    atol = check_real("atol", atol, low=0.0, low_open=True)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise ValueError("x must be a floating-point tensor of shape (batch, *dims)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite; it holds NaN or inf")
    d = x[0].numel()
    exact = divergence == "exact" or (divergence == "auto" and d <= EXACT_MAX_DIM)
    probe = None
    if not exact:
        gen_device = generator.device if generator is not None else x.device
        bits = torch.randint(0, 2, x.shape, generator=generator, device=gen_device)
        probe = (2.0 * bits - 1.0).to(x.device, x.dtype)

    lam_start, lam_end = float(sde.lambda_(sde.t_min)), float(sde.lambda_(sde.T))
    log_alpha_start, log_alpha_end = float(sde.log_alpha(sde.t_min)), float(sde.log_alpha(sde.T))

    def rhs(lam, state):
        y, _ = state
        t = sde.inverse_lambda(lam.reshape(()).to(torch.float64)).clamp(sde.t_min, sde.T)
        alpha = sde.alpha(t).to(y.dtype)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            drift = denoiser.x0(alpha * y, t) - y  # dy/dlambda = D(x, t) - y
            if exact:
                flat = drift.flatten(1)
                div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
                for i in range(d):
                    (grad,) = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=i < d - 1)
                    div = div + grad.flatten(1)[:, i]
            else:
                (grad,) = torch.autograd.grad((drift * probe).sum(), y)
                div = (grad * probe).flatten(1).sum(1)
        # The adaptive solver rejects a trial step whose stages are not finite, so a NaN is not
        # an error here; the first one at a finite state and time is kept to name it if the
        # solve fails (the solver syncs every step anyway).
        if not first_bad and bool(torch.isfinite(y).all() and torch.isfinite(t)):
            if not bool(torch.isfinite(drift).all() and torch.isfinite(div).all()):
                first_bad.append(f"t={float(t):.6g} (lambda={float(lam):.6g})")
        return drift.detach(), div.detach()

    denoiser.reset_nfe()
    lams = torch.tensor([lam_start, lam_end], dtype=x.dtype, device=x.device)
    zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    first_bad: list[str] = []
    try:
        ys, deltas = odeint(
            rhs, (x / math.exp(log_alpha_start), zero), lams, method=method, rtol=rtol, atol=atol
        )
    except AssertionError as err:  # torchdiffeq's "underflow in dt": the step size collapsed
        where = first_bad[0] if first_bad else "an unknown time"
        raise FloatingPointError(
            f"non-finite model output in log_prob at {where}; the {method!r} solve from "
            f"t_min={sde.t_min:.6g} to T={sde.T:.6g} could not step past it ({err})"
        ) from err
    if not bool(torch.isfinite(ys[-1]).all() and torch.isfinite(deltas[-1]).all()):
        where = first_bad[0] if first_bad else "an unknown time"
        raise FloatingPointError(
            f"non-finite result of log_prob: the model output first became non-finite at {where}"
        )
    z = ys[-1] * math.exp(log_alpha_end)
    # log p_x(x) = log p_y(y) - d log alpha at both ends of the solve
    delta = deltas[-1] + d * (log_alpha_end - log_alpha_start)
    prior = (sde.prior_logp if prior_logp is None else prior_logp)(z).to(x.dtype)
    return LogProbResult(
        logp=prior + delta, prior_logp=prior, delta_logp=delta, z=z, nfe=denoiser.nfe
    )


@dataclass
class NLLResult:
    """Mean bits/dim over ``n`` images, its standard error, the per-image values and the mean
    NFE per batch solve."""

    bpd: float
    stderr: float
    n: int
    per_image: Tensor
    nfe_mean: float


def image_nll_bpd(
    denoiser: Denoiser,
    images: Tensor,
    *,
    batch_size: int = 100,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> NLLResult:
    """Negative log-likelihood in bits/dim of ``uint8`` images ``(N, C, H, W)`` (see the module
    docstring for the dequantisation and the ``log2(127.5)`` offset); Hutchinson divergence."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
    batch_size = check_int("batch_size", batch_size, low=1)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    d = images[0].numel()
    per_image, nfes = [], []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc="nll"):
        u = images[start : start + batch_size]
        jitter = torch.rand(u.shape, generator=generator) - 0.5
        x = (images_to_float(u) + jitter / 127.5).to(device)
        res = log_prob(denoiser, x, divergence="hutchinson", method=method, rtol=rtol, atol=atol,
                       generator=generator)  # fmt: skip
        per_image.append((-res.logp / (d * math.log(2)) + math.log2(127.5)).cpu())
        nfes.append(res.nfe)
    bpd = torch.cat(per_image).to(torch.float64)
    n = bpd.numel()
    stderr = float(bpd.std() / math.sqrt(n)) if n > 1 else float("nan")
    return NLLResult(
        bpd=float(bpd.mean()), stderr=stderr, n=n, per_image=bpd, nfe_mean=sum(nfes) / len(nfes)
    )
