r"""Sample-based distances between distributions, for the low-dimensional exact problems.

- :func:`sliced_wasserstein`: :math:`SW_p(\mu, \nu) = (\mathbb{E}_{\theta \sim U(S^{d-1})}
  W_p^p(\theta_\#\mu, \theta_\#\nu))^{1/p}` (Rabin et al. 2011; Bonneel et al. 2015), with the
  expectation over ``n_projections`` random directions and each 1-D distance computed exactly
  between the two empirical measures from their sorted projections.
- :func:`mmd2`: squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012,
  "A kernel two-sample test", eqs. 3 and 5), unbiased U-statistic by default.

Both take samples ``(n, *event_shape)`` and flatten the event dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils import check_int, check_real

__all__ = ["sliced_wasserstein", "wasserstein_1d", "mmd2"]


def _as_2d(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of samples (n >= 1, *event_shape); got {got}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or inf")
    return x


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same event size; got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y.to(x.device)


def _sort_rows_(a: Tensor) -> Tensor:
    """Sort each row of the contiguous ``a`` ``(L, n)`` in place and return it. On the CPU this
    goes through a numpy view: numpy's vectorised sort is ~15x faster than ``torch.sort`` on
    float64 rows of 10^4 (torch 2.13, numpy 2.4), and sorting in place avoids copying."""
    if a.device.type == "cpu":
        a.numpy().sort(axis=-1)
        return a
    return a.sort(-1).values


def _wasserstein_rows(us: Tensor, vs: Tensor, p: float) -> Tensor:
    """``W_p^p`` between the empirical measures of the sorted rows of ``us`` and ``vs``."""
    n, m = us.shape[-1], vs.shape[-1]
    if n == m:
        return (us - vs).abs().pow(p).mean(-1)
    # Breakpoints as integers over the common denominator n m, so that i/n and j/m that are
    # equal as fractions merge exactly (no float round-off in the merge).
    dev = us.device
    k = torch.cat(
        [torch.arange(1, n + 1, device=dev) * m, torch.arange(1, m + 1, device=dev) * n]
    ).unique()
    prev = torch.cat([k.new_zeros(1), k[:-1]])
    widths = (k - prev).to(torch.float64) / (n * m)
    iu = torch.div(prev + k, 2 * m, rounding_mode="floor")  # floor(midpoint * n)
    iv = torch.div(prev + k, 2 * n, rounding_mode="floor")
    return ((us[:, iu] - vs[:, iv]).abs().pow(p) * widths).sum(-1)


def wasserstein_1d(u: Tensor, v: Tensor, *, p: float = 2.0) -> Tensor:
    r"""Exact :math:`W_p^p` between the empirical measures of the columns of ``u`` ``(n, L)`` and
    ``v`` ``(m, L)``: :math:`\int_0^1 |F_u^{-1}(s) - F_v^{-1}(s)|^p ds` with both quantile
    functions piecewise constant, integrated over the merged breakpoints ``{i/n} U {j/m}``.
    Returns the ``L`` values."""
    us = _sort_rows_(u.detach().T.contiguous().clone())
    vs = _sort_rows_(v.detach().T.contiguous().clone())
    return _wasserstein_rows(us, vs, p)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> float:
    r"""Sliced ``p``-Wasserstein distance between the samples ``x`` ``(n, ...)`` and ``y``
    ``(m, ...)``.

    Directions are ``n_projections`` normalised standard-normal draws from ``generator`` (pass
    one for reproducible values; the Monte-Carlo error over directions is part of the estimate).
    Between two samples of the same distribution the estimate decays like ``n^{-1/2}`` for
    ``p = 1`` (tested), which sets the noise floor against which samplers can be compared.

    Args:
        x, y: samples with the same event size.
        n_projections: number of random directions (>= 1).
        p: the order, >= 1.
        generator: RNG of the directions (drawn on the CPU, float64).
    """
    x, y = _pair(x, y)
    check_int("n_projections", n_projections, low=1)
    p = check_real("p", p, low=1.0)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    theta_t = theta.T.contiguous()
    # projections laid out (L, n): freshly allocated and contiguous, so they sort in place
    us, vs = _sort_rows_(theta_t @ x.T), _sort_rows_(theta_t @ y.T)
    return float(_wasserstein_rows(us, vs, p).mean() ** (1.0 / p))


def mmd2(x: Tensor, y: Tensor, *, bandwidth: float | None = None, unbiased: bool = True) -> float:
    r"""Squared MMD with the Gaussian kernel ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``.

    The unbiased estimator (Gretton et al. 2012, eq. 3) averages ``k`` over distinct pairs within
    each sample, so it is centred on the population value and may be negative; ``unbiased=False``
    gives the V-statistic (eq. 5). Memory is ``O(n m)``.

    Args:
        x, y: samples with the same event size (at least 2 each when unbiased).
        bandwidth: kernel length scale; default the median pairwise distance of the pooled
            sample (the median heuristic, Gretton et al. 2012, Sec. 8).
        unbiased: U-statistic (default) or V-statistic.
    """
    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in x and y; got {n} and {m}")
    if bandwidth is None:
        z = torch.cat([x, y])
        d = torch.cdist(z, z)
        bandwidth = float(
            d[torch.triu_indices(len(z), len(z), 1, device=z.device).unbind()].median()
        )
        if bandwidth <= 0.0:
            raise ValueError(
                "the median heuristic gave bandwidth 0 (all samples equal); pass bandwidth"
            )
    else:
        bandwidth = check_real("bandwidth", bandwidth, low=0.0, low_open=True)

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * bandwidth**2))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if unbiased:
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return float(xx + yy - 2.0 * kxy.mean())
