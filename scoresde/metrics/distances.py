"""Distances between sample sets for low-dimensional exact problems."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(
    x: Tensor, y: Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    r"""Sliced 2-Wasserstein distance between two equal-size samples (Rabin et al. 2011):
    ``sqrt(E_theta W_2^2(theta.x, theta.y))``, 1-D distances by sorting, over random directions."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = (x @ theta.to(x.device)).sort(0)
    py, _ = (y @ theta.to(y.device)).sort(0)
    return float((px - py).pow(2).mean().sqrt())
