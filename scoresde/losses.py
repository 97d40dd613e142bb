r"""Denoising score matching (Vincent 2011; Song et al. 2021), in any parameterization, and
sliced score matching (Song et al. 2019, :func:`ssm_loss`).

For data ``x0``, a time ``t ~ p(t)`` on ``[t_min, T]`` and ``eps ~ N(0, I)``, the network sees
``x_t = alpha_t x0 + sigma_t eps`` and regresses its *native* output ``F`` against the matching
target ``y = from_x0_eps(x0, eps, alpha_t, sigma_t, parameterization)`` (eps, x0, v or the
conditional score ``-eps / sigma_t``). Every weighting is the same objective up to a factor
``w(t)``:

.. math::

    J = \frac{1}{T - t_{min}} \int_{t_{min}}^{T} w(t)\,
        \mathbb{E}\Big[\tfrac{1}{d}\|F(x_t, t) - y\|^2\Big]\,dt
      \approx \frac{1}{B}\sum_b \frac{w(t_b)}{(T - t_{min})\,p(t_b)}\,\tfrac{1}{d}\|F_b - y_b\|^2,

estimated without bias by drawing ``t`` from any density ``p`` (importance sampling). The error in
``eps`` is ``k(t)`` times the native error, with ``k = 1`` (eps), ``-alpha/sigma`` (x0),
``alpha/(alpha^2 + sigma^2)`` (v) and ``-sigma`` (score), and the weightings are

- ``"none"``: ``w = 1``, the plain MSE of the native output (DDPM's ``L_simple`` for eps);
- ``"snr"``:  ``w = k^2``, the eps MSE, i.e. the x0 MSE weighted by ``SNR = alpha^2/sigma^2``
  (Kingma et al. 2021, VDM, eq. 13 with a constant ``dSNR`` factor dropped);
- ``"likelihood"``: ``w = g(t)^2 k^2 / sigma^2 = g(t)^2 ||score error||^2 / ||native error||^2``,
  Song, Durkan, Murray & Ermon 2021 (eq. 7 / Thm. 1): then
  ``(T - t_min) J / 2 * d`` is the score-matching term of their bound on ``-log p`` (nats).

Importance sampling for the likelihood weighting (Song et al. 2021, Sec. 5): since
``g^2 / sigma^2 = d log sigma^2/dt - 2 d log alpha/dt = -2 d lambda/dt``, the proposal
``p(t) ∝ g^2/sigma^2`` is *uniform in* ``lambda_ = log(alpha/sigma)``; :class:`LambdaTimeSampler`
draws it through ``sde.inverse_lambda`` for every SDE, and the eps-parameterised likelihood
weight ``w/p`` becomes the constant ``2 (lambda(t_min) - lambda(T)) (T - t_min)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser
from .parameterization import Parameterization, derivatives_for, from_x0_eps
from .sde import SDE
from .utils import as_time, check_bool, check_int, expand_to

__all__ = [
    "dsm_loss", "ssm_loss", "TimeSampler", "UniformTimeSampler", "LambdaTimeSampler",
    "WEIGHTINGS", "SSM_WEIGHTINGS",
]  # fmt: skip

WEIGHTINGS = ("none", "snr", "likelihood")
SSM_WEIGHTINGS = ("sigma2", "likelihood")


class TimeSampler:
    """A density ``p(t)`` on ``[t_min, T]``: :meth:`sample` draws float64 times, :meth:`density`
    evaluates ``p``."""

    name: str

    def sample(self, sde: SDE, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def density(self, sde: SDE, t: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @staticmethod
    def parse(value: TimeSampler | str | None) -> TimeSampler:
        if value is None:
            return UniformTimeSampler()
        if isinstance(value, TimeSampler):
            return value
        choices = {"uniform": UniformTimeSampler, "lambda": LambdaTimeSampler}
        if value not in choices:
            raise ValueError(
                f"t_sampler must be a TimeSampler or one of {sorted(choices)}; got {value!r}"
            )
        return choices[value]()


class UniformTimeSampler(TimeSampler):
    """``t ~ U(t_min, T)``."""

    name = "uniform"

    def sample(self, sde, n, *, generator=None):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return sde.t_min + (sde.T - sde.t_min) * u

    def density(self, sde, t):
        return torch.full_like(as_time(t), 1.0 / (sde.T - sde.t_min))


class LambdaTimeSampler(TimeSampler):
    r"""``lambda_(t) ~ U(lambda_(T), lambda_(t_min))``, i.e. ``p(t) ∝ g(t)^2 / sigma(t)^2``: the
    importance distribution of the likelihood weighting (Song et al. 2021, Sec. 5), for any SDE.

    ``p(t) = -lambda'(t) / Lambda = g^2 / (2 sigma^2 Lambda)`` with
    ``Lambda = lambda(t_min) - lambda(T)``.
    """

    name = "lambda"

    def _range(self, sde):
        return float(sde.lambda_(sde.T)), float(sde.lambda_(sde.t_min))

    def sample(self, sde, n, *, generator=None):
        lo, hi = self._range(sde)
        lam = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
        return sde.inverse_lambda(lam).clamp(sde.t_min, sde.T)

    def density(self, sde, t):
        lo, hi = self._range(sde)
        t = as_time(t)
        return sde.g2(t) / (2.0 * sde.sigma(t) ** 2 * (hi - lo))


def _eps_error_factor(p: Parameterization, alpha: Tensor, sigma: Tensor, sde, t) -> Tensor:
    """``k(t)``: the eps error per unit of native error (float64)."""
    if p is Parameterization.EPS:
        return torch.ones_like(alpha)
    if p is Parameterization.X0:
        return -alpha / sigma
    if p is Parameterization.V:
        return alpha / (alpha**2 + sigma**2)
    if p is Parameterization.SCORE:
        return -sigma
    if p is Parameterization.FLOW:  # eps = (alpha u - alpha' x) / (alpha sigma' - sigma alpha')
        return alpha / (alpha * sde.d_sigma(t) - sigma * sde.d_alpha(t))
    raise TypeError(f"parameterization must be a Parameterization; got {p!r}")


def loss_weight(
    denoiser: Denoiser, t: Tensor, *, weighting: str, t_sampler: TimeSampler | str | None = None
) -> Tensor:
    """The float64 per-sample factor ``w(t) / ((T - t_min) p(t))`` of :func:`dsm_loss`."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}; got {weighting!r}")
    sde = denoiser.sde
    t_sampler = TimeSampler.parse(t_sampler)
    t = as_time(t)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    if weighting == "none":
        w = torch.ones_like(t)
    else:
        w = _eps_error_factor(denoiser.parameterization, alpha, sigma, sde, t) ** 2
        if weighting == "likelihood":
            w = w * sde.g2(t) / sigma**2
    return w / ((sde.T - sde.t_min) * t_sampler.density(sde, t))


