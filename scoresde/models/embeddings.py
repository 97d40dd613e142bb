"""Time embeddings: what a score network sees of its (scalar, per-sample) time input.

Both map ``t_in`` of shape ``(batch,)`` to ``(batch, dim)`` features of sines and cosines.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..utils import check_int, check_real

__all__ = ["GaussianFourierEmbedding", "SinusoidalEmbedding"]


class GaussianFourierEmbedding(nn.Module):
    r"""Random Fourier features ``[sin(2 pi W t), cos(2 pi W t)]`` with fixed ``W ~ N(0, scale^2)``.

    (Tancik et al. 2020; used for the time input of NCSN++, Song et al. 2021, App. H.) ``W`` is a
    buffer: it is drawn once from ``seed`` and travels with the ``state_dict``, so a checkpoint
    rebuilds the same features.

    Args:
        dim: output features (even).
        scale: standard deviation of the frequencies; 16 suits inputs of order 1
            (``t in [0, 1]`` or EDM's ``log(sigma)/4``).
        seed: seed of the frequencies.
    """

    def __init__(self, dim: int, *, scale: float = 16.0, seed: int = 0):
        super().__init__()
        dim = check_int("dim", dim, low=2)
        if dim % 2:
            raise ValueError(f"dim must be even; got {dim}")
        scale = check_real("scale", scale, low=0.0, low_open=True)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, t: Tensor) -> Tensor:
        # float32 or better: in float16, 2 pi W t reaches 1e5 and overflows (and rounds t)
        work = torch.promote_types(self.W.dtype, torch.float32)
        proj = 2 * math.pi * t.to(work)[:, None] * self.W.to(work)
        return torch.cat([proj.sin(), proj.cos()], dim=-1).to(self.W.dtype)


class SinusoidalEmbedding(nn.Module):
    r"""Transformer positional encoding of ``scale * t`` with geometric frequencies
    ``max_period^(-k / (dim/2))`` (Vaswani et al. 2017; DDPM's timestep embedding, Ho et al. 2020).

    Args:
        dim: output features (even).
        scale: multiplies ``t`` first, so that inputs in ``[0, 1]`` span the range DDPM's integer
            steps did (``scale=1000``); use 1 for DDPM train indices.
        max_period: the longest period.
    """

    def __init__(self, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        dim = check_int("dim", dim, low=2)
        if dim % 2:
            raise ValueError(f"dim must be even; got {dim}")
        self.scale = check_real("scale", scale, low=0.0, low_open=True)
        max_period = check_real("max_period", max_period, low=1.0, low_open=True)
        k = torch.arange(dim // 2, dtype=torch.float32)
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * k / (dim // 2)))

    def forward(self, t: Tensor) -> Tensor:
        # float32 or better: scale * t reaches 1000, where float16 steps by 0.5
        work = torch.promote_types(self.freqs.dtype, torch.float32)
        proj = self.scale * t.to(work)[:, None] * self.freqs.to(work)
        return torch.cat([proj.sin(), proj.cos()], dim=-1).to(self.freqs.dtype)


def make_embedding(kind: str, dim: int, scale: float) -> nn.Module:
    """``"fourier"`` or ``"sinusoidal"``, the strings the model configs store."""
    if kind == "fourier":
        return GaussianFourierEmbedding(dim, scale=scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, scale=scale)
    raise ValueError(f"embedding must be 'fourier' or 'sinusoidal'; got {kind!r}")
