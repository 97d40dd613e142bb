"""Test helpers: empirical convergence order, a host-sync detector, the exact problems."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.overrides import TorchFunctionMode

from scoresde.exact import Gaussian, GaussianMixture, reference_solution, ring_mixture

__all__ = [
    "empirical_order",
    "format_table",
    "NoHostSync",
    "Gaussian",
    "GaussianMixture",
    "reference_solution",
    "ring_mixture",
    "gmm_2d",
]


def empirical_order(step_counts: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope ``p`` of ``log(error) = c - p log(n)``: the observed order."""
    x = torch.tensor([math.log(n) for n in step_counts], dtype=torch.float64)
    y = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    xm, ym = x.mean(), y.mean()
    return float(-((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())


def format_table(step_counts, errors) -> str:
    rows = [f"  n={n:5d}  error={e:.3e}" for n, e in zip(step_counts, errors, strict=True)]
    return "\n".join(rows)


class NoHostSync(TorchFunctionMode):
    """Raise on ``Tensor.item``, ``bool``/``float``/``int`` of a tensor and ``Tensor.tolist``
    inside the block.

    On the CPU nothing synchronises, so these calls (each a device-to-host transfer on a GPU) are
    what "no host sync" forbids. They dispatch through ``__torch_function__`` on the pinned torch
    (checked in ``tests/test_contract.py``).
    """

    FORBIDDEN = {
        torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist,
        torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
    }  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FORBIDDEN:
            raise RuntimeError(f"host sync: {func.__name__} called inside a sampler step")
        return func(*args, **(kwargs or {}))


def gmm_2d() -> GaussianMixture:
    """The standard 2-D exact problem: 3 unequal components, unequal weights."""
    means = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [-0.5, -1.5]], dtype=torch.float64)
    return GaussianMixture(means, stds=torch.tensor([0.5, 0.7, 0.6]), weights=[0.5, 0.3, 0.2])