def dsm_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    weighting: str = "none",
    t_sampler: TimeSampler | str | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    class_labels: Tensor | None = None,
    reduce: str = "mean",
) -> Tensor:
    """Denoising score-matching loss of ``denoiser`` on the clean batch ``x0`` (see the module
    docstring for the equations).

    Args:
        denoiser: the network with its SDE, parameterization and time input; the network is
            called once, with gradients, on ``(x_t, time_input(t))``.
        x0: clean data ``(batch, *dims)``.
        weighting: ``"none"``, ``"snr"`` or ``"likelihood"``.
        t_sampler: the density of ``t`` (``"uniform"`` default, or ``"lambda"``: importance
            sampling of the likelihood weighting); the weight corrects for it.
        t: ``(batch,)`` times to use instead of drawing them (they count as draws of
            ``t_sampler``).
        noise: ``eps`` to use instead of drawing it.
        generator: RNG for ``t`` and ``eps``.
        class_labels: passed to the network as ``class_labels=`` (class-conditional UNet).
        reduce: ``"mean"`` over the batch, or ``"none"`` for the ``(batch,)`` per-sample losses.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none'; got {reduce!r}")
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a scoresde.Denoiser; got {type(denoiser).__name__}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise ValueError("x0 must be a floating-point tensor of shape (batch, *dims)")
    sde, p = denoiser.sde, denoiser.parameterization
    t_sampler = TimeSampler.parse(t_sampler)
    b = x0.shape[0]
    if t is None:
        t = t_sampler.sample(sde, b, generator=generator)
    t = as_time(t)
    if t.shape != (b,):
        raise ValueError(f"t must have shape ({b},) to match x0; got {tuple(t.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device
                            if generator is not None else x0.device).to(x0.device)  # fmt: skip
    t = t.to(x0.device)
    alpha, sigma = expand_to(sde.alpha(t), x0), expand_to(sde.sigma(t), x0)
    x_t = alpha * x0 + sigma * noise
    target = from_x0_eps(x0, noise, alpha, sigma, p, *derivatives_for(p, sde, t, x0))
    t_in = denoiser.time_input(sde, t).to(x0.dtype)
    out = (
        denoiser.net(x_t, t_in)
        if class_labels is None
        else denoiser.net(x_t, t_in, class_labels=class_labels)
    )
    if out.shape != x0.shape:
        raise ValueError(
            f"the network returned shape {tuple(out.shape)} for input {tuple(x0.shape)}"
        )
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    weight = loss_weight(denoiser, t, weighting=weighting, t_sampler=t_sampler).to(per_sample)
    losses = weight * per_sample
    return losses.mean() if reduce == "mean" else losses


def ssm_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    n_projections: int = 1,
    variance_reduction: bool = True,
    weighting: str = "sigma2",
    t_sampler: TimeSampler | str | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduce: str = "mean",
) -> Tensor:
    r"""Sliced score matching (Song, Garg, Shi & Ermon 2019) of a noise-conditional score model.

    For ``x_t = alpha_t x0 + sigma_t eps`` (a draw of ``p_t``; the data enter only through it,
    no denoising target is used) and projections ``v ~ N(0, I)``, with ``s = score(x_t, t)``:

    .. math::
        J_{SSM} = \mathbb{E}\big[v^\top \nabla_x s\, v + \tfrac12 (v^\top s)^2\big],\qquad
        J_{SSM-VR} = \mathbb{E}\big[v^\top \nabla_x s\, v + \tfrac12 \|s\|^2\big]

    (their eqs. 7 and 9; ``variance_reduction`` picks the second, which integrates the
    ``(v^T s)^2`` term in closed form). Both equal the Fisher divergence
    ``1/2 E ||s - grad log p_t||^2`` minus a constant that does not depend on the model
    (their Thm. 1), for every ``t``. ``v^T (grad s) v`` is one forward-mode Jacobian-vector
    product (``torch.func.jvp``) per projection, so a step costs about two network passes per
    projection plus the backward pass. The noise levels are combined as in :func:`dsm_loss`,
    ``w(t) / ((T - t_min) p(t))`` times the per-dimension objective, with ``w = sigma_t^2``
    (``"sigma2"``: NCSN's ``lambda(sigma) = sigma^2``, Song & Ermon 2019, which makes it
    :func:`dsm_loss`'s eps MSE up to a constant) or ``w = g(t)^2`` (``"likelihood"``).

    Args:
        denoiser: the model, in any parameterization (its score is taken).
        x0: clean data ``(batch, *dims)``.
        n_projections: projections ``v`` per sample (averaged).
        variance_reduction: use ``||s||^2 / 2`` in place of ``(v^T s)^2 / 2``.
        weighting: ``"sigma2"`` or ``"likelihood"``.
        t_sampler, t, noise, generator, reduce: as in :func:`dsm_loss`.
        projections: ``(n_projections, batch, *dims)`` ``v`` to use instead of drawing them.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none'; got {reduce!r}")
    if weighting not in SSM_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(SSM_WEIGHTINGS)}; got {weighting!r}")
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a scoresde.Denoiser; got {type(denoiser).__name__}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise ValueError("x0 must be a floating-point tensor of shape (batch, *dims)")
    n_projections = check_int("n_projections", n_projections, low=1)
    variance_reduction = check_bool("variance_reduction", variance_reduction)
    sde = denoiser.sde
    t_sampler = TimeSampler.parse(t_sampler)
    b = x0.shape[0]
    t = t_sampler.sample(sde, b, generator=generator) if t is None else as_time(t)
    if t.shape != (b,):
        raise ValueError(f"t must have shape ({b},) to match x0; got {tuple(t.shape)}")

    def draw(shape):
        device = generator.device if generator is not None else x0.device
        return torch.randn(shape, generator=generator, dtype=x0.dtype, device=device).to(x0.device)

    noise = draw(x0.shape) if noise is None else noise
    if projections is None:
        projections = draw((n_projections, *x0.shape))
    if projections.shape != (n_projections, *x0.shape):
        raise ValueError(
            f"projections must have shape {(n_projections, *x0.shape)}; got "
            f"{tuple(projections.shape)}"
        )
    t = t.to(x0.device)
    x_t = (
        expand_to(sde.alpha(t), x0).to(x0.dtype) * x0
        + expand_to(sde.sigma(t), x0).to(x0.dtype) * noise
    )

    def score(x):
        return denoiser.score(x, t).to(x.dtype)

    per_sample = 0.0
    for v in projections:
        s, jv = torch.func.jvp(score, (x_t,), (v,))
        second = s.pow(2) if variance_reduction else (v * s).flatten(1).sum(1, keepdim=True) ** 2
        per_sample = per_sample + (v * jv).flatten(1).sum(1) + 0.5 * second.flatten(1).sum(1)
    per_sample = per_sample / (n_projections * x0[0].numel())
    w = sde.sigma(t) ** 2 if weighting == "sigma2" else sde.g2(t)
    weight = w / ((sde.T - sde.t_min) * t_sampler.density(sde, t))
    losses = weight.to(per_sample) * per_sample
    return losses.mean() if reduce == "mean" else losses
