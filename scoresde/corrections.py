"""Corrections of a model's ``x0`` prediction: clipping and dynamic thresholding.

A :class:`~scoresde.Denoiser` given ``x0_correction=`` applies it to every ``x0`` prediction and
derives ``eps`` from the corrected ``x0``, so every sampler samples the corrected model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .utils import check_real

__all__ = ["X0Correction", "ClipX0", "DynamicThreshold"]


class X0Correction:
    """A map applied to the model's ``x0`` prediction before any sampler sees it.

    The :class:`~scoresde.Denoiser` corrects ``x0`` and then derives ``eps = (x - alpha x0) / sigma`` from
    the corrected ``x0``, so the pair stays consistent and every sampler (whether it steps with
    ``eps`` or with ``x0``) integrates the same corrected model.
    """

    def __call__(self, x0: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ClipX0(X0Correction):
    """Clip ``x0`` to ``[-range, range]`` (diffusers' ``clip_sample`` with ``clip_sample_range``).

    Args:
        range: half-width of the data range; 1 for images scaled to ``[-1, 1]``.
    """

    def __init__(self, range: float = 1.0):  # noqa: A002 - diffusers' clip_sample_range
        self.range = check_real("range", range, low=0.0, low_open=True)

    def __call__(self, x0):
        return x0.clamp(-self.range, self.range)


class DynamicThreshold(X0Correction):
    """Dynamic thresholding (Saharia et al. 2022, Imagen, Sec. 2.3; diffusers' ``thresholding``).

    Per sample, ``s`` is the ``ratio`` quantile of ``|x0|`` over all non-batch entries, clamped to
    ``[1, max_value]``; ``x0`` is clipped to ``[-s, s]`` and divided by ``s``. With ``s`` clamped
    to 1 this is clipping to ``[-1, 1]``: the data range is taken to be ``[-1, 1]`` (pixel
    models); ``max_value`` bounds how far saturated predictions are pulled in.

    Args:
        ratio: quantile in ``(0, 1]`` (diffusers' ``dynamic_thresholding_ratio``, 0.995).
        max_value: upper clamp of ``s``, ``> 0`` (diffusers' ``sample_max_value``, 1.0).
    """

    def __init__(self, ratio: float = 0.995, max_value: float = 1.0):
        self.ratio = check_real("ratio", ratio, low=0.0, high=1.0, low_open=True)
        self.max_value = check_real("max_value", max_value, low=0.0, low_open=True)

    def __call__(self, x0):
        flat = x0.reshape(x0.shape[0], -1)
        # the quantile needs float32/64 (diffusers upcasts the same way)
        work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
        s = torch.quantile(work.abs(), self.ratio, dim=1, keepdim=True)
        # clamp(min=1, max=max_value) in that order, as diffusers: max_value < 1 wins
        s = s.clamp(min=1.0).clamp(max=self.max_value)
        return (torch.maximum(torch.minimum(work, s), -s) / s).to(x0.dtype).reshape(x0.shape)
