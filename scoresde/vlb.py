r"""The variational bound on the negative log-likelihood (Sohl-Dickstein et al. 2015; Ho et al.
2020, eq. 5), in bits/dim, for any process ``x_t = alpha_t x0 + sigma_t z`` on a grid of times.

On times ``0 < t_1 < ... < t_K`` (``x_{t_0} = x0``) the bound is

.. math::
    -\log p_\theta(x_0) \le L_T + \sum_{k=2}^{K} L_{k-1} + L_0,\qquad
    L_T = \mathrm{KL}(q(x_{t_K}|x_0)\,\|\,p(x_{t_K})),\quad
    L_0 = -\mathbb{E}\log p_\theta(x_0 | x_{t_1}),

    L_{k-1} = \mathbb{E}_{q(x_{t_k}|x_0)}\,
        \mathrm{KL}(q(x_{t_{k-1}} | x_{t_k}, x_0)\,\|\,p_\theta(x_{t_{k-1}} | x_{t_k})).

With ``s = t_{k-1}``, ``t = t_k``, ``alpha_{t|s} = alpha_t / alpha_s`` and
``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2`` (the forward step; DDPM's ``beta_t`` on a
VP schedule), the posterior ``q(x_s | x_t, x0)`` is Gaussian with (Kingma et al. 2021, VDM, eq. 23)

.. math::
    \tilde\mu = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2} x_t
              + \frac{\alpha_s\sigma_{t|s}^2}{\sigma_t^2} x_0,\qquad
    \tilde\sigma^2 = \frac{\sigma_{t|s}^2\sigma_s^2}{\sigma_t^2},

and the model step ``p_theta`` has the mean ``tilde mu`` with ``x0`` replaced by the model's
``x0`` prediction at ``(x_t, t)`` and the variance ``sigma_{t|s}^2`` (``variance="beta"``, Ho et
al.'s upper choice), ``tilde sigma^2`` (``"posterior"``, the lower choice) or the model's own
(``"learned"``: the log-linear interpolation between the two that a learned-range network predicts,
Nichol & Dhariwal 2021, eq. 15). Each KL is between Gaussians of isotropic covariance:
``d/2 (r - 1 - log r) + ||tilde mu - mu_theta||^2 / (2 sigma_p^2)`` with ``r = tilde sigma^2 /
sigma_p^2``. The decoder is ``N(x0_theta(x_{t_1}, t_1), sigma_{t_1}^2)`` (Ho et al. §3.3, whose
``sigma_1^2 = beta_1`` on DDPM's schedule), integrated over the 8-bit bins of width ``2/255`` on
``[-1, 1]`` with open outer bins (``decoder="discretized"``), or its density
(``decoder="gaussian"``, for continuous data).

The expectations over ``x_{t_k}`` are estimated with one draw per image and term, as in Ho et al.
and guided-diffusion's ``calc_bpd_loop``; the per-image bound is therefore an unbiased estimate,
and the mean over images carries a standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Denoiser
from .sde import SDE, DiscreteVPSDE
from .utils import check_int, expand_to

__all__ = ["vlb", "VLBResult", "VARIANCES", "DECODERS", "discretized_gaussian_log_likelihood"]

VARIANCES = ("beta", "posterior", "learned")
DECODERS = ("discretized", "gaussian")


@dataclass
class VLBResult:
    """The bound in bits/dim and its terms.

    Attributes:
        bpd: mean over the images of the per-image bound (bits/dim).
        stderr: standard error of ``bpd`` over the images.
        n: the number of images.
        per_image: ``(N,)`` per-image bound (bits/dim, float64).
        ts: ``(K,)`` the grid ``t_1 < ... < t_K`` (float64).
        prior: ``L_T`` (bits/dim, mean over images).
        terms: ``(K - 1,)`` ``L_{k-1}`` for ``k = 2..K`` (bits/dim, mean over images), so
            ``terms[k - 2]`` is the step from ``ts[k - 1]`` to ``ts[k - 2]``.
        decoder: ``L_0`` (bits/dim, mean over images).
        nfe: network calls (one batched call per chunk of terms).
    """

    bpd: float
    stderr: float
    n: int
    per_image: Tensor
    ts: Tensor
    prior: float
    terms: Tensor
    decoder: float
    nfe: int


def _default_grid(sde: SDE, n_steps: int | None) -> Tensor:
    """All train steps of a discrete schedule, or ``n_steps`` of them evenly spread (always the
    first and the last); ``n_steps`` uniform times on ``[t_min, T]`` for a continuous SDE."""
    if isinstance(sde, DiscreteVPSDE):
        n = sde.N if n_steps is None else n_steps
        if n > sde.N:
            raise ValueError(f"n_steps must be <= the schedule's N={sde.N}; got {n_steps}")
        idx = torch.linspace(0, sde.N - 1, n, dtype=torch.float64).round().unique()
        return sde.index_to_t(idx)
    n = 1000 if n_steps is None else n_steps
    return torch.linspace(sde.t_min, sde.T, n, dtype=torch.float64)


def _log_ndtr_diff(a: Tensor, b: Tensor) -> Tensor:
    """``log(Phi(b) - Phi(a))`` for ``a < b``, accurate in both tails (reflect to the side
    where the CDF is small)."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    l_hi, l_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return l_hi + torch.log1p(-torch.exp(l_lo - l_hi))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``log P(x0)`` per element for 8-bit data on ``[-1, 1]`` under ``N(mean, std^2)``
    integrated over the bin ``[x0 - 1/255, x0 + 1/255]`` (the outer bins open to ``-inf`` and
    ``+inf``; Ho et al. 2020, eq. 13)."""
    a = torch.where(x0 <= -1 + 1e-3, -math.inf, (x0 - 1 / 255 - mean) / std)
    b = torch.where(x0 >= 1 - 1e-3, math.inf, (x0 + 1 / 255 - mean) / std)
    return _log_ndtr_diff(a, b)


def _check_8bit(x0: Tensor) -> None:
    k = (x0 + 1) * 127.5
    if x0.min() < -1 or x0.max() > 1 or (k - k.round()).abs().max() > 1e-3:
        raise ValueError(
            "decoder='discretized' needs 8-bit data mapped to [-1, 1] (k / 127.5 - 1 for "
            "k = 0..255); x0 holds other values (use decoder='gaussian' for continuous data)"
        )


def _pair_terms(
    denoiser, x, k, ts, alpha, sigma, var_ts, var_post, c_x0, variance, decoder, generator
) -> Tensor:
    """Nats of one term per row of ``x``: ``L_0`` where ``k == 0``, else ``L_k``'s KL, each from
    one draw of ``x_{t_k}`` and one batched network call."""

    def on_x(c: Tensor) -> Tensor:
        return expand_to(c.to(x.device, torch.float64), x)

    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_t = (on_x(alpha[k]) * x + on_x(sigma[k]) * z).to(x.dtype)
    pred = denoiser.predict(x_t, ts[k].to(x.device))
    x0_hat = pred.x0.double()
    x = x.double()
    km1 = (k - 1).clamp(min=0)
    if variance == "learned":  # log-linear between the two (Nichol & Dhariwal 2021, eq. 15)
        v = 0.5 * (pred.var_interp.double() + 1.0)  # the network's [-1, 1] output as a weight
        var_p = torch.exp(v * on_x(var_ts[km1].log()) + (1 - v) * on_x(var_post[km1].log()))
    else:
        var_p = on_x((var_ts if variance == "beta" else var_post)[km1])
    ratio = on_x(var_post[km1]) / var_p
    kl = 0.5 * (ratio - 1 - ratio.log() + on_x(c_x0[km1]) ** 2 * (x - x0_hat) ** 2 / var_p)
    std0 = on_x(sigma[0]).expand_as(x)
    if decoder == "discretized":
        nll0 = -discretized_gaussian_log_likelihood(x, x0_hat, std0)
    else:
        nll0 = 0.5 * (math.log(2 * math.pi) + 2 * std0.log() + ((x - x0_hat) / std0) ** 2)
    out = torch.where(on_x((k == 0).double()) > 0, nll0, kl)
    return out.flatten(1).sum(1).cpu()


def vlb(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    sde: SDE | None = None,
    n_steps: int | None = None,
    ts: Tensor | None = None,
    variance: str = "beta",
    decoder: str = "discretized",
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> VLBResult:
    """The variational bound of ``denoiser`` on the data ``x0`` (module docstring), bits/dim.

    Args:
        denoiser: the model; its network is called on ``x_t`` at every grid time.
        x0: ``(N, *dims)`` data; 8-bit images as ``k / 127.5 - 1`` with ``decoder="discretized"``.
        sde: defaults to ``denoiser.sde`` (and must be the same process).
        n_steps: ``K``, the number of grid times: a sub-sequence of a discrete schedule's train
            steps (default all ``N``, Ho et al.'s bound), or uniform times of a continuous SDE
            (default 1000).
        ts: the increasing grid ``t_1 < ... < t_K`` itself, instead of ``n_steps``.
        variance: ``"beta"``, ``"posterior"`` or ``"learned"`` (module docstring).
        decoder: ``"discretized"`` (8-bit data) or ``"gaussian"`` (a density, continuous data).
        batch_size: network inputs per call; the terms of several grid times share a call.
        generator: RNG of the ``x_t`` draws.
        progress: a tqdm bar over the network calls.

    Raises:
        ValueError: an unknown ``variance`` / ``decoder``, a grid that is not increasing inside
            ``(0, T]``, non-8-bit data with the discretized decoder, or ``"learned"`` with a
            denoiser that predicts no variance (``Denoiser(..., learned_variance=True)``).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {list(VARIANCES)}; got {variance!r}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {list(DECODERS)}; got {decoder!r}")
    if variance == "learned" and not getattr(denoiser, "learned_variance", False):
        raise ValueError(
            "variance='learned' needs a denoiser whose network predicts its variance "
            "(learned-range output); this one predicts none: use 'beta' or 'posterior'"
        )
    sde = denoiser.process(sde)
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        got = f"{x0.dtype} of shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else type(x0)
        raise ValueError(f"x0 must be a floating-point tensor of shape (N, *dims); got {got}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 must be finite; it holds NaN or inf")
    if decoder == "discretized":
        _check_8bit(x0)
    batch_size = check_int("batch_size", batch_size, low=1)
    if ts is None:
        if n_steps is not None:
            n_steps = check_int("n_steps", n_steps, low=2)
        ts = _default_grid(sde, n_steps)
    ts = torch.as_tensor(ts, dtype=torch.float64).flatten()
    if ts.numel() < 2 or not bool((ts[1:] > ts[:-1]).all()) or ts[0] <= 0 or ts[-1] > sde.T:
        raise ValueError(
            f"ts must hold at least 2 strictly increasing times inside (0, T={sde.T}]; got {ts}"
        )

    n, d, K = x0.shape[0], x0[0].numel(), ts.numel()
    alpha, sigma = sde.alpha(ts), sde.sigma(ts)
    # forward step s -> t (s = ts[k-1], t = ts[k]) and its posterior, k = 1..K-1
    a_ts = alpha[1:] / alpha[:-1]
    var_ts = sigma[1:] ** 2 - a_ts**2 * sigma[:-1] ** 2
    var_post = var_ts * sigma[:-1] ** 2 / sigma[1:] ** 2
    c_x0 = alpha[:-1] * var_ts / sigma[1:] ** 2  # weight of x0 in the posterior mean

    # every (image, grid time) pair; the network sees them in chunks of batch_size
    img_of = torch.arange(n).repeat(K)
    k_of = torch.arange(K).repeat_interleave(n)
    per_pair = torch.empty(n * K, dtype=torch.float64)
    denoiser.reset_nfe()
    with torch.inference_mode():
        for start in tqdm(range(0, n * K, batch_size), disable=not progress, desc="vlb"):
            sl = slice(start, start + batch_size)
            per_pair[sl] = _pair_terms(
                denoiser, x0[img_of[sl]], k_of[sl], ts, alpha, sigma, var_ts, var_post, c_x0,
                variance, decoder, generator,
            )  # fmt: skip
    per_term = per_pair.reshape(K, n).T  # (n, K) nats: column 0 is L_0, column k is L_{k}
    prior_std = sde.prior_std
    m2 = x0.double().flatten(1).pow(2).sum(1).cpu()
    a_T, s_T = float(alpha[-1]), float(sigma[-1])
    prior = 0.5 * (
        (a_T**2 * m2 + d * s_T**2) / prior_std**2 - d - d * math.log(s_T**2 / prior_std**2)
    )
    nats = prior + per_term.sum(1)
    to_bpd = 1.0 / (d * math.log(2.0))
    per_image = nats * to_bpd
    stderr = float(per_image.std() / math.sqrt(n)) if n > 1 else float("nan")
    return VLBResult(
        bpd=float(per_image.mean()),
        stderr=stderr,
        n=n,
        per_image=per_image,
        ts=ts,
        prior=float(prior.mean()) * to_bpd,
        terms=per_term[:, 1:].mean(0) * to_bpd,
        decoder=float(per_term[:, 0].mean()) * to_bpd,
        nfe=denoiser.nfe,
    )
