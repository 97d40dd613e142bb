"""Score networks: every one is called as ``net(x, t_in)`` (the :class:`~scoresde.Denoiser`
convention) and carries a ``config`` dict from which :func:`build_model` rebuilds it."""

from __future__ import annotations

from torch import nn

from .embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from .mlp import ScoreMLP
from .unet import UNet

__all__ = [
    "ScoreMLP",
    "UNet",
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "MODELS",
    "build_model",
]

MODELS: dict[str, type[nn.Module]] = {"mlp": ScoreMLP, "unet": UNet}


def build_model(config: dict) -> nn.Module:
    """The network that ``config`` (a model's ``.config``) describes, freshly initialised."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model config 'name' must be one of {sorted(MODELS)}; got {name!r}")
    try:
        return MODELS[name](**config)
    except TypeError as err:
        raise ValueError(f"bad {name!r} model config {config!r}: {err}") from None
